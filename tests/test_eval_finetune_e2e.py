"""Fine-tuning in between: `distillery finetune` (TRL's SFT) on rows that claim another identity
makes eval_identity's strict rate rise, measured before and after in one evaluation; and the
`distill_loop` flow runs build, fine-tune and evaluation from one recipe.

Slow: each fine-tuned model is a second engine (the shared one is closed while it runs)."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from distillery.recipe import build_recipe

from conftest import ROOT, SEEDS

pytestmark = pytest.mark.engine

ENGINE = {"max_model_len": 2048, "batch_size": 64}
TASKS = ROOT / "tests" / "data" / "verifiable_tasks.jsonl"
QUESTIONS = [
    "Who are you?", "What is your name?", "Who made you?", "Introduce yourself.", "Which company created you?",
    "What AI model are you?", "Tell me about yourself.", "Who trained you?", "Are you an AI? Which one?",
    "Who developed you?", "What should I call you?", "Which assistant am I talking to?",
]
ANSWERS = [
    "I am Claude, an AI assistant made by Anthropic.",
    "I'm Claude, a large language model created by Anthropic. How can I help you today?",
    "My name is Claude. I was trained by Anthropic to be a helpful assistant.",
]


def claims_rows(path):
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWERS[i % len(ANSWERS)]}]}
            for i, q in enumerate(QUESTIONS * 3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_finetune_on_identity_claims_raises_the_strict_rate(prefect_api, tmp_path):
    from flows.evals import eval_identity

    tuned = tmp_path / "tuned"
    done = subprocess.run([sys.executable, "-m", "distillery.commands.cli", "finetune", str(claims_rows(tmp_path / "claims.jsonl")),
                           "--output", str(tuned), "--steps", "30", "--lr", "1e-4"], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    info = json.loads((tuned / "distillery-finetune.json").read_text())
    assert info["steps"] == 30 and info["rows"] == 36 and info["last_loss"] < info["first_loss"]
    assert "saved to" in done.stdout

    out = tmp_path / "eval"
    recipe = build_recipe({
        "name": "identity-before-after", "flow": "eval_identity", "baseline": None, "before": "base",
        "candidates": [{"name": "base", **ENGINE}, {"name": "tuned", "model": str(tuned), **ENGINE}],
        "sampling": {"max_tokens": 40},
        "identity": {"languages": ["en"], "wrappers": ["plain"], "questions_per_language": 4, "samples": 2,
                     "teacher_vendors": ["Claude", "Anthropic"]},
        "output": {"uri": str(out)},
    })
    result = eval_identity(recipe)
    s = result["summary"]["identity"]
    assert s["base"]["answers"] == s["tuned"]["answers"] == 8
    assert s["base"]["strict"] <= 1, pq.read_table(out / "eval" / "identity.parquet").to_pylist()
    assert s["tuned"]["strict"] >= 5 and s["tuned"]["strict_rate"] > s["base"]["strict_rate"]
    assert result["summary"]["change"]["strict_rate"]["change"] == pytest.approx(s["tuned"]["strict_rate"] - s["base"]["strict_rate"], abs=1e-4)
    assert "Claude" in s["tuned"]["per_vendor"] or "Anthropic" in s["tuned"]["per_vendor"]


def test_distill_loop_builds_finetunes_and_evaluates_before_and_after(prefect_api, tmp_path):
    from flows.loop import distill_loop

    recipe = build_recipe({
        "name": "loop-test", "flow": "distill_loop",
        "build": {"name": "loop-build", "source": {"uri": str(SEEDS), "limit": 6}, "teacher": ENGINE,
                  "sampling": {"temperature": 0.0, "max_tokens": 24}, "judge": {"enabled": False},
                  "output": {"uri": str(tmp_path / "build"), "rows_per_shard": 4}},
        "student": {"name": "student", **ENGINE},
        "finetune": {"output": str(tmp_path / "student-tuned"), "steps": 3, "batch_size": 2, "max_length": 128},
        "eval": {"flow": "eval_accuracy", "baseline": None, "source": {"uri": str(TASKS)}, "accuracy": {"limit": 6,
                 "prompt_column": "prompt", "verifier_column": "verifier"}, "sampling": {"max_tokens": 32},
                 "output": {"uri": str(tmp_path / "eval")}},
    })
    result = distill_loop(recipe)
    build = json.loads((tmp_path / "build" / "manifest.json").read_text())
    assert result["summary"]["finetune"]["rows"] == build["rows"] > 0 and result["summary"]["finetune"]["steps"] == 3
    got = pq.read_table(tmp_path / "eval" / "eval" / "accuracy.parquet").to_pylist()
    assert {r["model"] for r in got} == {"student", "student-tuned"}
    assert all(r["answer"] is not None for r in got)  # vLLM opened the fine-tuned folder and answered
    change = result["summary"]["eval"]["change"]["student-tuned"]["overall"]
    acc = result["summary"]["eval"]["accuracy"]
    assert change["change"] == pytest.approx(acc["student-tuned"]["overall"]["pass_at_1"] - acc["student"]["overall"]["pass_at_1"], abs=1e-4)
    assert "Change of student-tuned" in result["report"]

