"""The `preferences` flow: a DPO-ready dataset of chosen/rejected pairs.

Same stages as `distill` up to the judge (every teacher, n completions each,
dedup, absolute scores), then per prompt the best against the worst with a
minimum margin, confirmed by a pairwise judgement in both orders. Staged shard by
shard like every build (flows/staged.py: `staged_preferences`).
"""

from __future__ import annotations

from prefect import flow

from distillery.recipe import Recipe, RecipeError
from flows.staged import staged_preferences


@flow(name="preferences", log_prints=True, validate_parameters=True)
def preferences(recipe: Recipe) -> dict:
    """Build chosen/rejected pairs from judged completions and return the summary."""
    per_prompt = sum(t[3].n for t in recipe.teachers())
    if per_prompt < 2 or not recipe.judge.enabled:
        raise RecipeError("preferences need at least 2 completions per prompt (sampling.n or extra_teachers) and judge.enabled")
    return staged_preferences(recipe)
