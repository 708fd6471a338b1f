"""Resume by shard: kill a build mid-generation, rerun it, and check that only the
unfinished shards were generated and that the dataset equals an uninterrupted build's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

import procs
import yaml

from conftest import ROOT, SEEDS, tiny_recipe_dict

pytestmark = pytest.mark.engine

SEED_COUNT, SHARD = 8, 2
N_SHARDS = SEED_COUNT // SHARD


def data_rows(out) -> list[dict]:
    rows = [r for p in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    # run_id and created_at say which run published a row and when it was generated
    return sorted(({k: v for k, v in r.items() if k not in ("run_id", "created_at")} for r in rows), key=lambda r: r["id"])


def finished_shards(out) -> list[str]:
    """Generation shards whose completion record is written (records are written last, whole)."""
    return sorted(p.name for p in (out / "_temporary" / "test-build" / "generate-teacher").glob("part-*.done.json"))


def test_killed_build_resumes_only_unfinished_shards(prefect_api, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from distillery.recipe import build_recipe
    from flows.distill import distill

    out = tmp_path / "resumed"
    data = tiny_recipe_dict(str(SEEDS), str(out))
    data["source"]["limit"] = SEED_COUNT
    data["teacher"]["batch_size"] = SHARD
    data["output"]["stage_rows"] = SHARD  # four shards of two prompts
    data["sampling"].update(temperature=0.8, max_tokens=64)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(data))
    # A cache of its own: the rerun must regenerate what the killed run had not recorded.
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results")}
    cmd = [sys.executable, "-m", "distillery.commands.cli", "run", str(recipe_file)]

    child = procs.spawn(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900  # engine start and two shards, on a busy machine
    while time.monotonic() < deadline and child.poll() is None:
        if len(finished_shards(out)) >= 2:
            procs.kill(child)
            break
        time.sleep(0.1)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the build should have been killed mid-generation"
    done_before = len(finished_shards(out))
    assert 2 <= done_before < N_SHARDS
    assert not (out / "manifest.json").exists()

    rerun = procs.run(cmd, timeout=1200, env=env, cwd=ROOT)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    # finished shards were read back; only the unfinished ones were generated
    assert summary["staged_shards"]["generate-teacher"] == {"shards": N_SHARDS, "ran": N_SHARDS - done_before}
    assert summary["staged_shards"]["load"]["ran"] == 0  # the source had not changed
    assert not (out / "_temporary").exists()

    fresh = dict(data, output={**data["output"], "uri": str(tmp_path / "uninterrupted")})
    distill(build_recipe(fresh))
    resumed, reference = data_rows(out), data_rows(tmp_path / "uninterrupted")
    assert len(resumed) == SEED_COUNT
    assert resumed == reference
