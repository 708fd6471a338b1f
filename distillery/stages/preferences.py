"""The preference stage: per prompt, a chosen/rejected pair or one exclusion. Pure: the
judged completions and the judge's engine come in as callables."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from distillery.judge import pairwise_messages, pairwise_verdicts, swap_verdict
from distillery.preferences import candidate_pairs, confirm_pairs, preference_rows, score_of
from distillery.stages.contract import ShardOutput


@dataclass(frozen=True)
class Pairs:
    """A shard of prompts (the `fit` stage's rows) in; per prompt its best and worst judged
    completion as a pair (at least `min_margin` apart; with `pairwise_check`, the judge must
    prefer the chosen one in both orders), or one exclusion with its reason, out. The unit
    is the prompt: prompts in = pairs + exclusions. `completions(shard)` are the shard's
    judged completions (every teacher's, after dedup)."""

    min_margin: float
    pairwise_check: bool
    rubric: str
    judge_model: str
    batch_size: int
    max_model_len: int
    schema: pa.Schema
    completions: Callable[[int], list[dict]] = field(compare=False, repr=False)
    open_engine: Callable[[], object] | None = field(default=None, compare=False, repr=False)
    name: str = "preferences"
    fanout: int = 1

    def settings(self) -> dict:
        return {"min_margin": self.min_margin, "pairwise_check": self.pairwise_check, "rubric": self.rubric,
                "judge_model": self.judge_model, "batch_size": self.batch_size, "max_model_len": self.max_model_len}

    def code(self) -> Sequence[Callable]:
        return [Pairs.run, candidate_pairs, confirm_pairs, preference_rows, score_of, pairwise_verdicts, pairwise_messages,
                swap_verdict]

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        pairs, excluded = candidate_pairs(self.completions(shard), [r["seed_id"] for r in rows], self.min_margin)
        verdicts, opened = None, 0.0
        if self.pairwise_check:
            verdicts = []
            if pairs:
                started = time.perf_counter()
                engine = self.open_engine()
                opened = time.perf_counter() - started
                verdicts = pairwise_verdicts(engine, pairs, self.rubric, self.batch_size, self.max_model_len)
        kept, disputed = confirm_pairs(pairs, verdicts)
        facts = {"engine_seconds": opened, **{f"pairwise_{v}": n for v, n in Counter(verdicts or []).items()}}
        return ShardOutput(preference_rows(kept, self.judge_model, None, None), [*excluded, *disputed], facts)
