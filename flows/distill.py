"""The `distill` flow: seeds -> prompts -> teachers -> dedup -> judge -> filter -> shards.

Built in stages over shards (flows/staged.py: `staged_distill`), soft targets and a mixture
of several teachers' (kd.teacher_weights) included."""

from __future__ import annotations

from prefect import flow

from distillery.recipe import Recipe
from flows.build import DegenerateJudgeError
from flows.staged import staged_distill

__all__ = ["DegenerateJudgeError", "distill"]


@flow(name="distill", log_prints=True, validate_parameters=True)
def distill(recipe: Recipe, responses: str | None = None) -> dict:
    """Build a distillation dataset as the recipe describes and return its summary.
    `responses`: an OpenAI batch output file (path or URI) answering the requests that
    `distillery batch-file` wrote for this recipe; the teachers are then not called."""
    return staged_distill(recipe, responses)
