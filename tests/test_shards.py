import io
import json
from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest

from distillery.report import verify_manifest
from distillery.schema import REJECT_SCHEMA, ROW_SCHEMA, content_id, rejects_table, to_table
from distillery.shards import encode_shards, sha256_bytes, shard_bounds

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def row(i: int) -> dict:
    msgs = [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    return {
        "id": content_id(msgs), "messages": msgs, "prompt": f"q{i}", "response": f"a{i}", "seed_id": f"s{i}",
        "sample_index": 0, "teacher": "t", "teacher_model": "m", "sampling": json.dumps({"n": 1}), "judge_score": 5,
        "run_id": "r", "created_at": NOW,
    }


def test_bounds_cover_every_row_once():
    assert shard_bounds(0, 10) == [(0, 0)]
    assert shard_bounds(25, 10) == [(0, 10), (10, 20), (20, 25)]


def test_shards_have_declared_schema_names_and_checksums():
    table = to_table([row(i) for i in range(7)], ROW_SCHEMA)
    shards = encode_shards(table, "data", "train", 3, "zstd")
    assert [s.path for s in shards] == [f"data/train-0000{i}-of-00003.parquet" for i in range(3)]
    assert [s.rows for s in shards] == [3, 3, 1]
    for s in shards:
        f = pq.ParquetFile(io.BytesIO(s.data))
        assert f.schema_arrow.equals(ROW_SCHEMA, check_metadata=False)
        assert f.metadata.row_group(0).column(0).compression == "ZSTD"
        assert s.sha256 == sha256_bytes(s.data)
    # deterministic: same rows, same bytes
    assert [s.sha256 for s in encode_shards(table, "data", "train", 3, "zstd")] == [s.sha256 for s in shards]


def test_missing_required_field_fails_loudly():
    bad = row(1)
    del bad["response"]
    with pytest.raises(Exception):
        to_table([bad], ROW_SCHEMA)


def test_rejects_get_ids_and_schema():
    table = rejects_table([{"seed_id": "line-3", "stage": "load", "reason": "malformed_json", "raw": "{", "run_id": "r", "created_at": NOW}])
    assert table.schema.equals(REJECT_SCHEMA)
    assert len(table.column("id")[0].as_py()) == 32


def test_verify_manifest_finds_tampering_and_strays():
    shards = encode_shards(to_table([row(i) for i in range(4)], ROW_SCHEMA), "data", "train", 2, "zstd")
    manifest = {"shards": [s.entry() for s in shards], "rejected_shards": []}
    files = {s.path: s.data for s in shards}
    assert verify_manifest(manifest, files, sha256_bytes) == []
    files[shards[0].path] = b"corrupt"
    files["data/extra.parquet"] = b"x"
    files[shards[1].path] = None
    problems = verify_manifest(manifest, files, sha256_bytes)
    assert len(problems) == 3
    assert any("sha256" in p for p in problems) and any("missing" in p for p in problems) and any("does not list" in p for p in problems)
