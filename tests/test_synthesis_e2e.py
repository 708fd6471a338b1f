"""Prompt-synthesis recipes end to end on the default model, small inputs, short outputs.
Each filter must act on a planted case, and every row must carry its lineage."""

from __future__ import annotations

import json

import pytest

from distillery.recipe import build_recipe
from conftest import SEEDS, published, read_seeds, tiny_recipe_dict

pytestmark = pytest.mark.engine


def test_self_instruct_bootstraps_filters_and_records_lineage(prefect_api, tmp_path):
    from flows.self_instruct import self_instruct

    seeds = read_seeds()
    planted = {
        "blacklisted": "Draw a picture of a cat sitting on a mat.",
        "not_novel": seeds[0]["instruction"].replace("breakfast", "morning breakfast"),  # a near-copy of a seed
        "length": "Explain.",
    }
    good = ["List three everyday uses of baking soda in the kitchen.", "Summarize why regular sleep matters for students."]
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text("\n".join(json.dumps({"instruction": t}) for t in [*planted.values(), *good]) + "\n")

    data = tiny_recipe_dict(str(SEEDS), str(tmp_path / "si"))
    data["flow"] = "self_instruct"
    data["source"]["limit"] = 24
    data["judge"]["enabled"] = False
    data["sampling"]["max_tokens"] = 32
    data["self_instruct"] = {"target": 5, "max_rounds": 2, "requests_per_round": 3, "max_tokens": 96,
                             "candidates_uri": str(candidates)}
    result = self_instruct(build_recipe(data))
    manifest, kept, rejected = published(tmp_path / "si")
    s = result["summary"]

    # round 0 is the planted candidates: each filter fired on its case, the good ones passed
    round0 = s["synthesis"]["rounds"][0]
    assert round0["round"] == 0 and round0["proposed"] == 5 and round0["kept"] == 2
    assert round0["rejected_by_reason"] == {"blacklisted": 1, "length": 1, "not_novel": 1}
    by_text = {r["prompt"]: r for r in rejected if r["stage"] == "synthesize"}
    for reason, text in planted.items():
        assert by_text[text]["reason"] == reason
    assert "ROUGE-L" in by_text[planted["not_novel"]]["detail"] and "seed_task_0" in by_text[planted["not_novel"]]["detail"]

    # the teacher proposed more in later rounds until the target or the round limit
    teacher_rounds = s["synthesis"]["rounds"][1:]
    assert teacher_rounds and all(r["proposed"] >= 1 for r in teacher_rounds)
    assert s["rows_in"] == sum(r["proposed"] for r in s["synthesis"]["rounds"])
    assert s["rows_in"] == s["kept"] + s["rejected"]

    # lineage on every row, kept or rejected
    for row in [*kept, *(r for r in rejected if r["stage"] == "synthesize")]:
        lineage = json.loads(row["lineage"])
        assert lineage["recipe"] == "self_instruct" and isinstance(lineage["round"], int)
        if lineage["round"] > 0:
            assert len(lineage["in_context"]) == 8
            assert sum(i.startswith("seed_task_") for i in lineage["in_context"]) >= 6
    assert {r["prompt"] for r in kept} & set(good)  # the good planted candidates were answered

    div = s["diversity"]
    assert 0 < div["distinct_1"] <= 1 and 0 < div["distinct_2"] <= 1
    assert div["near_seed_share"] is not None and 0 <= div["mean_pairwise_similarity"] <= 1
    report = (tmp_path / "si" / "report.md").read_text()
    assert "Diversity" in report and "| 0 | 5 | 2 |" in report
