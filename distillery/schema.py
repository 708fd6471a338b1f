"""Declared Arrow schemas for kept and rejected rows, and row -> table conversion.

Every shard is written with these schemas, never one inferred from rows.

Kept rows store the plain user text as `prompt_text`, not `prompt`: TRL's SFTTrainer
takes a row with a `prompt` column for a prompt-completion row (and then fails on the
missing `completion`), so the published folder would not train as it is. Rows in
memory keep the key `prompt`; `to_table` renames it on the way to a shard.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

ROW_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("messages", pa.list_(MESSAGE), nullable=False),
        pa.field("prompt_text", pa.string(), nullable=False),  # the user turn as plain text (rows in memory: "prompt")
        pa.field("response", pa.string(), nullable=False),
        pa.field("instruction", pa.string()),  # the seed's instruction and input, as given
        pa.field("input", pa.string()),
        pa.field("seed_id", pa.string(), nullable=False),
        pa.field("sample_index", pa.int32(), nullable=False),
        pa.field("teacher", pa.string(), nullable=False),
        pa.field("teacher_model", pa.string(), nullable=False),
        pa.field("sampling", pa.string(), nullable=False),  # JSON of the sampling settings
        pa.field("finish_reason", pa.string()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("completion_tokens", pa.int32()),
        pa.field("judge_model", pa.string()),
        pa.field("judge_method", pa.string()),
        pa.field("judge_score", pa.int8()),
        pa.field("judge_score_expected", pa.float32()),
        # a struct, not a map: `datasets` has no map type
        pa.field("judge_aspects", pa.struct([(a, pa.int8()) for a in ("helpfulness", "honesty", "instruction_following")])),
        pa.field("judge_rationale", pa.string()),
        pa.field("dedup_cluster", pa.string()),
        pa.field("guard_flags", pa.list_(pa.string())),  # what the guard stage noted but kept ("ai_boilerplate")
        pa.field("lineage", pa.string()),  # JSON: how a synthesized prompt was made (recipe, round, parent, ...)
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={"distillery.kind": "kept"},
)

REJECT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("seed_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("prompt", pa.string()),
        pa.field("response", pa.string()),
        pa.field("teacher", pa.string()),
        pa.field("judge_score", pa.int8()),
        pa.field("judge_raw", pa.string()),
        pa.field("dedup_cluster", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("raw", pa.string()),  # the source record, for rows rejected at load
        pa.field("lineage", pa.string()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={"distillery.kind": "rejected"},
)


PREFERENCE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt", pa.list_(MESSAGE), nullable=False),
        pa.field("chosen", pa.list_(MESSAGE), nullable=False),
        pa.field("rejected", pa.list_(MESSAGE), nullable=False),
        pa.field("seed_id", pa.string(), nullable=False),
        pa.field("score_chosen", pa.float32(), nullable=False),
        pa.field("score_rejected", pa.float32(), nullable=False),
        pa.field("chosen_teacher", pa.string(), nullable=False),
        pa.field("rejected_teacher", pa.string(), nullable=False),
        pa.field("chosen_id", pa.string(), nullable=False),
        pa.field("rejected_id", pa.string(), nullable=False),
        pa.field("judge_model", pa.string(), nullable=False),
        pa.field("pairwise_verdict", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={"distillery.kind": "preferences"},
)


# Row key in memory -> its column name in kept shards, where the two differ.
STORED_AS = {"prompt": "prompt_text"}
_ROW_KEY = {column: key for key, column in STORED_AS.items()}


def _value(row: dict, column: str):
    if column in row:
        return row[column]
    return row.get(_ROW_KEY.get(column, column))


def content_id(*parts: object) -> str:
    """A stable id: sha256 of the canonical JSON of the content, 16 bytes in hex."""
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def reject_id(row: dict) -> str:
    return row.get("id") or content_id("rejected", row.get("seed_id"), row.get("reason"), row.get("raw") or row.get("prompt"))


def to_table(rows: Sequence[dict], schema: pa.Schema) -> pa.Table:
    """Columns in schema order; fields a row lacks are null (and fail if non-nullable).

    A column in STORED_AS's values is filled from the row's in-memory key when the row lacks it."""
    columns = {f.name: [_value(r, f.name) for r in rows] for f in schema}
    table = pa.Table.from_pydict(columns, schema=schema)
    # Arrow does not enforce nullability on construction; a null in a required
    # column is a bug upstream, so stop before it reaches a shard.
    for f in schema:
        if not f.nullable and table.column(f.name).null_count:
            raise ValueError(f"required column {f.name!r} has {table.column(f.name).null_count} null value(s)")
    return table


def rejects_table(rows: Sequence[dict]) -> pa.Table:
    return to_table([{**r, "id": reject_id(r)} for r in rows], REJECT_SCHEMA)
