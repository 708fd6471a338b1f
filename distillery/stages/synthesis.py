"""Stages only some synthesis recipes add to the shared ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from distillery.recipes.evol import is_refusal, split_refusals
from distillery.stages.contract import ShardOutput


@dataclass(frozen=True)
class Refusals:
    """Evol-Instruct's check (c) on the judged answers: an answer that says sorry and is
    short is rejected at stage 'filter', reason 'refusal'."""

    max_words: int
    schema: pa.Schema
    name: str = "refusal"
    fanout: int = 1
    summary_key: str = "refusals"  # the synthesis summary's count of rows rejected here

    def settings(self) -> dict:
        return {"max_words": self.max_words}

    def code(self) -> Sequence[Callable]:
        return [split_refusals, is_refusal]

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        kept, refused = split_refusals(rows, self.max_words)
        return ShardOutput(kept, refused)
