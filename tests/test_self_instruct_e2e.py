"""Self-Instruct end to end on the default model, small inputs, short outputs.
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
    good = ["List three everyday uses of baking soda in the kitchen.", "Summarize why regular sleep matters for students.",
            "Translate the following English sentence into French."]
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
    assert round0["round"] == 0 and round0["proposed"] == 6 and round0["kept"] == 3
    assert round0["rejected_by_reason"] == {"blacklisted": 1, "length": 1, "not_novel": 1}
    by_text = {r["prompt"]: r for r in rejected if r["stage"] == "synthesize"}
    for reason, text in planted.items():
        assert by_text[text]["reason"] == reason
    assert "ROUGE-L" in by_text[planted["not_novel"]]["detail"] and "seed_task_0" in by_text[planted["not_novel"]]["detail"]

    # the teacher proposed more in later rounds until the target or the round limit
    teacher_rounds = s["synthesis"]["rounds"][1:]
    assert teacher_rounds and all(r["proposed"] >= 1 for r in teacher_rounds)
    assert s["rows_in"] == sum(r["proposed"] for r in s["synthesis"]["rounds"]) + s["synthesis"]["pool_rejects"]
    assert s["rows_in"] == s["kept"] + s["rejected"]
    # the engine's start is its own stage, not part of synthesis
    assert list(s["stage_seconds"])[:3] == ["load", "synthesize", "engine_start"]

    # lineage on every row, kept or rejected
    for row in [*kept, *(r for r in rejected if r["stage"] == "synthesize")]:
        lineage = json.loads(row["lineage"])
        assert lineage["recipe"] == "self_instruct" and isinstance(lineage["round"], int)
        if lineage["round"] > 0:
            assert len(lineage["in_context"]) == 8
            assert sum(i.startswith("seed_task_") for i in lineage["in_context"]) >= 6
    assert {r["instruction"] for r in kept} & set(good)  # the good planted candidates were answered

    # every new instruction got an input written by the teacher (or none), before it was answered
    inputs = s["synthesis"]["inputs"]
    proposed_kept = sum(r["kept"] for r in s["synthesis"]["rounds"])
    assert inputs["asked"] == proposed_kept
    # never past the target (a round's surplus is rejected unanswered); below it only when the rounds ran out
    assert proposed_kept == 5 or (proposed_kept < 5 and len(teacher_rounds) == 2)
    assert s["rejected_by_reason"].get("over_target", 0) == sum(r["rejected_by_reason"].get("over_target", 0) for r in teacher_rounds)
    assert inputs["with_input"] + inputs["no_input"] + sum(inputs["rejected_by_reason"].values()) == proposed_kept
    for row in kept:
        lineage = json.loads(row["lineage"])
        assert lineage["input"] == ("teacher" if row["input"] else "none")
        assert len(lineage["input_examples"]) == 6 and all(i.startswith("seed_task_") for i in lineage["input_examples"])
        assert row["prompt_text"] == (f"{row['instruction']}\n\n{row['input']}" if row["input"] else row["instruction"])
        assert "Task:" not in row["input"] and "Output:" not in row["input"]
    assert inputs["with_input"] >= 1

    div = s["diversity"]
    assert 0 < div["distinct_1"] <= 1 and 0 < div["distinct_2"] <= 1
    assert div["near_seed_share"] is not None and 0 <= div["mean_pairwise_similarity"] <= 1
    report = (tmp_path / "si" / "report.md").read_text()
    assert "Diversity" in report and "| 0 | 6 | 3 |" in report
    assert f"inputs: {proposed_kept} instructions asked, {inputs['with_input']} given an input" in report
