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
