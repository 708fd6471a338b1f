"""Crashes and outages, on local disk and on a real S3 server (SeaweedFS).

`distillery run` runs in a child process. A failpoint (distillery/faults.py)
holds it at a named place; the test then sends SIGKILL, or stops the S3 server
under it. After each crash the build is run again and its rows are compared,
id by id, with an uninterrupted build: no duplicates, no gaps, and the same
manifest counts.

Generation results are cached (Prefect result persistence), so the children
reuse the uninterrupted build's cache and start no engine, except in the one
case that kills a build in the middle of real generation.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from distillery.adapters.storage import open_dataset
from conftest import ROOT, SEEDS, tiny_recipe_dict
import procs

pytestmark = [pytest.mark.engine, pytest.mark.s3]

SEED_COUNT = 12


def recipe_dict(out_uri: str) -> dict:
    data = tiny_recipe_dict(str(SEEDS), out_uri)
    data["source"]["limit"] = SEED_COUNT
    data["teacher"]["batch_size"] = 4  # 3 generation batches
    data["judge"]["enabled"] = False
    # 3 staged shards of 4 prompts (one batch each); several final shards of several row groups
    data["output"].update(stage_rows=4, rows_per_shard=3, row_group_size=1)
    data["storage"] = {"retries": 3, "retry_backoff_seconds": 0.5}
    return data


def published(uri: str, options: dict) -> tuple[dict, list[str], list[str]]:
    """The manifest and the kept and rejected row ids, read only through the manifest."""
    ds = open_dataset(uri, retries=2, backoff=0.5, **options)
    manifest = json.loads(ds.read("manifest.json"))
    ids = {}
    for key in ("shards", "rejected_shards"):
        ids[key] = []
        for entry in manifest[key]:
            table = pq.read_table(io.BytesIO(ds.read(entry["path"])))
            assert table.num_rows == entry["rows"]
            ids[key] += table.column("id").to_pylist()
    return manifest, ids["shards"], ids["rejected_shards"]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def reference(prefect_api, results_dir, tmp_path_factory):
    """The uninterrupted build; its generation results fill the cache the children read."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from distillery.recipe import build_recipe
    from flows.distill import distill

    out = str(tmp_path_factory.mktemp("reference") / "ds")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: results_dir}):
        distill(build_recipe(recipe_dict(out)))
    manifest, kept, rejected = published(out, {})
    assert len(kept) + len(rejected) >= SEED_COUNT and kept
    return manifest, kept, rejected


