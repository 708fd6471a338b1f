"""`distillery export --format hf` without an engine: a build published by the real commit
protocol (the Self-Instruct seed tasks with their human-written answers, a system message,
rejected rows and a KD section), exported, then read back as a user's tools read it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest

from distillery.adapters.storage import StorageError, open_dataset
from distillery.commands.export import export_dataset
from distillery.prompts import render_messages
from distillery.recipe import Recipe
from distillery.report import build_manifest, summarize
from distillery.schema import ROW_SCHEMA, content_id, rejects_table, to_table
from distillery.shards import ShardSpec

from conftest import ROOT, read_seeds

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
SYSTEM = "You are a helpful, honest assistant."


def kept_rows(records: list[dict]) -> list[dict]:
    """Rows as generation leaves them in memory: the plain user text under `prompt`."""
    seeds = [{"seed_id": r["id"], "instruction": r["instruction"], "input": r["instances"][0]["input"]} for r in records]
    rows = []
    for seed, record in zip(render_messages(seeds, SYSTEM), records, strict=True):
        answer = record["instances"][0]["output"]
        messages = [*seed["messages"], {"role": "assistant", "content": answer}]
        rows.append({**seed, "id": content_id(seed["messages"], answer), "messages": messages, "response": answer,
                     "sample_index": 0, "teacher": "human", "teacher_model": "self-instruct-seeds", "sampling": "{}",
                     "run_id": "r", "created_at": NOW})
    return rows


@pytest.fixture(scope="module")
def build(tmp_path_factory, model_dir):
    from tasks.kd import kd_section
    from tasks.write import publish

    rows = kept_rows(read_seeds()[:10])
    rejected = [{"seed_id": "x", "stage": "load", "reason": "malformed_json", "raw": "{", "run_id": "r", "created_at": NOW}]
    recipe = Recipe.model_validate({"teacher": {"model": str(model_dir)}, "kd": {"top_k": 4}})
    kd, files = kd_section(recipe, rows)
    out = tmp_path_factory.mktemp("build") / "ds"
    ds = open_dataset(str(out))
    tables = [(to_table(rows, ROW_SCHEMA), "data", "train"), (rejects_table(rejected), "rejected", "rejected")]

    def make(data, rejects):
        summary = summarize(len(rows) + 1, 1, len(rows), rows, rejected, {"write": 0.0})
        manifest = build_manifest("seeds", "r", NOW.isoformat(), recipe.model_dump(mode="json"), {}, data, rejects, summary, {},
                                  key="k", attempt="a")
        return {**manifest, "kd": {**kd, "topk_bytes": 0, "bytes_per_entry": None}}  # as write_dataset adds them

    manifest = publish(ds, tables, ShardSpec(rows_per_shard=4), make, None, attempt="a", files=files)
    return out, rows, manifest


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distillery.commands.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_kept_shards_store_the_plain_prompt_as_prompt_text(build):
    out, rows, manifest = build
    stored = [r for e in manifest["shards"] for r in pq.read_table(out / e["path"]).to_pylist()]
    assert "prompt" not in stored[0]  # TRL would read a string `prompt` column as prompt-completion data
    assert [r["prompt_text"] for r in stored] == [r["prompt"] for r in rows]
    assert stored[0]["messages"][0] == {"role": "system", "content": SYSTEM}


def test_hf_export_is_a_complete_checked_dataset_without_rejected_rows(build, tmp_path, model_dir):
    from datasets import load_dataset

    out, rows, manifest = build
    target = tmp_path / "hf"
    assert export_dataset(str(out), "hf", str(target)) == {"rows": len(rows), "path": str(target)}
    kd_files = sorted(p.relative_to(out).as_posix() for p in (out / "kd").rglob("*") if p.is_file())
    assert kd_files  # the teacher's tokenizer, which kd-check reads
    pictures = sorted(p.name for p in out.glob("*.svg"))
    assert pictures  # the card links them: the answer-length histogram at least
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == sorted(
        [e["path"] for e in manifest["shards"]] + ["README.md", "manifest.json", *kd_files, *pictures])
    assert all((target / f).read_bytes() == (out / f).read_bytes() for f in pictures)
    assert all((target / f).read_bytes() == (out / f).read_bytes() for f in kd_files)
    assert (target / "README.md").read_text() == (out / "README.md").read_text()
    exported = json.loads((target / "manifest.json").read_text())
    assert exported["shards"] == manifest["shards"] and exported["rejected_shards"] == [] and exported["kd"] == manifest["kd"]
    assert exported["export"] == {"format": "hf", "source": str(out), "rejected_rows_left_out": 1}

    shown = cli("inspect", str(target))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "manifest check: OK" in shown.stdout and "1 rejected rows are not part of it" in shown.stdout
    checked = cli("kd-check", str(target), "--student", str(model_dir))
    assert checked.returncode == 0 and "kd-check: OK" in checked.stdout, checked.stdout + checked.stderr

    ds = load_dataset(str(target), split="train", cache_dir=str(tmp_path / "datasets-cache"))  # see test_trainers_e2e.load
    assert sorted(ds["id"]) == sorted(r["id"] for r in rows)
    assert "prompt" not in ds.column_names and "messages" in ds.column_names


def test_hf_export_replaces_an_earlier_export_and_refuses_the_build_itself(build, tmp_path):
    out, rows, manifest = build
    target = tmp_path / "hf"
    (target / "data").mkdir(parents=True)
    (target / "data" / "train-00000-of-00009.parquet").write_bytes(b"stale")
    (target / "rejected").mkdir()
    (target / "rejected" / "rejected-00000-of-00001.parquet").write_bytes(b"stale")
    (target / "kd").mkdir()
    (target / "kd" / "vocab.json").write_bytes(b"another teacher's")
    export_dataset(str(out), "hf", str(target))
    assert sorted(p.name for p in (target / "data").iterdir()) == sorted(e["path"].split("/")[-1] for e in manifest["shards"])
    assert not list((target / "rejected").glob("*.parquet"))
    assert sorted(p.name for p in (target / "kd").iterdir()) == sorted(p.name for p in (out / "kd").iterdir())
    with pytest.raises(StorageError, match="the dataset itself"):
        export_dataset(str(out), "hf", str(out) + "/")
    assert (out / "manifest.json").exists() and list((out / "rejected").glob("*.parquet"))


def test_alpaca_export_reads_prompt_text(build, tmp_path):
    out, rows, _ = build
    target = tmp_path / "a.json"
    export_dataset(str(out), "alpaca", str(target))
    got = json.loads(target.read_text())
    assert got == [{"instruction": r["instruction"], "input": r["input"], "output": r["response"]} for r in rows]
