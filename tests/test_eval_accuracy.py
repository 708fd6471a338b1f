"""Verifiable accuracy's pure parts: reading task rows (string or chat prompts, every bad row a
reject with its reason), pass@1 per verifier and model, the before/after change, the report."""

from __future__ import annotations

import json

from distillery.evals.accuracy import accuracy_change, accuracy_markdown, accuracy_summary, task_rows, with_system

from conftest import ROOT


def test_task_rows_reads_the_example_file_and_rejects_its_bad_rows():
    records = [json.loads(line) for line in (ROOT / "data" / "verifiable_tasks.jsonl").read_text().splitlines() if line.strip()]
    rows, rejects = task_rows(records, "prompt", "ground_truth", "verifier", "id")
    assert len(rows) + len(rejects) == len(records) == 33
    assert {r["id"]: r["reason"] for r in rejects} == {"bad-unknown-verifier": "unknown_verifier", "bad-gsm8k-words": "bad_ground_truth",
                                                      "bad-ifeval-json": "bad_ground_truth"}
    assert all(r["detail"] and r["raw"] for r in rejects)
    assert all(r["messages"] == [{"role": "user", "content": rec["prompt"]}] for r, rec in zip(rows, records))


def test_task_rows_take_chat_prompts_and_refuse_empty_or_shapeless_ones():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    records = [{"messages": chat, "ground_truth": "4", "dataset": "gsm8k"},
               {"messages": "", "ground_truth": "4", "dataset": "gsm8k"},
               {"messages": [{"content": "no role"}], "ground_truth": "4", "dataset": "gsm8k"},
               {"ground_truth": "4", "dataset": "gsm8k"}]
    rows, rejects = task_rows(records, "messages", "ground_truth", "dataset", None)
    assert [r["id"] for r in rows] == ["row-1"] and rows[0]["messages"] == chat
    assert [(r["id"], r["reason"]) for r in rejects] == [("row-2", "empty_prompt"), ("row-3", "empty_prompt"), ("row-4", "empty_prompt")]
    assert with_system(chat, "Other.") == chat  # a prompt's own system message stays
    assert with_system(chat[1:], "Other.")[0] == {"role": "system", "content": "Other."}


def test_pass_at_1_per_verifier_and_the_change():
    results = [{"model": m, "verifier": v, "passed": p} for m, v, p in [
        ("a", "gsm8k", True), ("a", "gsm8k", False), ("a", "math", False), ("a", "math", None),
        ("b", "gsm8k", True), ("b", "gsm8k", True), ("b", "math", True), ("b", "math", False)]]
    s = accuracy_summary(results)
    assert s["a"]["verifiers"]["gsm8k"] == {"n": 2, "answered": 2, "passed": 1, "pass_at_1": 0.5}
    assert s["a"]["verifiers"]["math"] == {"n": 2, "answered": 1, "passed": 0, "pass_at_1": 0.0}  # not answered counts as a fail
    assert s["b"]["overall"] == {"n": 4, "answered": 4, "passed": 3, "pass_at_1": 0.75}
    change = accuracy_change(s, "a")
    assert change == {"b": {"gsm8k": {"before": 0.5, "after": 1.0, "change": 0.5}, "math": {"before": 0.0, "after": 0.5, "change": 0.5},
                            "overall": {"before": 0.25, "after": 0.75, "change": 0.5}}}
    text = accuracy_markdown(s, 2, change)
    assert "| a | 50.0% (1/2) | 0.0% (0/2) | 25.0% (1/4) |" in text and "2 rows rejected" in text and "overall +50.0%" in text
