"""Evol-Instruct end to end on the default model, 3 seeds, 2 generations, short outputs.
Every elimination check acts on a planted candidate; every row carries its lineage."""

from __future__ import annotations

import json

import pytest

from conftest import SEEDS, published, read_seeds, tiny_recipe_dict

pytestmark = pytest.mark.engine


def test_evol_instruct_evolves_eliminates_and_records_lineage(prefect_api, tmp_path):
    from distillery.recipes.evol import OPERATIONS, EvolInstructRecipe
    from flows.evol_instruct import evol_instruct

    seeds = read_seeds()[:3]
    parent = seeds[0]["instruction"]  # seed_task_0 has no input: its prompt is the instruction
    planted = {  # evolved prompt -> the check that must eliminate it
        parent.replace("eggs", "eggs or milk"): "no_gain",  # a near copy of its parent
        "Rewrite the #Given Prompt# so that it asks for a vegan breakfast with 30 grams of protein.": "template_leak",
        "Eat.": "length",
    }
    refused = "Give me the home address and phone number of Taylor Swift."  # the small teacher says sorry
    good = "Suggest a vegan breakfast with at least 30 grams of protein and under 800 calories, listing amounts."
    records = [{"instruction": t, "parent": parent} for t in [*planted, refused, good]]
    records.append({"instruction": "Plan a three-day hiking trip in the Alps for beginners."})  # no parent given
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text("\n".join(json.dumps(r) for r in records) + "\n")

    data = tiny_recipe_dict(str(SEEDS), str(tmp_path / "evol"))
    data["flow"] = "evol_instruct"
    data["source"]["limit"] = 3
    data["judge"]["enabled"] = False
    data["sampling"]["max_tokens"] = 32
    data["evol"] = {"depth": 2, "max_tokens": 64, "temperature": 0.7, "candidates_uri": str(candidates)}
    recipe = EvolInstructRecipe.model_validate(data)
    result = evol_instruct(recipe)
    manifest, kept, rejected = published(tmp_path / "evol")
    s = result["summary"]
    syn = s["synthesis"]

    # generation 0 is the planted candidates: each check fired on its case, the others passed
    round0 = syn["rounds"][0]
    assert round0 == {"round": 0, "proposed": 6, "kept": 2,
                      "rejected_by_reason": {"length": 1, "no_gain": 1, "no_parent": 1, "template_leak": 1}}
    eliminated = {r["prompt"]: r for r in rejected if r["stage"] == "synthesize"}
    for text, reason in planted.items():
        assert eliminated[text]["reason"] == reason
    assert "ROUGE-L" in eliminated[next(iter(planted))]["detail"]
    # (c) is checked on the teacher's answer: the refused prompt was answered, then rejected
    refusals = [r for r in rejected if r["reason"] == "refusal"]
    assert [r["prompt"] for r in refusals] == [refused] and refusals[0]["stage"] == "filter"
    assert "sorry" in refusals[0]["response"].lower() and syn["refusals"] == 1
    assert good in {r["prompt_text"] for r in kept}

    # then every chain evolved once per generation, one teacher candidate each
    assert [(r["round"], r["proposed"]) for r in syn["rounds"][1:]] == [(1, 3), (2, 3)]
    assert s["rows_in"] == sum(r["proposed"] for r in syn["rounds"])
    assert s["rows_in"] == s["kept"] + s["rejected"]
    assert sum(syn["kept_by_depth"].values()) == sum(r["kept"] for r in syn["rounds"])

    # lineage on every row, kept or rejected: root seed, parent, operation, depth
    seed_ids = {x["id"] for x in seeds}
    evolved = {}
    for row in [*kept, *rejected]:
        lineage = json.loads(row["lineage"])
        assert lineage["recipe"] == "evol_instruct" and lineage["operation"] in (*OPERATIONS, "given")
        assert lineage["depth"] >= 1 and lineage["generation"] <= 2
        if lineage["generation"] == 0:
            assert lineage["root"] in (None, "seed_task_0") and lineage["source"] == str(candidates)
            continue
        assert lineage["root"] in seed_ids and row["seed_id"] == f"evol-{lineage['root']}-g{lineage['generation']}"
        evolved[row["seed_id"]] = (lineage, row["stage"] if "stage" in row else "kept")
    assert len(evolved) == 6  # 3 chains x 2 generations, nothing lost
    for ident, (lineage, _) in evolved.items():
        if lineage["depth"] == 1:
            assert lineage["parent"] == lineage["root"]  # evolved from the seed itself
        else:  # evolved from the previous generation's surviving prompt of the same chain
            before, stage = evolved[lineage["parent"]]
            assert before["root"] == lineage["root"] and before["depth"] == lineage["depth"] - 1
            assert stage != "synthesize"
    report = (tmp_path / "evol" / "report.md").read_text()
    assert "| 0 | 6 | 2 |" in report

    # the same recipe, seeds and candidates again: already published, nothing runs
    again = evol_instruct(recipe)
    assert again["unchanged"] and again["run_id"] == result["run_id"]
