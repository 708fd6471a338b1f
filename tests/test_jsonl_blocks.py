"""JSONL read by Polars where that is exact: the batches it takes give the very columns the
line-by-line path gives, and the batches where Polars would differ go line by line. On the
real seed tasks (nested lists of objects), with the hazards planted one per batch."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_seeds
from distillery.commands import dedup_job
from distillery.dedup import DedupParams
from distillery.json_columns import FieldTypes, conform
from distillery.jsonl_blocks import fast_table


def block(rows):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def slow_table(rows):
    fields = FieldTypes()
    fields.observe(rows)
    fields.finish()
    return fields.table(rows)


def test_uniform_seed_rows_parse_to_the_columns_json_loads_gives():
    seeds = read_seeds()
    table = fast_table(block(seeds), len(seeds))
    assert table is not None
    expected = slow_table(seeds)
    assert table.schema == expected.schema
    assert table.to_pylist() == expected.to_pylist()


@pytest.mark.parametrize("rows", [
    [{"a": "x"}, {"a": 5}],  # a string field that also holds a number
    [{"a": "x"}, {"a": {"b": 1}}],  # ... or an object
    [{"a": {"s": "x"}}, {"a": {"s": True}}],  # a nested string field that holds a bool
    [{"a": ["x", "y"]}],  # a list of strings (Polars would coerce [1, "x"] silently)
    [{"a": "lone \ud800 surrogate"}],
    [{"b": 1}, {"a": 2, "b": 3}],  # rows differ in keys: first-appearance order
    [{"a": 2**70}],
])
def test_batches_polars_would_read_differently_go_line_by_line(rows):
    data = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
    assert fast_table(data, len(rows)) is None


@pytest.mark.parametrize("data", [b'{"a": 1}\n{"a": \n', b'[1, 2]\n', b'{"a": "caf\xe9"}\n'])
def test_malformed_non_object_and_non_utf8_lines_go_line_by_line(data):
    assert fast_table(data, data.count(b"\n")) is None


def test_conform_widens_a_batch_to_the_files_types():
    struct = pa.array([{"a": 1}, None])
    wide = pa.struct([("a", pa.float64()), ("b", pa.string())])
    assert conform(struct, wide).to_pylist() == [{"a": 1.0, "b": None}, None]
    lists = pa.array([[{"a": 1}], None, []])
    assert conform(lists, pa.list_(wide)).to_pylist() == [[{"a": 1.0, "b": None}], None, []]
    assert conform(pa.nulls(2), pa.string()).to_pylist() == [None, None]


@pytest.mark.parametrize("variant", ["json_text", "widened"])
def test_the_command_gives_the_same_files_with_and_without_polars(tmp_path, monkeypatch, variant):
    seeds = read_seeds()
    rows = [dict(s) for s in seeds]
    rows.insert(40, {**seeds[0], "id": "copy", "instruction": seeds[0]["instruction"].upper()})
    if variant == "json_text":
        rows[90]["extra"] = "text"
        rows[95]["extra"] = 3  # a field of two types: JSON text, so every batch is written line by line
    else:  # types that widen across batches: Polars' batches are conformed to them
        rows[10]["extra"], rows[20]["extra"] = 1, 2  # int in one batch ...
        rows[130]["extra"] = 2.5  # ... float in another
        rows[12]["meta"], rows[140]["meta"] = {"a": 1}, {"b": "x", "c": [1]}  # a struct's fields, per batch
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines[60:60] = ["", "   "]  # blank lines are not rows
    lines.insert(120, '{"id": "broken", ')  # a malformed line: its batch goes line by line
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    params = DedupParams(ngram=3)
    outputs = {}
    for name in ("polars", "json"):
        if name == "json":
            monkeypatch.setattr(dedup_job, "fast_table", lambda data, lines: None)
        stats = dedup_job.run_dedup(str(src), "instruction", str(tmp_path / name), params, batch_rows=50)
        outputs[name] = [pq.read_table(tmp_path / name / f) for f in ("kept.parquet", "rejected.parquet")]
        assert stats.rows_in == len(rows) + 1 == stats.kept + sum(stats.rejected.values())
        assert stats.rejected["malformed_json"] == 1 and stats.rejected["exact_duplicate"] == 1
    for fast, slow in zip(outputs["polars"], outputs["json"]):
        assert fast.schema == slow.schema and fast.to_pylist() == slow.to_pylist()
    kept = outputs["polars"][0]
    if variant == "widened":
        assert kept.schema.field("extra").type == pa.float64()
        assert kept.schema.field("meta").type == pa.struct([("a", pa.int64()), ("b", pa.string()), ("c", pa.list_(pa.int64()))])
    else:
        assert kept.schema.field("extra").type == pa.string()


def test_the_command_takes_polars_batches_when_they_are_exact(tmp_path, monkeypatch):
    seeds = read_seeds()
    src = tmp_path / "in.jsonl"
    src.write_bytes(block(seeds + [{**seeds[5], "id": "zz_copy"}]))  # the smaller id represents
    used = []
    original = dedup_job.fast_table
    monkeypatch.setattr(dedup_job, "fast_table", lambda data, lines: used.append(original(data, lines)) or used[-1])
    stats = dedup_job.run_dedup(str(src), "instruction", str(tmp_path / "out"), DedupParams(ngram=3), batch_rows=60)
    assert len(used) == 3 and all(t is not None for t in used)
    rejected = pq.read_table(tmp_path / "out" / "rejected.parquet").to_pylist()
    assert [(r["id"], r["dedup_reason"], r["dedup_duplicate_of"]) for r in rejected] == [("zz_copy", "exact_duplicate", "seed_task_5")]
    assert stats.kept == len(seeds)
    assert pq.read_table(tmp_path / "out" / "kept.parquet").schema.names[:len(seeds[0])] == list(seeds[0])
