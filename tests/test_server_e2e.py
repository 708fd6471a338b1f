"""A real Prefect server on 127.0.0.1 with its own PREFECT_HOME, the deployments
from deployments/prefect.yaml, a process worker, and `distillery trigger`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT

pytestmark = pytest.mark.engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from distillery.adapters import prefect_api as api

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = api.server_env(port, str(home))
    env["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"] = "2"
    log = open(home / "server.log", "ab")
    proc = api.start_server(env, port, log)
    worker = None
    try:
        api.prepare(env)
        worker = api.start_worker(env, log)
        yield env, home
    finally:
        api.stop(*(p for p in (worker, proc) if p is not None))
        log.close()


def trigger(env, *args):
    return subprocess.run([sys.executable, "-m", "distillery.cli", "trigger", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)


def client(env):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(env["PREFECT_API_URL"])


def test_trigger_waits_for_a_completed_run_and_is_idempotent(server, tmp_path):
    env, home = server
    out = tmp_path / "ds"
    args = ["distill/distill-demo", "--set", "source.limit=4", "--set", "sampling.max_tokens=16",
            "--set", "judge.max_tokens=24", "--set", f"output.uri={out}", "--idempotency-key", "nightly-2026-11-22"]
    first = trigger(env, *args, "--wait")
    assert first.returncode == 0, (first.stdout, first.stderr[-3000:], (home / "server.log").read_text()[-3000:])
    assert "COMPLETED" in first.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["rows_in"] == 4
    assert manifest["summary"]["rows_in"] == manifest["summary"]["kept"] + manifest["summary"]["rejected"]
    assert (out / "report.md").read_text().startswith("# self-instruct-demo: run report")

    again = trigger(env, *args)
    assert again.returncode == 0
    assert again.stdout.split()[2] == first.stdout.split()[2]  # the same flow run id
    with client(env) as c:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        dep = c.read_deployment_by_name("distill/distill-demo")
        runs = c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
        assert len(runs) == 1
        keys = {a.key for a in c.read_artifacts()}
        types = {a.type for a in c.read_artifacts()}
    assert {"self-instruct-demo-report", "self-instruct-demo-sample"} <= keys
    assert {"markdown", "table", "progress"} <= types


def test_bad_override_is_refused_before_any_run(server):
    env, _ = server
    bad = trigger(env, "distill/distill-demo", "--set", "sampling.temperature=9")
    assert bad.returncode == 2 and "sampling.temperature" in bad.stderr
    missing = trigger(env, "distill/nope")
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_schedule_is_inactive_until_turned_on_then_creates_runs(server):
    env, _ = server
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    scheduled = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))
    with client(env) as c:
        dep = c.read_deployment_by_name("preferences/preferences-demo")
        schedules = c.read_deployment_schedules(dep.id)
        assert schedules and all(not s.active for s in schedules)
        only = DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
        time.sleep(5)  # two scheduler loops: still nothing for an inactive schedule
        assert c.read_flow_runs(deployment_filter=only, flow_run_filter=scheduled) == []
        c.update_deployment_schedule(dep.id, schedules[0].id, active=True)
        deadline = time.monotonic() + 90
        runs = []
        while time.monotonic() < deadline and not runs:
            time.sleep(2)
            runs = c.read_flow_runs(deployment_filter=only, flow_run_filter=scheduled)
        assert runs, "an active schedule should get scheduled runs"
        assert all(r.expected_start_time.weekday() == 0 and r.expected_start_time.hour == 4 for r in runs)
