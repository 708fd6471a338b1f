"""The `score_targets` flow: soft targets for answers that already exist.

An SFT dataset of prompts and answers (ours, or a public one) goes through the
teacher with prompt logprobs: at every token of every answer, the teacher's
top-K. Nothing is generated, so a human-written or third-party dataset becomes
a KD dataset at the cost of one forward pass per row. Staged shard by shard like
every build (flows/staged.py: `staged_score_targets`).
"""

from __future__ import annotations

from prefect import flow

from distillery.recipe import Recipe
from flows.staged import staged_score_targets


@flow(name="score_targets", log_prints=True, validate_parameters=True)
def score_targets(recipe: Recipe) -> dict:
    """Teacher-forced soft targets for the answers in source.response_column."""
    return staged_score_targets(recipe)
