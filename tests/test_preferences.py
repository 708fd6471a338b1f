"""Preference pairs from judged completions, without an engine: the pair's prompt is the
conversation the answers were generated from, the teacher's system message included."""

from __future__ import annotations

from datetime import datetime, timezone

from distillery.preferences import candidate_pairs, confirm_pairs, preference_rows
from distillery.prompts import render_messages
from distillery.schema import PREFERENCE_SCHEMA, to_table

from conftest import read_seeds

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
SYSTEM = "You are a helpful, honest assistant. Answer the user's request directly and accurately."


def completions(system: str | None) -> list[dict]:
    """Two answers per seed (the seed's own and a worse one), as generation leaves them, with scores."""
    seeds = [{"seed_id": r["id"], "instruction": r["instruction"], "input": r["instances"][0]["input"],
              "output": r["instances"][0]["output"]} for r in read_seeds()[:4]]
    rows = []
    for seed in render_messages(seeds, system):
        for i, (answer, score) in enumerate([(seed["output"], 9), ("I don't know.", 2)]):
            rows.append({**seed, "id": f"{seed['seed_id']}-{i}", "response": answer, "judge_score": score,
                         "teacher": "t", "messages": [*seed["messages"], {"role": "assistant", "content": answer}]})
    return rows


def pairs_of(rows: list[dict]) -> list[dict]:
    pairs, excluded = candidate_pairs(rows, list(dict.fromkeys(r["seed_id"] for r in rows)), min_margin=1)
    assert excluded == []
    kept, _ = confirm_pairs(pairs, None)
    return preference_rows(kept, "judge", "run", NOW)


def test_pair_prompt_starts_with_the_teachers_system_message():
    rows = completions(SYSTEM)
    pairs = pairs_of(rows)
    assert len(pairs) == 4
    by_seed = {r["seed_id"]: r for r in rows if r["judge_score"] == 9}
    for pair in pairs:
        source = by_seed[pair["seed_id"]]
        assert pair["prompt"][0] == {"role": "system", "content": SYSTEM}
        assert pair["prompt"] == source["messages"][:-1]  # system, then the user turn exactly as generated from
        assert pair["prompt"][-1] == {"role": "user", "content": source["prompt"]}
        assert pair["chosen"] == [{"role": "assistant", "content": source["response"]}]
        assert pair["rejected"] == [{"role": "assistant", "content": "I don't know."}]
    assert to_table(pairs, PREFERENCE_SCHEMA).column("prompt").to_pylist() == [p["prompt"] for p in pairs]


def test_pair_prompt_without_a_system_message_is_the_user_turn_alone():
    with_system, without = pairs_of(completions(SYSTEM)), pairs_of(completions(None))
    for pair in without:
        assert [m["role"] for m in pair["prompt"]] == ["user"]
    # the system message is part of what the pair is: its id changes with it
    assert {p["id"] for p in with_system}.isdisjoint(p["id"] for p in without)


class PairwiseStandIn:
    """A test double for the judge's engine: prefers whichever response is not "I don't know."."""

    def __init__(self):
        self.asked = 0

    def count_prompt_tokens(self, conversations):
        return [len(c[-1]["content"].split()) for c in conversations]

    def chat(self, conversations, params, **extra):
        self.asked += len(conversations)
        out = []
        for c in conversations:
            text = c[-1]["content"]
            first = text[:text.index("RESPONSE B")]  # the instruction and response A
            out.append([{"response": "B" if "I don't know." in first else "A"}])
        return out


def test_pairs_stage_accounts_for_every_prompt_and_stages_like_any_other(tmp_path):
    from distillery.adapters.storage import open_dataset
    from distillery.stages.executor import run_shard
    from distillery.stages.preferences import Pairs
    from distillery.stages.prompts import PROMPT_SCHEMA
    from distillery.stages.staged import encode, nullable
    from distillery.stages.contract import StagedFile

    rows = completions(SYSTEM)
    prompts = [{k: r[k] for k in ("seed_id", "instruction", "input", "prompt", "messages")} for r in rows[::2]]
    prompts.append({**prompts[0], "seed_id": "unanswered"})  # every completion of it deduped away
    rows += [{**rows[0], "id": "tie-a", "seed_id": "tied", "judge_score": 5}, {**rows[1], "id": "tie-b", "seed_id": "tied", "judge_score": 5}]
    prompts.append({**prompts[0], "seed_id": "tied"})
    store = open_dataset(str(tmp_path))
    data, sha = encode(prompts, PROMPT_SCHEMA)
    store.write("in/part-00000.parquet", data)
    engine = PairwiseStandIn()
    stage = Pairs(1.0, True, "rubric", "judge", 8, 2048, nullable(PREFERENCE_SCHEMA), completions=lambda shard: rows,
                  open_engine=lambda: engine)
    record, ran = run_shard(store, "_temporary/t", stage, 0, [StagedFile("in/part-00000.parquet", sha, len(data), len(prompts))])
    assert ran and record.rows_in == 6 and record.rows_out == 4 and record.rejected == 2
    assert dict(record.rejected_by_reason) == {"score_tie": 1, "too_few_completions": 1}
    assert dict(record.facts)["pairwise_x"] == 4 and engine.asked == 8  # both orders of every pair
