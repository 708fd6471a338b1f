"""The judge's sampling settings; the judge itself is a stage (distillery/stages/engine.py)."""

from __future__ import annotations

from distillery.judge import absolute_regex
from distillery.recipe import JudgeConfig


def judge_params(config: JudgeConfig) -> tuple[dict, dict]:
    """Sampling and structured-output arguments for the configured method. Greedy throughout."""
    if config.method == "logprob":
        return {"n": 1, "temperature": 0.0, "max_tokens": 1, "logprobs": 20}, {"continue_final": True}
    extra = {"regex": absolute_regex(config.aspects)} if config.method == "structured" else {}
    return {"n": 1, "temperature": 0.0, "max_tokens": config.max_tokens}, extra
