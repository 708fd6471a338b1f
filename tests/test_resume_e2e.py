"""Resume: kill a build mid-generation, rerun it, and check that only the missing
batches were generated and that the dataset equals an uninterrupted build's."""

from __future__ import annotations

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

SEED_COUNT, BATCH = 8, 2
N_BATCHES = SEED_COUNT // BATCH


def generation_runs(client, flow_run_id) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [r for r in runs if r.name.startswith("teacher-generate")]


def latest_flow_run(client, after: float):
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=5)
    runs = [r for r in runs if r.created and r.created.timestamp() >= after - 1]
    return runs[0] if runs else None


def data_rows(out) -> list[dict]:
    rows = [r for p in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    # run_id and created_at say which run published a row and when it was generated
    return sorted(({k: v for k, v in r.items() if k not in ("run_id", "created_at")} for r in rows), key=lambda r: r["id"])


def test_killed_build_resumes_only_missing_batches(prefect_api, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_TASKS_REFRESH_CACHE, temporary_settings

    from distillery.recipe import build_recipe
    from flows.distill import distill

    data = tiny_recipe_dict(str(SEEDS), str(tmp_path / "resumed"))
    data["source"]["limit"] = SEED_COUNT
    data["teacher"]["batch_size"] = BATCH
    data["sampling"].update(temperature=0.8, max_tokens=64)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results")}
    cmd = [sys.executable, "-m", "distillery.cli", "run", str(recipe_file)]

    started = time.time()
    child = procs.spawn(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with get_client(sync_client=True) as client:
        killed_run = None
        deadline = time.monotonic() + 900  # engine start and two batches, on a busy machine
        while time.monotonic() < deadline and child.poll() is None:
            killed_run = killed_run or latest_flow_run(client, started)
            if killed_run and sum(r.state_type.value == "COMPLETED" for r in generation_runs(client, killed_run.id)) >= 2:
                procs.kill(child)
                break
            time.sleep(0.1)
        child.wait()
        assert child.returncode == -signal.SIGKILL, "the build should have been killed mid-generation"
        done_before = sum(r.state_type.value == "COMPLETED" for r in generation_runs(client, killed_run.id))
        assert 2 <= done_before < N_BATCHES
        assert not (tmp_path / "resumed" / "manifest.json").exists()

        rerun_started = time.time()
        rerun = procs.run(cmd, timeout=1200, env=env, cwd=ROOT)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        resumed_run = latest_flow_run(client, rerun_started)
        states = [r.state_name for r in generation_runs(client, resumed_run.id)]
    assert len(states) == N_BATCHES
    assert states.count("Cached") == done_before  # finished batches came from the cache
    assert states.count("Completed") == N_BATCHES - done_before  # only the missing ones ran

    with temporary_settings({PREFECT_TASKS_REFRESH_CACHE: True}):
        fresh = dict(data, output={**data["output"], "uri": str(tmp_path / "uninterrupted")})
        distill(build_recipe(fresh))
    resumed, reference = data_rows(tmp_path / "resumed"), data_rows(tmp_path / "uninterrupted")
    assert len(resumed) == SEED_COUNT
    assert resumed == reference
