"""Textbook and exercises (Phi-1) end to end on the default model: 1 topic x 2 audiences,
one exercise each, short outputs. Every check acts on a planted case (the exercise checks
on exercises given in the recipe, the judge's min_score on a second build whose threshold
splits the first build's scores); every row carries its topic, audience and kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SEEDS, published, tiny_recipe_dict

pytestmark = pytest.mark.engine

AUDIENCES = ["a ten-year-old child", "an adult learning math again"]
GOOD = "A recipe needs 3/4 cup of sugar. How much sugar is needed to make half of the recipe?"


def recipe_data(out: Path, min_score: int) -> dict:
    data = tiny_recipe_dict(str(SEEDS), str(out))
    data["flow"] = "textbook"
    data["sampling"]["max_tokens"] = 48
    data["judge"]["min_score"] = min_score
    # one token per judgement, and an expected score: a graded scale where the small judge's
    # free-text scores are all 10
    data["judge"]["method"] = "logprob"
    # the small teacher loops on GOOD ("measure out 1/4 cup of sugar" twice), which the repetition
    # guard rejects before dedup sees the duplicate this test is about; the guards have their own tests
    data["guards"] = {"repetition": {"enabled": False}}
    given = [("Add.", "length"), ("...", "empty"), (GOOD, None), (GOOD, "exact_duplicate")]
    data["textbook"] = {"topics": ["adding and halving fractions"], "audiences": AUDIENCES, "exercises_per_section": 1,
                        "max_tokens": 128, "extra_exercises": [{"topic": "fractions", "audience": AUDIENCES[0], "exercise": e}
                                                              for e, _ in given]}
    return data


def test_textbook_writes_sections_and_exercises_judged_for_educational_value(prefect_api, tmp_path):
    from distillery.recipes.textbook import EDUCATIONAL_RUBRIC, TextbookRecipe
    from flows.textbook import textbook

    result = textbook(TextbookRecipe.model_validate(recipe_data(tmp_path / "a", min_score=1)))
    manifest, kept, rejected = published(tmp_path / "a")
    s = result["summary"]
    syn = s["synthesis"]
    assert manifest["recipe"]["judge"]["rubric"] == EDUCATIONAL_RUBRIC  # the Phi-1 filter is the default rubric

    # round 0: the exercises given in the recipe; each check fired on its case
    assert syn["rounds"][0] == {"round": 0, "proposed": 4, "kept": 2, "rejected_by_reason": {"empty": 1, "length": 1}}
    by_reason = {r["reason"]: r for r in rejected}
    assert by_reason["length"]["prompt"] == "Add." and by_reason["empty"]["prompt"] == "..."
    # the duplicate given exercise was answered, then removed by dedup (same prompt)
    assert by_reason["exact_duplicate"]["seed_id"] in ("textbook-given-2", "textbook-given-3")
    # round 1: one request per topic x audience, each exercise the teacher wrote accounted for
    round1 = syn["rounds"][1]
    assert round1["proposed"] >= 2 and syn["pairs"] == 2 and syn["sections"] == 2
    assert set(round1["rejected_by_reason"]) <= {"empty", "length", "truncated", "over_count", "no_exercises"}
    assert s["rows_in"] == syn["sections"] + sum(r["proposed"] for r in syn["rounds"])
    assert s["rows_in"] == s["kept"] + s["rejected"]

    # lineage on every row: topic, audience, kind
    rows = [*kept, *rejected]
    for row in rows:
        lineage = json.loads(row["lineage"])
        assert lineage["recipe"] == "textbook" and lineage["kind"] in ("section", "exercise")
        assert lineage["audience"] in AUDIENCES and lineage["topic"] in ("adding and halving fractions", "fractions")
    sections = [json.loads(r["lineage"]) for r in rows if json.loads(r["lineage"])["kind"] == "section"]
    assert sorted(x["audience"] for x in sections) == sorted(AUDIENCES)
    assert all(r["judge_score"] is not None and r["judge_model"] for r in kept)
    assert {json.loads(r["lineage"])["kind"] for r in kept} == {"section", "exercise"}

    # the educational-value filter: a second build whose min_score splits the first build's scores
    # (same teacher answers, from the cache; the judge is greedy)
    scores = {r["id"]: r["judge_score"] for r in kept}
    top = max(scores.values())
    threshold = top if len(set(scores.values())) > 1 else top + 1  # split them, else reject them all
    assert threshold <= 10, f"the judge gave every row 10 ({scores}): no threshold can filter"
    textbook(TextbookRecipe.model_validate(recipe_data(tmp_path / "b", min_score=threshold)))
    _, kept_b, rejected_b = published(tmp_path / "b")
    low = {r["id"]: r for r in rejected_b if r["reason"] == "low_score"}
    assert low, f"min_score {threshold} should reject rows scored {sorted(scores.values())}"
    assert set(low) == {i for i, v in scores.items() if v < threshold}
    assert {r["id"] for r in kept_b} == {i for i, v in scores.items() if v >= threshold}
    assert all(json.loads(r["lineage"])["kind"] in ("section", "exercise") for r in low.values())
