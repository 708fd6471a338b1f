"""Seeds and prompts as staged shards: the load stage's schema and the render stage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from distillery.prompts import render_messages, user_text
from distillery.schema import MESSAGE
from distillery.stages.contract import ShardOutput

SEED_SCHEMA = pa.schema([
    pa.field("seed_id", pa.string()),
    pa.field("instruction", pa.string()),
    pa.field("input", pa.string()),
    pa.field("response", pa.string()),  # a reference answer (source.response_column), if any
    pa.field("lineage", pa.string()),
])
PROMPT_SCHEMA = pa.schema([*SEED_SCHEMA, pa.field("prompt", pa.string()), pa.field("messages", pa.list_(MESSAGE))])


@dataclass(frozen=True)
class Render:
    """Seeds -> chat conversations with the teacher's system prompt."""

    system_prompt: str | None
    name: str = "render"
    schema: pa.Schema = PROMPT_SCHEMA
    fanout: int = 1

    def settings(self) -> dict:
        return {"system_prompt": self.system_prompt}

    def code(self) -> Sequence[Callable]:
        return [render_messages, user_text]

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        seeds = [{k: v for k, v in r.items() if v is not None or k not in ("response", "lineage")} for r in rows]
        return ShardOutput(render_messages(seeds, self.system_prompt))
