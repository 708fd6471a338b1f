"""The `ray` execution backend on a real local 2-node Ray cluster (127.0.0.1 only) with a
pool of 2 warm engines (the project's vLLM engine in Ray actors, one per node).

- the cluster listens on loopback only (read from /proc);
- the demo recipe on Ray publishes the same dataset as on the local backend;
- SIGKILL of an engine actor mid-shard: the build completes on the other engine, Ray
  restarts the killed one, and the dataset equals the uninterrupted build's;
- rerunning a finished build is a no-op;
- the dedup shuffle on the cluster removes exactly what the local deduplicator removes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

import procs
from conftest import ROOT, SEEDS, read_seeds

pytestmark = pytest.mark.ray

LIMIT, STAGE_ROWS = 16, 2  # 8 shards: 4 per engine, so a kill lands mid-stage


def demo_recipe(out: Path, **execution) -> dict:
    """The README's demo recipe on the first LIMIT seed tasks, in shards of STAGE_ROWS."""
    data = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    data["source"].update(uri=str(SEEDS), limit=LIMIT)
    data["output"].update(uri=str(out), stage_rows=STAGE_ROWS)
    data["execution"] = execution
    return data


def on_ray(out: Path, cluster) -> dict:
    """The demo recipe on the cluster: dedup shuffled there too (dedup_min_rows 0); CPU tasks
    reserve no CPU, since each node's one CPU is its engine's."""
    binds = [str(core) for core in sorted(os.sched_getaffinity(0))[:2]]  # both nodes are this machine
    return demo_recipe(out, backend="ray", ray_address=cluster.address, engines=2, task_cpus=0, dedup_min_rows=0,
                       dedup_partitions=3, engine_cpu_binds=binds)


def tables(out: Path) -> list:
    """The published data and rejected shards, in manifest order, without the two columns that
    say which run published a row and when it was generated."""
    manifest = json.loads((out / "manifest.json").read_text())
    entries = manifest["shards"] + manifest["rejected_shards"]
    return [(e["path"], pq.read_table(out / e["path"]).drop_columns(["run_id", "created_at"])) for e in entries]


def build(data: dict):
    from distillery.recipe import build_recipe
    from flows.distill import distill

    return distill(build_recipe(data), return_state=True)


@pytest.fixture(scope="module")
def builds(prefect_api, ray_engines, ray_cluster, tmp_path_factory):
    """The demo recipe built on the local backend and on the cluster."""
    from distillery.adapters.ray_engines import list_engines

    root = tmp_path_factory.mktemp("ray-demo")
    local = build(demo_recipe(root / "local")).result()
    warm = {e["name"]: e["pid"] for e in list_engines("distillery")}
    ray_state = build(on_ray(root / "ray", ray_cluster))
    after = {e["name"]: e["pid"] for e in list_engines("distillery")}
    assert after == warm and set(ray_engines.names) <= set(warm), "the build did not reuse the warm engines"
    return root, local, ray_state.result(), ray_state


