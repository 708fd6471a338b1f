"""The evaluation recipes and CLI entries refuse bad input before anything runs, in one line
that names the field and says what to do (no engine, no Prefect)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from distillery.recipe import FLOWS, MODELS, RecipeError, build_recipe, recipe_model
from distillery.recipes.evals import EvalRecipe, LoopRecipe, VerifiableRecipe


def test_every_eval_flow_has_a_recipe_model_and_a_flow():
    for flow, model in [("eval_pairwise", EvalRecipe), ("eval_rse", EvalRecipe), ("eval_identity", EvalRecipe),
                        ("eval_accuracy", EvalRecipe), ("verifiable", VerifiableRecipe), ("distill_loop", LoopRecipe)]:
        assert recipe_model(flow) is model and flow in FLOWS and flow in MODELS
        assert type(build_recipe({"flow": flow})) is model


@pytest.mark.parametrize("data, words", [
    ({"flow": "eval_pairwise", "baseline": None}, ["baseline", "set baseline"]),
    ({"flow": "eval_rse", "baseline": None}, ["baseline"]),
    ({"flow": "eval_identity", "before": "nobody"}, ["before", "'nobody'", "candidates are"]),
    ({"flow": "eval_identity", "candidates": [{"name": "teacher"}]}, ["unique", "teacher"]),
    ({"flow": "eval_identity", "identity": {"wrappers": ["plain", "jailbreak"]}}, ["identity", "jailbreak", "roleplay"]),
    ({"flow": "eval_identity", "identity": {"languages": ["en", "xx"]}}, ["identity", "'xx'", "known"]),
    ({"flow": "eval_pairwise", "sampling": {"max_tokens": 4096}}, ["max_tokens", "max_model_len"]),
    ({"flow": "eval_pairwise", "pairwise": {"control_share": 1.5}}, ["pairwise.control_share"]),
    ({"flow": "verifiable", "verifiable": {"min_pass_rate": 0.9, "max_pass_rate": 0.1}}, ["min_pass_rate", "max_pass_rate"]),
    ({"flow": "distill_loop", "finetune": {"steps": 0}}, ["finetune.steps"]),
])
def test_bad_eval_recipes_name_the_field(data, words):
    with pytest.raises(RecipeError) as err:
        build_recipe(data, "r.yaml")
    message = str(err.value)
    assert message.startswith("r.yaml: ") and all(w in message for w in words), message


def test_the_judge_shares_the_baseline_engine_unless_told_otherwise():
    recipe = build_recipe({"flow": "eval_pairwise", "baseline": {"name": "teacher", "max_model_len": 3000}})
    judge = recipe.judge_model()
    assert (judge.model, judge.max_model_len) == (recipe.baseline.model, 3000)
    other = build_recipe({"flow": "eval_pairwise", "judge": {"model": "/models/judge", "max_model_len": 8192}})
    assert (other.judge_model().model, other.judge_model().max_model_len) == ("/models/judge", 8192)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distillery.commands.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_eval_and_finetune_refuse_bad_input_in_one_line(tmp_path):
    done = cli("eval", "pairwise", "--set", "baseline=null", "--set", f"output.uri={tmp_path / 'out'}")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "distillery: error: default recipe: (recipe): Value error, flow 'eval_pairwise' compares candidates with a baseline; "
        "set baseline (the teacher)"]
    assert not (tmp_path / "out").exists()
    done = cli("finetune", str(tmp_path / "missing"), "--output", str(tmp_path / "m"))
    assert done.returncode == 2 and "does not exist" in done.stderr and str(tmp_path / "missing") in done.stderr
    (tmp_path / "rows.jsonl").write_text('{"prompt": "hi", "response": "hello"}\n')
    done = cli("finetune", str(tmp_path / "rows.jsonl"), "--output", str(tmp_path / "m"))
    assert done.returncode == 2 and "no 'messages' column" in done.stderr, done.stderr[-1500:]
