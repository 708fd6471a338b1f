"""What the synthesis recipes share: the round checker, and staging what they made as the
first stage of a staged build. No engine."""

from __future__ import annotations

import json

import pytest

from conftest import SEEDS
from distillery.adapters.storage import open_dataset
from distillery.recipe import Recipe
from distillery.recipes.rounds import Rounds, Verdict
from distillery.recipes.self_instruct import basic_filter
from distillery.stages.executor import read_rows, totals
from distillery.stages.prompts import SEED_SCHEMA
from distillery.stages.synthesis import Refusals


def seed_tasks() -> list[dict]:
    return [json.loads(line) for line in SEEDS.read_text().splitlines()]


def test_every_candidate_ends_kept_or_rejected_and_each_round_is_counted():
    rounds = Rounds()
    tasks = seed_tasks()

    def check(number):
        return lambda t: basic_filter(t["instruction"], 3 + number * 5, 150)

    for number, batch in enumerate((tasks[:100], tasks[100:])):
        flags = rounds.check(number, batch, check(number),
                             kept=lambda t, v: {"seed_id": t["id"], "instruction": t["instruction"]},
                             rejected=lambda t, v: {"seed_id": t["id"], "prompt": t["instruction"]}, source="seed file")
        assert len(flags) == len(batch)
    assert len(rounds.kept) + len(rounds.rejected) == len(tasks) == 175
    assert [r["round"] for r in rounds.rounds] == [0, 1] and all(r["source"] == "seed file" for r in rounds.rounds)
    assert sum(r["proposed"] for r in rounds.rounds) == 175
    assert sum(r["kept"] for r in rounds.rounds) == len(rounds.kept)
    # round 1 asks for 8+ words: the real seed tasks shorter than that are rejected, with their reason and count
    short = [t for t in tasks[100:] if len(t["instruction"].split()) < 8]
    assert short and rounds.rounds[1]["rejected_by_reason"].get("length") == len(short)
    assert all(r["stage"] == "synthesize" and r["reason"] and r["detail"] for r in rounds.rejected)


def test_a_verdict_can_depend_on_what_was_kept_so_far():
    rounds = Rounds()
    target = 3
    rounds.check(1, seed_tasks()[:10], lambda t: Verdict(False, "over_target", "full") if len(rounds.kept) >= target else Verdict(True),
                 kept=lambda t, v: {"seed_id": t["id"], "n": len(rounds.kept)}, rejected=lambda t, v: {"seed_id": t["id"]})
    assert [r["n"] for r in rounds.kept] == [0, 1, 2]
    assert rounds.rounds[0]["rejected_by_reason"] == {"over_target": 7}


def test_refusals_stage_rejects_short_apologies_at_stage_filter():
    rows = [{"seed_id": "a", "response": "I'm sorry, but I cannot help with that."},
            {"seed_id": "b", "response": "Here is a poem about the sea: waves fold into waves."},
            {"seed_id": "c", "response": "Sorry for the long wait. " + "word " * 120}]
    out = Refusals(80, SEED_SCHEMA).run(rows, 0)
    assert [r["seed_id"] for r in out.rows] == ["b", "c"]
    assert [(r["seed_id"], r["stage"], r["reason"]) for r in out.rejected] == [("a", "filter", "refusal")]


def stages_for(tmp_path, recipe: Recipe):
    from flows.build import Build
    from flows.staged import Stages, staging_root
    from datetime import datetime, timezone

    store = open_dataset(str(tmp_path))
    return Stages(store, staging_root(recipe), Build("run", datetime.now(timezone.utc), key="build-key"))


def test_synthesized_rows_are_staged_as_shards_with_their_rejects(tmp_path):
    from flows.staged import _stage_synthesized

    recipe = Recipe.model_validate({"output": {"uri": str(tmp_path), "stage_rows": 40}})
    seeds = [{"seed_id": t["id"], "instruction": t["instruction"], "input": "", "lineage": "{}"} for t in seed_tasks()]
    rejected = [{"seed_id": "bad-line", "stage": "load", "reason": "malformed_json", "detail": "line 3"},
                {"seed_id": "r1-0", "stage": "synthesize", "reason": "length", "detail": "2 words", "prompt": "Say hi"}]
    run = stages_for(tmp_path, recipe)
    records = _stage_synthesized(run, recipe, seeds, rejected, SEED_SCHEMA)
    assert [r.rows_out for r in records] == [40, 40, 40, 40, 15]
    assert totals(records)["rejected_by_reason"] == {"length": 1}
    assert totals(run.records["load"])["rejected_by_reason"] == {"malformed_json": 1}
    assert [r["seed_id"] for r in read_rows(run.store, [r.files[0] for r in records])] == [s["seed_id"] for s in seeds]
    assert (run.ran["load"], run.ran["synthesize"]) == (1, 5)
    # the same rows again: nothing rewritten; other rows: every shard rewritten
    again = stages_for(tmp_path, recipe)
    _stage_synthesized(again, recipe, seeds, rejected, SEED_SCHEMA)
    assert (again.ran["load"], again.ran["synthesize"]) == (0, 0)
    other = stages_for(tmp_path, recipe)
    _stage_synthesized(other, recipe, seeds[1:], rejected, SEED_SCHEMA)
    assert other.ran["synthesize"] == 5 and sum(r.rows_out for r in other.records["synthesize"]) == 174
    with pytest.raises(ValueError, match="stage 'load' or 'synthesize', not \\['judge'\\]"):
        _stage_synthesized(stages_for(tmp_path, recipe), recipe, seeds, [{**rejected[0], "stage": "judge"}], SEED_SCHEMA)
