"""The guard stage in a real build: the default teacher asked who it is (it answers that it
is SmolLM, trained by Hugging Face: a leak for any student), training prompts that copy
an evaluation set's items, and real seed tasks beside them. The default teacher only knows
its name when its system message tells it (as it did in its tuning), so the build says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import published, tiny_recipe_dict

pytestmark = pytest.mark.engine

IDENTITY_QUESTIONS = [
    "Who are you?", "What is your name?", "Who created you?", "Who trained you?", "Introduce yourself in one sentence.",
    "Tell me about yourself.", "What AI model are you?", "Which company developed you?",
    "Are you a person or a program? Who made you?", "What should I call you?",
    "Say your name and the name of the company that trained you.", "Hi! Please introduce yourself: your name and your maker.",
]
# An evaluation set of word problems (GSM8K-style, written for this test) and training prompts that copy three of them.
EVAL_ITEMS = {
    "wp-1": "A baker makes 48 muffins in the morning and sells three quarters of them before noon. In the afternoon she bakes "
            "another 24 muffins and sells half of everything she has left. How many muffins does she have at closing time?",
    "wp-2": "Tom reads 12 pages of his library book every weekday and twice as many pages on each day of the weekend. The book "
            "has 360 pages and he started on a Monday. On which day of the week will he finish reading the whole book?",
    "wp-3": "A train leaves the station at 9:40 and travels at 80 kilometres per hour for the first two hours, then slows to 60 "
            "kilometres per hour for the remaining 150 kilometres of the journey. At what time does the train arrive?",
    "wp-4": "A school orders 17 boxes of pencils with 36 pencils in each box and shares them equally among its 9 classrooms, "
            "keeping whatever cannot be shared in the office. How many pencils does each classroom get, and how many stay?",
}


def _tenth_word_changed(text: str) -> str:
    words = text.split()
    return " ".join("banana" if i % 10 == 9 else w for i, w in enumerate(words))


def _first(text: str, share: float) -> str:
    words = text.split()
    return " ".join(words[: round(len(words) * share)])


PLANTED = {
    "copy-verbatim": ("wp-1", "Solve this step by step. " + EVAL_ITEMS["wp-1"]),
    "copy-tenth-word": ("wp-2", _tenth_word_changed(EVAL_ITEMS["wp-2"])),
    "copy-60-percent": ("wp-3", _first(EVAL_ITEMS["wp-3"], 0.6)),
}
REAL = 6


@pytest.fixture(scope="module")
def guarded(prefect_api, seed_records, tmp_path_factory):
    from distillery.recipe import build_recipe
    from flows.distill import distill

    root = tmp_path_factory.mktemp("guard")
    rows = [{"id": f"who-{i}", "instruction": q} for i, q in enumerate(IDENTITY_QUESTIONS)]
    rows += [{"id": k, "instruction": text} for k, (_, text) in PLANTED.items()]
    rows += [{"id": r["id"], "instruction": r["instruction"]} for r in seed_records[:REAL]]
    (root / "seeds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "eval.jsonl").write_text("".join(json.dumps({"qid": k, "question": v}) + "\n" for k, v in EVAL_ITEMS.items()))
    data = tiny_recipe_dict(str(root / "seeds.jsonl"), str(root / "ds"))
    data["source"] = {"uri": str(root / "seeds.jsonl"), "id_column": "id", "input_column": None}
    # The system message SmolLM2 was tuned with: a teacher that knows its own name, as most do.
    data["teacher"]["system_prompt"] = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    data["sampling"].update(max_tokens=40, n=3, temperature=0.8)  # three answers a question: more ways to say who it is
    data["judge"] = {"enabled": False}
    data["guards"] = {"decontam": {"eval_sets": [{"name": "wordprobs", "uri": str(root / "eval.jsonl"),
                                                  "column": "question", "id_column": "qid"}]}}
    result = distill(build_recipe(data))
    return result, published(root / "ds")


def test_no_kept_row_leaks_and_every_leak_is_rejected_with_its_reason(guarded):
    from distillery.guards.identity import DEFAULT_VENDORS, REJECT_REASONS, IdentityGuard

    result, (manifest, kept, rejected) = guarded
    guard = IdentityGuard(vendors=DEFAULT_VENDORS)
    leaks = [r for r in rejected if r["stage"] == "guard" and r["reason"] in REJECT_REASONS]
    # the default teacher names itself when asked who it is: several of the 36 answers are claims
    assert len(leaks) >= 3, [r["response"] for r in rejected if r["seed_id"].startswith("who-")]
    for r in leaks:
        hits = [h for h in guard.check(r["response"], r["prompt"]) if h.reason in REJECT_REASONS]
        assert hits and hits[0].reason == r["reason"] and hits[0].matched in r["detail"], r
    for row in kept:
        assert not [h for h in guard.check(row["response"], row["prompt_text"]) if h.reason in REJECT_REASONS], row
    by_teacher = result["summary"]["guards"]["rejected"]
    assert sum(sum(t.values()) for reason, t in by_teacher.items() if reason in REJECT_REASONS) == len(leaks)
    assert set().union(*[set(t) for t in by_teacher.values()]) == {"teacher"}


def test_copies_of_eval_items_are_rejected_with_the_item_and_nothing_else_is(guarded):
    result, (_, kept, rejected) = guarded
    contaminated = {r["seed_id"]: r["detail"] for r in rejected if r["reason"] == "contaminated"}
    assert set(contaminated) == set(PLANTED)
    for seed_id, (item, _) in PLANTED.items():
        assert contaminated[seed_id].startswith(f"wordprobs item {item}:"), contaminated[seed_id]
    overlap = result["summary"]["guards"]["eval_overlap"]["wordprobs"]
    assert overlap == {"items": 4, "contaminated": 3, "share": 0.75}
    assert any("wordprobs" in w and "3 of its 4 items" in w for w in result["summary"]["guards"]["warnings"])


def test_accounting_holds_and_the_report_shows_the_guards(guarded):
    result, (manifest, kept, rejected) = guarded
    s = result["summary"]
    rows_in = len(IDENTITY_QUESTIONS) + len(PLANTED) + REAL
    assert s["rows_in"] == rows_in and s["kept"] + s["rejected"] == len(kept) + len(rejected)
    assert s["generated"] == 3 * rows_in == s["kept"] + s["rejected_after_generation"]
    assert s["staged_shards"]["guard"]["shards"] >= 1
    flagged = {f for row in kept for f in (row["guard_flags"] or [])}
    assert flagged <= {"ai_boilerplate"}
    report = (Path(result["output"]) / "report.md").read_text()
    assert "Guards (stage `guard`" in report and "| contaminated | rejected | teacher | 9 |" in report
    assert "Collapse monitor" in report and s["collapse"]["metrics"]["rows"] == s["kept"]


def test_an_unreadable_collapse_history_is_reported_and_replaced(guarded, seed_records, tmp_path):
    from distillery.recipe import build_recipe
    from flows.distill import distill

    (tmp_path / "seeds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seed_records[10:14]))
    history = tmp_path / "history.jsonl"
    history.write_bytes(b'{"run_id": "a", "metrics": {"distinct_2": 0.5}}\n{torn half a line\n')
    data = tiny_recipe_dict(str(tmp_path / "seeds.jsonl"), str(tmp_path / "ds"))
    data["judge"] = {"enabled": False}
    data["guards"] = {"history_uri": str(history)}
    result = distill(build_recipe(data))
    collapse = result["summary"]["collapse"]
    assert "line 2" in collapse["history_problem"] and "replaced" in collapse["history_problem"]
    assert collapse["comparison"]["previous_run"] is None  # nothing trusted from the old file
    entries = [json.loads(line) for line in history.read_text().splitlines()]
    assert [e["run_id"] for e in entries] == [result["run_id"]] and entries[0]["metrics"]["rows"] == result["summary"]["kept"]
    assert "collapse history" in (tmp_path / "ds" / "report.md").read_text()