def test_cluster_listens_on_loopback_only(ray_cluster, ray_engines):
    import ray

    assert sum(1 for n in ray.nodes() if n["Alive"]) == 2 and ray.cluster_resources()["CPU"] == 2
    listening = ray_cluster.listening()
    assert listening, "found no listening socket of the cluster: the /proc scan is broken"
    assert {ip for ip, _ in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening


@pytest.mark.engine
def test_demo_on_ray_publishes_what_the_local_backend_does(builds):
    root, local, ray_result, _ = builds
    assert ray_result["summary"]["kept"] > 0 and not ray_result.get("unchanged")
    here, there = tables(root / "local"), tables(root / "ray")
    assert [(p, t.num_rows) for p, t in here] == [(p, t.num_rows) for p, t in there]
    for (path, a), (_, b) in zip(here, there):
        assert a.equals(b), f"{path} differs between the local and the ray backend"
    for key in ("rows_in", "generated", "kept", "rejected", "rejected_by_reason", "dedup_clusters"):
        assert local["summary"].get(key) == ray_result["summary"].get(key), key
    staged = ray_result["summary"]["staged_shards"]
    assert staged["generate-teacher"] == {"shards": LIMIT // STAGE_ROWS, "ran": LIMIT // STAGE_ROWS}


@pytest.mark.engine
def test_task_runs_carry_shards_not_rows(builds):
    """One Prefect task run per shard and stage on the cluster, named by stage and shard."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    _, _, _, state = builds
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    names = {r.name for r in runs}
    shards = LIMIT // STAGE_ROWS
    for stage in ("render", "fit", "generate-teacher", "signatures", "dedup", "judge", "filter"):
        assert {f"{stage}-{i:05d}" for i in range(shards)} <= names, stage
    assert not any(n.startswith("teacher-generate") for n in names)  # no batch runs in the driver


@pytest.mark.engine
def test_rerunning_a_finished_build_on_ray_is_a_no_op(builds, ray_cluster):
    root, _, first, _ = builds
    out = root / "ray"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = build(on_ray(out, ray_cluster)).result()
    assert again["unchanged"] and again["run_id"] == first["run_id"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.engine
def test_killed_engine_mid_shard_and_the_build_completes_the_same(builds, ray_cluster, ray_engines, tmp_path):
    """SIGKILL one engine actor while generate shards are in flight: its shard fails over to
    the other engine, Ray restarts the killed one, and the dataset equals the uninterrupted one."""
    from distillery.adapters.ray_engines import list_engines
    from prefect.settings import PREFECT_API_URL

    root = builds[0]
    out = tmp_path / "killed"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(on_ray(out, ray_cluster)))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results")}
    child = procs.spawn([sys.executable, "-m", "distillery.commands.cli", "run", str(recipe), "--no-progress"],
                        env=env, cwd=ROOT, stdout=open(tmp_path / "run.log", "wb"), stderr=subprocess.STDOUT)
    generated = out / "_temporary" / "self-instruct-demo" / "generate-teacher"
    shards = LIMIT // STAGE_ROWS
    victim, deadline = None, time.monotonic() + 900
    while victim is None and time.monotonic() < deadline and child.poll() is None:
        done = len(list(generated.glob("part-*.done.json"))) if generated.exists() else 0
        if 1 <= done < shards:
            victim = next(e for e in list_engines("distillery") if e["name"] in ray_engines.names and e["state"] == "ALIVE")
            os.kill(victim["pid"], 9)
            killed_at = done
        time.sleep(0.1)
    assert victim is not None, f"never saw generation mid-way (exit {child.poll()}): {(tmp_path / 'run.log').read_text()[-3000:]}"
    assert child.wait(timeout=1800) == 0, (tmp_path / "run.log").read_text()[-5000:]
    assert killed_at < shards
    here, there = tables(root / "ray"), tables(out)
    assert [(p, t.num_rows) for p, t in here] == [(p, t.num_rows) for p, t in there]
    assert all(a.equals(b) for (_, a), (_, b) in zip(here, there))
    # Ray restarts the killed engine (the pool is whole again for later builds)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        now = {e["name"]: e for e in list_engines("distillery")}
        if now[victim["name"]]["state"] == "ALIVE" and now[victim["name"]]["restarts"] >= 1:
            break
        time.sleep(1)
    assert now[victim["name"]]["restarts"] >= 1 and now[victim["name"]]["pid"] != victim["pid"]


def test_engines_cli_lists_and_refuses_an_unknown_name(ray_cluster, ray_engines):
    ls = procs.run([sys.executable, "-m", "distillery.commands.cli", "engines", "ls", "--json"], timeout=300,
                   cwd=ROOT, env={**os.environ, "RAY_ADDRESS": ray_cluster.address})
    assert ls.returncode == 0, ls.stderr[-2000:]
    listed = {e["name"]: e for e in json.loads(ls.stdout)}
    assert set(ray_engines.names) <= set(listed)
    stop = procs.run([sys.executable, "-m", "distillery.commands.cli", "engines", "stop", "engine-nope-0"], timeout=300,
                     cwd=ROOT, env={**os.environ, "RAY_ADDRESS": ray_cluster.address})
    assert stop.returncode == 2 and "no engine named engine-nope-0" in stop.stderr


def test_dedup_on_the_cluster_removes_what_the_local_deduplicator_does(ray_cluster, tmp_path):
    """Real seed tasks with planted exact and near duplicates, missing and empty texts, in 5
    signature shards: the cluster's shuffle and find_duplicates give the same drop list."""
    from distillery.adapters.ray_stages import dedup_on_cluster
    from distillery.adapters.storage import open_dataset
    from distillery.dedup import DedupParams
    from distillery.stages.dedup import Signatures, find_duplicates, signature_schema
    from distillery.stages.contract import StagedFile
    from distillery.stages.executor import read_table
    from distillery.stages.staged import encode

    seeds = read_seeds()
    texts = [f"{s['instruction']} {s['instances'][0]['input']}".strip() for s in seeds]
    rows = [{"id": f"s{i}", "prompt": t} for i, t in enumerate(texts)]
    rows += [{"id": f"x{i}", "prompt": "  " + texts[i].upper() + " "} for i in range(0, 175, 7)]  # exact (normalized)
    rows += [{"id": f"n{i}", "prompt": texts[i].replace(" the ", " a ", 1) + " please"} for i in range(3, 175, 5)]
    rows += [{"id": f"c{i}", "prompt": texts[10] + f" ({i})"} for i in range(25)]  # one bucket of >16 near copies
    rows += [{"id": "m1"}, {"id": "e1", "prompt": "   "}]
    params = DedupParams(threshold=0.7, ngram=3)
    store = open_dataset(str(tmp_path / "ds"))
    files = []
    for shard, start in enumerate(range(0, len(rows), 80)):
        table = Signatures("prompt", params).run(rows[start : start + 80], shard).rows
        data, sha = encode(table, signature_schema(params.num_perm))
        store.write(f"sig/part-{shard:05d}.parquet", data)
        files.append(StagedFile(f"sig/part-{shard:05d}.parquet", sha, len(data), table.num_rows))
    local, local_counts = find_duplicates([read_table(store, f) for f in files], params, "prompt")
    drops, counts = dedup_on_cluster(store, files, params, "prompt", partitions=3, cpus=0)
    assert local_counts["dropped"] >= 60 and {d["reason"] for d in local} >= {"exact_duplicate", "near_duplicate", "missing_field", "empty_field"}
    assert drops == local
    assert {k: counts[k] for k in local_counts} == local_counts
    assert counts["map_peak_rss_mib"] > 0 and counts["reduce_peak_rss_mib"] > 0
