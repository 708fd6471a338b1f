"""The commit protocol of tasks/write.py, on local disk and on a real S3 server (SeaweedFS):
staged shards, commit, manifest last and created only once. No engine: the rows are the
Self-Instruct seed tasks with their human-written answers."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest

from distillery.adapters.storage import PublishConflict, open_dataset
from distillery.recipe import Recipe
from distillery.report import MANIFEST, build_manifest, summarize
from distillery.schema import ROW_SCHEMA, content_id, rejects_table, to_table
from distillery.shards import ShardSpec, sha256_bytes
from tasks.write import STAGING, publish

NOW = datetime(2026, 11, 22, tzinfo=timezone.utc)


def seed_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        msgs = [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["instances"][0]["output"]}]
        rows.append({
            "id": content_id(msgs), "messages": msgs, "prompt": r["instruction"], "response": r["instances"][0]["output"],
            "instruction": r["instruction"], "input": r["instances"][0]["input"], "seed_id": r["id"], "sample_index": 0,
            "teacher": "human", "teacher_model": "self-instruct-seeds", "sampling": "{}", "run_id": "r", "created_at": NOW,
        })
    return rows


@pytest.fixture(params=["local", "s3"])
def dataset_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "ds"), {}
    server = request.getfixturevalue("seaweed")
    return f"s3://{server.bucket}/{tmp_path.name}/ds", server.storage_options()


def publish_rows(uri, options, rows, run_id, previous_run=None, rows_per_shard=50, rejected=()):
    ds = open_dataset(uri, retries=2, backoff=0.1, **options)
    tables = [(to_table(rows, ROW_SCHEMA), "data", "train"), (rejects_table(list(rejected)), "rejected", "rejected")]

    def make(data, rejects):
        summary = summarize(len(rows), 1, len(rows), rows, [], {"write": 0.0})
        return build_manifest("seeds", run_id, NOW.isoformat(), Recipe().model_dump(mode="json"), {}, data, rejects, summary, {},
                              key=run_id, attempt=run_id)

    return ds, publish(ds, tables, ShardSpec(rows_per_shard=rows_per_shard, row_group_size=16), make, previous_run, attempt=run_id)


def read_published(ds) -> list[str]:
    """Row ids, read only through the manifest, each shard checked against it."""
    manifest = json.loads(ds.read(MANIFEST))
    ids = []
    for entry in manifest["shards"]:
        data = ds.read(entry["path"])
        assert sha256_bytes(data) == entry["sha256"] and len(data) == entry["bytes"]
        table = pq.read_table(io.BytesIO(data))
        assert table.num_rows == entry["rows"]
        ids += table.column("id").to_pylist()
    return ids


def test_publish_commits_every_row_once_and_cleans_staging(dataset_uri, seed_records):
    uri, options = dataset_uri
    rows = seed_rows(seed_records)
    ds, manifest = publish_rows(uri, options, rows, "run-1")
    assert [e["path"] for e in manifest["shards"]] == [f"data/train-0000{i}-of-00004.parquet" for i in range(4)]
    assert manifest["rows"] == 175
    assert read_published(ds) == [r["id"] for r in rows]
    assert ds.list(STAGING) == []
    assert sorted(ds.list("data")) == [e["path"] for e in manifest["shards"]]


def test_rerun_replaces_the_dataset_and_drops_stale_shards(dataset_uri, seed_records):
    uri, options = dataset_uri
    rows = seed_rows(seed_records)
    publish_rows(uri, options, rows, "run-1", rows_per_shard=20)  # 9 shards
    ds, manifest = publish_rows(uri, options, rows[:100], "run-2", previous_run="run-1", rows_per_shard=60)
    assert ds.list("data") == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    assert read_published(ds) == [r["id"] for r in rows[:100]]
    assert json.loads(ds.read(MANIFEST))["run_id"] == "run-2"


def test_a_second_writer_cannot_publish_over_the_first(dataset_uri, seed_records):
    uri, options = dataset_uri
    rows = seed_rows(seed_records)
    ds, first = publish_rows(uri, options, rows, "run-A")
    # run-B started when the folder was empty; run-A published while it generated.
    with pytest.raises(PublishConflict, match="another writer published run run-A"):
        publish_rows(uri, options, rows[:10], "run-B", previous_run=None)
    assert json.loads(ds.read(MANIFEST))["run_id"] == "run-A"
    assert read_published(ds) == [r["id"] for r in rows]  # A's shards untouched
    assert ds.list(STAGING) == []


def test_manifest_create_is_conditional(dataset_uri):
    uri, options = dataset_uri
    ds = open_dataset(uri, retries=2, backoff=0.1, **options)
    ds.create("marker.json", b'{"writer": 1}')
    with pytest.raises(PublishConflict, match="another writer published this dataset first"):
        ds.create("marker.json", b'{"writer": 2}')
    assert ds.read("marker.json") == b'{"writer": 1}'


def test_leftovers_of_a_crashed_attempt_are_never_published(dataset_uri, seed_records):
    uri, options = dataset_uri
    ds = open_dataset(uri, retries=2, backoff=0.1, **options)
    ds.write(f"{STAGING}/dead-attempt/data/train-00000-of-00009.parquet", b"half a shard")
    ds.write("data/train-00007-of-00009.parquet", b"committed by a build that died before its manifest")
    ds, manifest = publish_rows(uri, options, seed_rows(seed_records), "run-1")
    assert ds.list(STAGING) == []
    assert sorted(ds.list("data")) == [e["path"] for e in manifest["shards"]]
    assert len(read_published(ds)) == 175
