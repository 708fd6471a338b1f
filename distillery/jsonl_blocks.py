"""JSONL lines in blocks, parsed into Arrow columns by Polars where that is exact. Pure logic.

The standard library parses a line at a time (~9 us for 1.4 KB) and `pa.array` then infers
types from Python objects; Polars' NDJSON reader parses a whole block into columns at about
600 MB/s on one core. It is used only where its columns are what `json.loads` plus
`FieldTypes` would give: a block falls back to the line-by-line path (`None` here) when

- a line is not a JSON object, not valid JSON or not UTF-8 (Polars refuses the block);
- a string field also holds a number, bool or object somewhere in the block (Polars would
  coerce it to text silently; a scan of the raw bytes for such a key finds it), or a list of
  strings appears (the same coercion, which that scan cannot see);
- the first line's keys (and its nested objects' keys) are not in the order of Polars'
  columns, so rows differ in keys and the first-appearance order would be lost;
- an integer needs more than 64 bits, or a \\uD800-\\uDFFF escape appears (Polars does not
  keep a lone surrogate; `json.loads` does, and the dedup counts and replaces it).
"""

from __future__ import annotations

import io
import json
import re

import polars as pl
import pyarrow as pa

from distillery.json_columns import plain_type

_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_LEAVES = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_string, pa.types.is_null)


def _string_keys(type_: pa.DataType, name: str, keys: set[str]) -> bool:
    """Collect the names of string fields (at any depth) into keys; False if the type holds
    something the fast path does not take (a list of strings, a 128-bit integer, ...)."""
    if pa.types.is_string(type_):
        keys.add(name)
        return True
    if pa.types.is_struct(type_):
        return all(_string_keys(f.type, f.name, keys) for f in type_)
    if pa.types.is_list(type_):
        item = type_.value_type
        return not pa.types.is_string(item) and _string_keys(item, name, keys)
    if pa.types.is_integer(type_):
        return type_ == pa.int64()
    return any(check(type_) for check in _LEAVES)


def _same_order(value, type_: pa.DataType) -> bool:
    """Does a record (or nested value) list its keys in the order of the struct's fields? Polars
    orders fields its own way where rows differ in keys; `FieldTypes` keeps first appearance."""
    if isinstance(value, dict) and pa.types.is_struct(type_):
        names = [f.name for f in type_]
        return list(value) == names and all(_same_order(value[f.name], f.type) for f in type_)
    if isinstance(value, list) and value and pa.types.is_list(type_):
        return _same_order(value[0], type_.value_type)
    return True


def parse(block: bytes) -> pa.Table:
    """Polars' columns for a block of lines, in `pa.array`'s types (string, list)."""
    table = pl.read_ndjson(io.BytesIO(block), infer_schema_length=None).to_arrow()
    return table.cast(pa.schema([pa.field(f.name, plain_type(f.type)) for f in table.schema]))


def fast_table(block: bytes, lines: int) -> pa.Table | None:
    """The block's `lines` rows as Arrow columns, or None where only line-by-line parsing is exact."""
    if _SURROGATE.search(block):
        return None
    try:
        table = parse(block)
    except Exception:  # Polars' errors for malformed JSON, non-objects and bad UTF-8 vary by version
        return None
    if table.num_rows != lines:
        return None
    first = json.loads(block[: block.find(b"\n")] if b"\n" in block else block)
    if not _same_order(first, pa.struct(list(table.schema))):
        return None
    keys: set[str] = set()
    if not all(_string_keys(f.type, f.name, keys) for f in table.schema):
        return None
    if keys:
        names = b"|".join(re.escape(json.dumps(k, ensure_ascii=False).encode("utf-8")[1:-1]) for k in sorted(keys))
        if re.search(rb'"(?:' + names + rb')"\s*:\s*[^"n\s]', block):
            return None  # a string field holds a non-string value somewhere: Polars would have coerced it
    return table
