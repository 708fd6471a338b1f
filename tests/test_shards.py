import io
import math
import json
from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest

from distillery.report import verify_manifest
from distillery.schema import REJECT_SCHEMA, ROW_SCHEMA, content_id, rejects_table, to_table
from distillery.shards import ShardSpec, encode_shards, plan_shards, sha256_bytes, shard_bounds

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
    shards = encode_shards(table, "data", "train", ShardSpec(rows_per_shard=3))
    assert [s.path for s, _ in shards] == [f"data/train-0000{i}-of-00003.parquet" for i in range(3)]
    assert [s.rows for s, _ in shards] == [3, 3, 1]
    for s, data in shards:
        f = pq.ParquetFile(io.BytesIO(data))
        assert f.schema_arrow.equals(ROW_SCHEMA, check_metadata=False)
        assert f.metadata.row_group(0).column(0).compression == "ZSTD"
        assert f.metadata.num_rows == s.rows
        assert s.sha256 == sha256_bytes(data) and s.bytes == len(data)
    # deterministic: same rows, same bytes
    assert [s.sha256 for s, _ in encode_shards(table, "data", "train", ShardSpec(rows_per_shard=3))] == [s.sha256 for s, _ in shards]


def test_byte_target_and_row_groups_cut_shards():
    table = to_table([row(i) for i in range(100)], ROW_SCHEMA)
    per_row = table.nbytes / table.num_rows
    spec = ShardSpec(rows_per_shard=1000, max_shard_bytes=math.ceil(per_row * 30), row_group_size=8)
    plans = plan_shards(table, "data", "train", spec)
    assert [p.rows for p in plans] == [30, 30, 30, 10]  # the byte target wins over 1000 rows
    assert [(p.start, p.stop) for p in plans] == [(0, 30), (30, 60), (60, 90), (90, 100)]
    written = encode_shards(table, "data", "train", spec)
    meta = pq.ParquetFile(io.BytesIO(written[0][1])).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [8, 8, 8, 6]
    ids = [r for _, d in written for r in pq.read_table(io.BytesIO(d)).column("id").to_pylist()]
    assert ids == table.column("id").to_pylist()  # every row once, in order


def test_zstd_level_is_applied():
    table = to_table([row(i % 5) for i in range(2000)], ROW_SCHEMA)
    fast = encode_shards(table, "data", "train", ShardSpec(rows_per_shard=5000, compression_level=1))[0][1]
    small = encode_shards(table, "data", "train", ShardSpec(rows_per_shard=5000, compression_level=19))[0][1]
    assert len(small) < len(fast)
    assert pq.read_table(io.BytesIO(small)).equals(pq.read_table(io.BytesIO(fast)))


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
    shards = [s for s, _ in encode_shards(to_table([row(i) for i in range(4)], ROW_SCHEMA), "data", "train", ShardSpec(rows_per_shard=2))]
    datas = [d for _, d in encode_shards(to_table([row(i) for i in range(4)], ROW_SCHEMA), "data", "train", ShardSpec(rows_per_shard=2))]
    manifest = {"shards": [s.entry() for s in shards], "rejected_shards": []}
    files = {s.path: d for s, d in zip(shards, datas)}
    assert verify_manifest(manifest, files, sha256_bytes) == []
    files[shards[0].path] = b"corrupt"
    files["data/extra.parquet"] = b"x"
    files[shards[1].path] = None
    problems = verify_manifest(manifest, files, sha256_bytes)
    assert len(problems) == 3
    assert any("sha256" in p for p in problems) and any("missing" in p for p in problems) and any("does not list" in p for p in problems)