class Build:
    """`distillery run` in a child process, optionally held at a failpoint."""

    def __init__(self, tmp_path: Path, uri: str, results: Path, env: dict | None = None, sets: tuple[str, ...] = ()):
        self.recipe = tmp_path / "recipe.yaml"
        self.recipe.write_text(yaml.safe_dump(recipe_dict(uri)))
        self.marker = tmp_path / "failpoint"
        self.sets = [a for s in sets for a in ("--set", s)]
        from prefect.settings import PREFECT_API_URL

        self.env = {**os.environ, **(env or {}), "PREFECT_API_URL": PREFECT_API_URL.value(),
                    "PREFECT_LOCAL_STORAGE_PATH": str(results), "DISTILLERY_FAILPOINT_FILE": str(self.marker)}
        self.env.pop("DISTILLERY_FAILPOINT", None)

    def cmd(self) -> list[str]:
        return [sys.executable, "-m", "distillery.commands.cli", "run", str(self.recipe), *self.sets]

    def start_held(self, point: str) -> subprocess.Popen:
        """The build, held at `point`: returns once the marker names this child and it is waiting."""
        self.marker.unlink(missing_ok=True)
        self.log = open(self.recipe.parent / f"held-{point.replace(':', '-')}.log", "w+")
        child = procs.spawn(self.cmd(), env={**self.env, "DISTILLERY_FAILPOINT": point}, cwd=ROOT,
                            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 900  # engine start plus generation on a busy machine
        while self.held_pid() != child.pid:
            if child.poll() is not None or time.monotonic() > deadline:
                procs.kill(child)
                self.log.seek(0)
                pytest.fail(f"the build never reached failpoint {point} (exit {child.poll()}):\n{self.log.read()[-3000:]}")
            time.sleep(0.05)
        return child

    def held_pid(self) -> int | None:
        try:
            return int(self.marker.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def kill_at(self, point: str) -> None:
        child = self.start_held(point)
        procs.kill(child)
        assert child.returncode == -signal.SIGKILL

    def run(self, timeout: int = 1200) -> subprocess.CompletedProcess:
        return procs.run(self.cmd(), timeout=timeout, env=self.env, cwd=ROOT)


def assert_same_dataset(uri: str, options: dict, reference) -> None:
    ref_manifest, ref_kept, ref_rejected = reference
    manifest, kept, rejected = published(uri, options)
    assert not [i for i, n in Counter(kept).items() if n > 1], "duplicate rows"
    assert sorted(kept) == sorted(ref_kept), "rows missing or extra"
    assert sorted(rejected) == sorted(ref_rejected)
    assert (manifest["rows"], manifest["rejected_rows"]) == (ref_manifest["rows"], ref_manifest["rejected_rows"])
    assert [e["rows"] for e in manifest["shards"]] == [e["rows"] for e in ref_manifest["shards"]]
    assert open_dataset(uri, **options).list("_temporary") == []


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    """(output URI, the child's environment, fsspec options for reading it back)."""
    if request.param == "local":
        return str(tmp_path / "ds"), {}, {}
    server = request.getfixturevalue("seaweed")
    return f"s3://{server.bucket}/{request.node.name.replace('[', '-').rstrip(']')}", server.env(), server.storage_options()


# mid-generation: after the first of three generation batches (shard 0 not recorded yet);
# at a stage boundary: generation's shard 0 recorded, shards 1 and 2 not begun;
# mid-shard in a later stage: dedup's shard 1 written but not recorded;
# mid-shard write of the published shards: after their second row group;
# between commit and manifest: every shard in its final place, no manifest yet.
# With each, the shards of each stage the rerun must redo (the rest are read back).
POINTS = {
    "generate.batch:1": {"load": 0, "generate-teacher": 3, "signatures": 3, "dedup": 3},
    "stage.generate-teacher.shard:1": {"load": 0, "generate-teacher": 2, "signatures": 3, "dedup": 3},
    "stage.dedup.staged:2": {"load": 0, "generate-teacher": 0, "signatures": 0, "dedup": 2},
    "write.row_group:2": {"load": 0, "generate-teacher": 0, "signatures": 0, "dedup": 0},
    "write.committed": {"load": 0, "generate-teacher": 0, "signatures": 0, "dedup": 0},
}


@pytest.mark.parametrize("point", POINTS)
def test_kill_9_then_rerun_gives_the_uninterrupted_dataset(reference, results_dir, storage, point, tmp_path):
    uri, env, options = storage
    build = Build(tmp_path, uri, results_dir, env)
    build.kill_at(point)
    ds = open_dataset(uri, **options)
    assert not ds.exists("manifest.json"), "a killed build must not be published"
    if point == "write.committed":
        assert ds.list("data"), "the shards were committed before the kill"
        inspect = procs.run([sys.executable, "-m", "distillery.commands.cli", "inspect", uri], timeout=600, env=build.env, cwd=ROOT)
        assert inspect.returncode != 0 and "no manifest.json" in inspect.stderr  # readers refuse it

    rerun = build.run()
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    assert_same_dataset(uri, options, reference)
    staged = json.loads(ds.read("manifest.json"))["summary"]["staged_shards"]
    assert {stage: staged[stage]["ran"] for stage in POINTS[point]} == POINTS[point]
    assert {stage: staged[stage]["shards"] for stage in POINTS[point]} == dict.fromkeys(POINTS[point], 3)

    again = build.run()  # and once published, a rerun changes nothing
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert_same_dataset(uri, options, reference)


def test_kill_9_during_real_generation_on_s3(prefect_api, reference, seaweed, tmp_path):
    """The one case with a cold cache: the child really generates when it is killed, and the
    rerun generates only the batches it had not finished."""
    uri = f"s3://{seaweed.bucket}/cold-generation"
    build = Build(tmp_path, uri, tmp_path / "cold-results", seaweed.env())
    build.kill_at("generate.batch:1")
    assert len(list((tmp_path / "cold-results").iterdir())) >= 1  # the first batch was persisted
    rerun = build.run()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same_dataset(uri, seaweed.storage_options(), reference)


@pytest.fixture
def own_s3(tmp_path):
    """A server of its own: these tests stop and restart it."""
    from seaweed import SeaweedFS

    server = SeaweedFS(tmp_path / "weed" / "data")
    server.start()
    yield server
    server.stop()


def test_s3_outage_that_ends_is_ridden_out_by_retries(reference, results_dir, own_s3, tmp_path):
    uri = f"s3://{own_s3.bucket}/outage-short"
    build = Build(tmp_path, uri, results_dir, own_s3.env(), sets=("storage.retries=8", "storage.retry_backoff_seconds=1"))
    child = build.start_held("write.staged")  # every shard staged, nothing committed
    own_s3.stop()
    build.marker.unlink()  # the build goes on into the outage
    time.sleep(5)
    own_s3.start()
    assert child.wait(timeout=900) == 0
    build.log.seek(0)
    log = build.log.read()
    assert "retrying in" in log  # it waited, with backoff, rather than failing
    assert_same_dataset(uri, own_s3.storage_options(), reference)


def test_s3_outage_that_lasts_fails_clearly_and_the_rerun_completes(reference, results_dir, own_s3, tmp_path):
    uri = f"s3://{own_s3.bucket}/outage-long"
    build = Build(tmp_path, uri, results_dir, own_s3.env(), sets=("storage.retries=3", "storage.retry_backoff_seconds=0.5"))
    child = build.start_held("write.staged")
    own_s3.stop()
    build.marker.unlink()
    assert child.wait(timeout=900) == 2
    build.log.seek(0)
    log = build.log.read()
    assert "distillery: error:" in log and "storage did not answer after 3 attempts" in log and uri in log
    assert "Traceback" not in log.split("distillery: error:")[-1]
    assert log.count("retrying in") >= 2

    own_s3.start()
    ds = open_dataset(uri, **own_s3.storage_options())
    assert not ds.exists("manifest.json") and ds.list("data") == []  # nothing half-written was published
    rerun = build.run()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same_dataset(uri, own_s3.storage_options(), reference)
