"""Prompt-synthesis recipes without an engine: templates, parsers, filters, recipe models.
Evol-Instruct tests are named test_evol_*, textbook tests test_textbook_*."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[1]


# ---- Evol-Instruct ----

def test_evol_templates_name_their_method_and_end_at_the_answer_slot():
    from distillery.recipes.evol import IN_DEPTH, METHODS, evolution_messages, evolution_prompt

    for op in IN_DEPTH:
        text = evolution_prompt(op, "List three fruits.")
        assert METHODS[op] in text and "#The Given Prompt#:\nList three fruits.\n" in text
        assert text.endswith("#Rewritten Prompt#:\n")
    breadth = evolution_prompt("breadth", "List three fruits.")
    assert "brand new prompt" in breadth and "even more rare" in breadth and breadth.endswith("#Created Prompt#:\n")
    assert evolution_messages("deepen", "x") == [{"role": "user", "content": evolution_prompt("deepen", "x")}]
    with pytest.raises(ValueError, match="unknown evolution operation"):
        evolution_prompt("shorten", "x")


def test_evol_operation_choice_respects_the_breadth_share():
    from distillery.recipes.evol import choose_operation

    rng = random.Random(0)
    picks = [choose_operation(rng, ["deepen", "concretize"], 0.25) for _ in range(4000)]
    assert set(picks) == {"breadth", "deepen", "concretize"}
    assert 0.2 < picks.count("breadth") / len(picks) < 0.3
    assert {choose_operation(rng, ["deepen"], 0.0) for _ in range(50)} == {"deepen"}
    assert {choose_operation(rng, ["deepen"], 1.0) for _ in range(50)} == {"breadth"}


def test_evol_parser_strips_labels_and_quotes_but_keeps_leaks_inside():
    from distillery.recipes.evol import parse_evolved

    assert parse_evolved("#Rewritten Prompt#:\n  \"Name three rivers in Africa.\" ") == "Name three rivers in Africa."
    assert parse_evolved("**Created Prompt:** Compose a limerick about tides.") == "Compose a limerick about tides."
    assert parse_evolved("Explain tides. Unlike the #Given Prompt#, use numbers.") == "Explain tides. Unlike the #Given Prompt#, use numbers."
    assert parse_evolved("") == "" and parse_evolved(None) == ""


def test_evol_no_information_gain():
    from distillery.recipes.evol import check_gain

    parent = "Suggest a breakfast with protein and no eggs."
    same = check_gain("suggest a BREAKFAST with protein, and no eggs!", parent, 0.9)
    assert (same.keep, same.reason) == (False, "no_gain") and "identical" in same.detail
    near = check_gain("Suggest a breakfast with protein and no eggs, please.", parent, 0.9)
    assert near.reason == "no_gain" and "ROUGE-L" in near.detail
    cut = check_gain("Suggest a breakfast.", parent, 0.9)
    assert cut.reason == "no_gain" and "adds no words" in cut.detail
    grown = check_gain("Suggest a vegan breakfast with at least 30 grams of protein, no eggs, under 800 calories, "
                       "and list the ingredients with amounts.", parent, 0.9)
    assert grown.keep


def test_evol_template_leak():
    from distillery.recipes.evol import check_leak

    for text in ("Rewrite the #Given Prompt# with more detail.", "The given prompt asks for fruit.",
                 "#Rewritten Prompt# Explain gravity.", "As a prompt rewriter I suggest: explain gravity.",
                 "Here is the created prompt: explain gravity."):
        verdict = check_leak(text)
        assert (verdict.keep, verdict.reason) == (False, "template_leak"), text
    assert check_leak("Give a prompt answer: what is 2 + 2?").keep


def test_evol_form_checks():
    from distillery.recipes.evol import check_form

    assert check_form("   ", 3, 10).reason == "empty"
    assert check_form("Explain.", 3, 10).reason == "length"
    assert check_form(" ".join(["word"] * 11), 3, 10).reason == "length"
    assert check_form("What is it, and why?", 3, 10).reason == "no_content"
    assert check_form("Explain photosynthesis to a child.", 3, 10, finish_reason="length").reason == "truncated"
    assert check_form("Explain photosynthesis to a child.", 3, 10, finish_reason="stop").keep


def test_evol_eliminate_runs_form_then_leak_then_gain():
    from distillery.recipes.evol import eliminate

    limits = {"min_words": 3, "max_words": 50, "threshold": 0.9}
    parent = "Explain photosynthesis."
    assert eliminate("Explain.", parent, **limits).reason == "length"
    assert eliminate("Explain the given prompt: photosynthesis.", parent, **limits).reason == "template_leak"
    assert eliminate("Explain photosynthesis, ok.", "Explain photosynthesis, ok!", **limits).reason == "no_gain"
    assert eliminate("Explain photosynthesis to a ten-year-old using a kitchen analogy.", parent, **limits).keep


def test_evol_refusal_is_sorry_and_short():
    from distillery.recipes.evol import is_refusal

    v = is_refusal("I'm sorry, but I can't help with that request.")
    assert (v.keep, v.reason) == (False, "refusal") and "sorry" in v.detail
    assert is_refusal("I\u2019m unable to share personal addresses.").reason == "refusal"
    assert is_refusal("As an AI, I do not have opinions.").reason == "refusal"
    long_answer = "Sorry for the wait! " + "Here is a detailed plan with many steps. " * 20
    assert is_refusal(long_answer, max_words=80).keep  # long: the teacher did answer
    assert is_refusal("Photosynthesis turns light into chemical energy.").keep
    assert is_refusal("").keep


def test_evol_recipe_model_bounds_and_descriptions():
    from distillery.recipes.evol import EvolConfig, EvolInstructRecipe

    recipe = EvolInstructRecipe.model_validate({"evol": {"depth": 3, "breadth_share": 0.5}})
    assert recipe.flow == "evol_instruct" and recipe.evol.depth == 3
    for bad in ({"depth": 0}, {"breadth_share": 1.5}, {"operations": []}, {"operations": ["shorten"]},
                {"min_words": 10, "max_words": 5}, {"nope": 1}):
        with pytest.raises(ValidationError):
            EvolConfig.model_validate(bad)
    with pytest.raises(ValidationError, match="evol.max_tokens"):
        EvolInstructRecipe.model_validate({"evol": {"max_tokens": 4096}, "teacher": {"max_model_len": 2048}})
    with pytest.raises(ValidationError):
        EvolInstructRecipe.model_validate({"flow": "distill"})
    _all_fields_described(EvolInstructRecipe)


def test_evol_example_recipe_validates():
    from distillery.recipes.evol import EvolInstructRecipe

    data = yaml.safe_load((ROOT / "recipes" / "evol-instruct.yaml").read_text())
    recipe = EvolInstructRecipe.model_validate(data)
    assert recipe.flow == "evol_instruct" and recipe.sampling.max_tokens < recipe.teacher.max_model_len


# ---- textbook (Phi-1) ----

def test_textbook_seeds_are_the_topic_audience_product_with_lineage():
    from distillery.recipes.textbook import exercise_seed, section_seed, seed_pairs

    pairs = seed_pairs(["fractions", "recursion"], ["a child", "an adult", "a teacher"])
    assert len(pairs) == 6 and len({(p["topic"], p["audience"]) for p in pairs}) == 6
    assert pairs[4] == {"pair": "t1-a1", "topic": "recursion", "audience": "an adult"}
    section = section_seed(pairs[4])
    assert section["seed_id"] == "textbook-t1-a1-section"
    assert "recursion" in section["instruction"] and "an adult" in section["instruction"]
    assert json.loads(section["lineage"]) == {"recipe": "textbook", "topic": "recursion", "audience": "an adult",
                                              "kind": "section", "pair": "t1-a1", "source": "teacher"}
    ex = exercise_seed(pairs[4], "Write a recursive factorial.", "textbook-t1-a1-ex1", index=1)
    assert ex["instruction"].startswith("Write a recursive factorial.") and "an adult" in ex["instruction"]
    assert json.loads(ex["lineage"])["kind"] == "exercise" and json.loads(ex["lineage"])["index"] == 1


def test_textbook_exercise_request_is_continued_at_exercise_one():
    from distillery.recipes.textbook import exercises_request

    msgs = exercises_request({"pair": "t0-a0", "topic": "fractions", "audience": "a child"}, 3)
    assert msgs[0]["role"] == "user" and "Write 3 exercises on fractions for a child" in msgs[0]["content"]
    assert msgs[1] == {"role": "assistant", "content": "Exercise 1:"}


def test_textbook_exercise_parser_splits_and_drops_solutions():
    from distillery.recipes.textbook import parse_exercises

    text = (" What is 1/2 + 1/4?\n\nSolution: 3/4\n**Exercise 2:** Simplify 6/8.\nAnswer: 3/4\n"
            "- Exercise 3) Order 2/3, 3/5 and 5/8 from smallest to largest.\n  Show your work.")
    assert parse_exercises(text) == ["What is 1/2 + 1/4?", "Simplify 6/8.",
                                     "Order 2/3, 3/5 and 5/8 from smallest to largest.\n Show your work."]
    assert parse_exercises("") == [] and parse_exercises("\nSolution: none") == []


def test_textbook_exercise_split_says_which_exercises_ended():
    from distillery.recipes.textbook import split_exercises

    # ended: followed by the next exercise or by a solution; the last one, bare, may have been cut off
    assert split_exercises(" Add 1/2 and 1/4.\nExercise 2: Halve 3/4 and") == [("Add 1/2 and 1/4.", True), ("Halve 3/4 and", False)]
    assert split_exercises(" Halve 3/4.\nSolution: 3/8, because half of") == [("Halve 3/4.", True)]


def test_textbook_exercise_checks():
    from distillery.recipes.textbook import check_exercise

    assert check_exercise("...", 4, 50).reason == "empty"
    assert check_exercise("Add them.", 4, 50).reason == "length"
    assert check_exercise(" ".join(["word"] * 51), 4, 50).reason == "length"
    assert check_exercise("Add 1/2 and 1/3, then simplify.", 4, 50).keep


def test_textbook_recipe_defaults_to_the_educational_value_rubric():
    from distillery.recipe import JudgeConfig
    from distillery.recipes.textbook import EDUCATIONAL_RUBRIC, TextbookConfig, TextbookRecipe

    recipe = TextbookRecipe.model_validate({"judge": {"min_score": 6}})
    assert recipe.flow == "textbook" and recipe.judge.rubric == EDUCATIONAL_RUBRIC and recipe.judge.min_score == 6
    assert "educational value of the response for a student whose goal is to learn" in EDUCATIONAL_RUBRIC
    assert isinstance(recipe.judge, JudgeConfig)
    assert TextbookRecipe.model_validate(recipe.model_dump(mode="json")) == recipe
    assert TextbookRecipe.model_validate({"judge": {"rubric": "Be kind."}}).judge.rubric == "Be kind."
    for bad in ({"topics": []}, {"audiences": [""]}, {"exercises_per_section": -1}, {"min_words": 9, "max_words": 3},
                {"extra_exercises": [{"topic": "x", "exercise": "y"}]}):
        with pytest.raises(ValidationError):
            TextbookConfig.model_validate(bad)
    with pytest.raises(ValidationError, match="textbook.max_tokens"):
        TextbookRecipe.model_validate({"textbook": {"max_tokens": 4096}, "teacher": {"max_model_len": 2048}})
    _all_fields_described(TextbookRecipe)


def test_textbook_example_recipe_validates():
    from distillery.recipes.textbook import TextbookRecipe

    data = yaml.safe_load((ROOT / "recipes" / "textbook.yaml").read_text())
    recipe = TextbookRecipe.model_validate(data)
    assert recipe.flow == "textbook" and recipe.judge.min_score > 1


def _all_fields_described(model, prefix: str = "") -> None:
    """Every field has a description (the Prefect form's label), nested models and list items included."""
    from typing import get_args

    for name, field in model.model_fields.items():
        assert field.description, f"{prefix}{name} has no description"
        for sub in (field.annotation, *get_args(field.annotation)):
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                _all_fields_described(sub, f"{prefix}{name}.")


def test_evol_and_textbook_modules_are_pure_and_their_flows_open_no_engine():
    import subprocess
    import sys

    heavy = ("prefect", "vllm", "fsspec", "s3fs", "torch")
    code = ("import sys, distillery.recipes.evol, distillery.recipes.textbook\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout
    code = "import sys, flows.evol_instruct, flows.textbook\nprint('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "False"
