"""A stage for bench/scale.py: the prompt stands in for the teacher's answer, so the
stages after generation see rows shaped as generation leaves them, without an engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from distillery.stages.contract import ShardOutput
from distillery.schema import content_id


@dataclass(frozen=True)
class StandIn:
    schema: pa.Schema
    name: str = "stand-in"
    fanout: int = 1

    def settings(self) -> dict:
        return {}

    def code(self) -> Sequence[Callable]:
        return [StandIn.run]

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        now = datetime.now(timezone.utc)
        return ShardOutput([{**r, "id": content_id(r["messages"], r["prompt"]), "response": r["prompt"], "sample_index": 0,
                             "teacher": "stand-in", "teacher_model": "none", "sampling": "{}", "created_at": now,
                             "messages": [*r["messages"], {"role": "assistant", "content": r["prompt"]}]} for r in rows])
