"""Shared fixtures. Engine tests share the process's one vLLM engine (it takes
tens of seconds to start), so every flow run here uses the same teacher settings."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "data" / "self_instruct_seed_tasks.jsonl"

# Prefect's ephemeral API keeps its SQLite database under PREFECT_HOME: keep the
# suite's runs out of the user's own.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="distillery-prefect-"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")  # a busy machine
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client-side usage data


def read_seeds() -> list[dict]:
    return [json.loads(line) for line in SEEDS.read_text().splitlines()]


def published(out: Path) -> tuple[dict, list[dict], list[dict]]:
    """A local build's manifest and its kept and rejected rows, read through the manifest."""
    import pyarrow.parquet as pq

    manifest = json.loads((out / "manifest.json").read_text())
    kept = [r for e in manifest["shards"] for r in pq.read_table(out / e["path"]).to_pylist()]
    rejected = [r for e in manifest["rejected_shards"] for r in pq.read_table(out / e["path"]).to_pylist()]
    return manifest, kept, rejected


@pytest.fixture(scope="session")
def seed_records() -> list[dict]:
    records = read_seeds()
    assert len(records) == 175, "the shared Self-Instruct seed file should hold 175 tasks"
    return records


def tiny_recipe_dict(seed_uri: str, out_uri: str) -> dict:
    """Short answers on a handful of seeds; the teacher settings are the ones every engine test shares."""
    return {
        "name": "test-build",
        "source": {"uri": seed_uri, "instruction_column": "instruction", "input_column": "instances.0.input", "id_column": "id"},
        "teacher": {"max_model_len": 2048, "batch_size": 64},
        "sampling": {"temperature": 0.0, "max_tokens": 24, "seed": 0},
        "dedup": {"field": "prompt", "ngram": 3, "num_perm": 128, "threshold": 0.8},
        "judge": {"max_tokens": 32, "min_score": 1},
        "output": {"uri": out_uri, "rows_per_shard": 4},
    }


@pytest.fixture(scope="session", autouse=True)
def _close_engines_at_exit():
    """Shut the shared engine down while logging still works, not at interpreter exit."""
    yield
    import sys

    if "distillery.adapters.engine" in sys.modules:
        sys.modules["distillery.adapters.engine"].close_engines()


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The default model's safetensors folder (converted once into the cache)."""
    from distillery.adapters.models import resolve_model

    return Path(resolve_model("smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect API (a temporary server on 127.0.0.1 with its own database)
    for the flows run in this process, stopped cleanly when the session ends."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):  # sized for a busy machine
        yield


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A real S3 server (SeaweedFS `weed mini`) on 127.0.0.1, with a key, for the session."""
    import secrets

    from seaweed import SeaweedFS

    # A random key id too: the tests look for the key id and the secret in logs and files.
    server = SeaweedFS(tmp_path_factory.mktemp("seaweed") / "data", access_key="AKID" + secrets.token_hex(8).upper())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster():
    """A local 2-node Ray cluster (1 CPU each) on 127.0.0.1 for the session; this process is
    its driver and RAY_ADDRESS points `distillery run` children at it. Nothing of it may
    outlive the session."""
    import shutil

    from raycluster import LocalRayCluster

    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    cluster = LocalRayCluster(folder).start()
    try:
        yield cluster
    finally:
        left = cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
    assert not left, f"Ray processes outlived the cluster's shutdown and had to be killed: {left}"


@pytest.fixture(scope="session")
def ray_engines(ray_cluster):
    """One pool of 2 engines (one per node) for the whole session, with the teacher settings
    every engine test shares: engine start inside an actor takes minutes on a busy machine."""
    from distillery.adapters.engine import EngineSpec
    from distillery.adapters.ray_engines import start_pool, stop_engines
    from distillery.execution import ExecutionConfig

    # Both nodes are this machine: each engine on a core of its own, as on two real nodes.
    binds = [str(core) for core in sorted(os.sched_getaffinity(0))[:2]]
    execution = ExecutionConfig(backend="ray", engines=2, engine_cpu_binds=binds)
    pool, _ = start_pool(EngineSpec(model="smollm2-135m-instruct", max_model_len=2048), execution)
    yield pool
    stop_engines(None, pool.namespace)


@pytest.fixture(autouse=True)
def _kill_what_the_test_started():
    """Whatever a test started through procs.spawn/run and left running (it failed, or forgot)
    is killed with its whole process group when the test ends. Servers that outlive a test are
    started with procs.spawn(..., lasting=True) and stopped by their fixtures."""
    import procs

    before = procs.started()
    yield
    procs.kill_left_since(before)


@pytest.hookimpl(trylast=True)  # after pytest's own sessionfinish has torn the session fixtures down
def pytest_sessionfinish(session, exitstatus):
    """Nothing the suite started may outlive it: kill what is left and fail the run loudly."""
    import procs

    groups = procs.all_started()
    if "distillery.adapters.prefect_api" in sys.modules:
        groups |= set(sys.modules["distillery.adapters.prefect_api"]._GROUP_LEADERS)
    left = procs.members(groups)
    for pgid in groups:
        procs.kill(pgid)
    if left:
        lines = "\n".join(f"  pid {pid} (group {pgid}): {cmd}" for pid, pgid, cmd in left)
        session.config.get_terminal_writer().line(f"\nprocesses left running by the suite, now killed:\n{lines}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
