"""The deploy path a Prefect user takes, with Prefect's own commands from the repository root
and no DISTILLERY_HOME: create the work pool, `prefect deploy --all`, start a worker, run a
deployment, and watch the run. A worker whose DISTILLERY_HOME points nowhere fails its runs with
a message that names the variable."""

from __future__ import annotations

import json
import re
import time

import pytest

import procs
from conftest import ROOT, tiny_recipe_dict

pytestmark = [pytest.mark.engine, pytest.mark.server]

DEADLINE_S = 900


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A Prefect server with its own PREFECT_HOME; the pool and deployments made with the CLI."""
    from distillery.adapters import prefect_api as api

    home = tmp_path_factory.mktemp("deploy-home")
    with procs.prefect_server(home, PREFECT_WORKER_QUERY_SECONDS="2") as (env, _):
        env.pop("DISTILLERY_HOME", None)
        api.prefect_cli(["work-pool", "create", api.POOL, "--type", "process"], env)
        deployed = api.prefect_cli(["--no-prompt", "deploy", "--all"], env)
        yield env, home, deployed


@pytest.fixture
def start_worker(server):
    """`prefect worker start --pool distillery-process` in its own process group, killed whole
    (its flow-run processes and their engines too) when the test ends, passed or not."""
    from distillery.adapters import prefect_api as api

    env, home, _ = server
    started = []

    def start(extra_env: dict | None = None):
        log = open(home / f"worker-{len(started)}.log", "ab")
        started.append((api.start_worker({**env, **(extra_env or {})}, log, new_session=True), log))
        return home / f"worker-{len(started) - 1}.log"

    yield start
    for proc, log in started:
        api.stop(proc)
        log.close()


def run_deployment(env, recipe: dict) -> str:
    """`prefect deployment run` with the recipe as a JSON parameter; the new flow run's id."""
    from distillery.adapters import prefect_api as api

    done = api.prefect_cli(["deployment", "run", "distill/distill-demo", "--param", f"recipe={json.dumps(recipe)}"], env)
    found = re.search(r"UUID:\s*([0-9a-f-]{36})", done.stdout)
    assert found, done.stdout
    return found.group(1)


def wait_final(env, run_id: str, worker_log):
    """The flow run once its state is final (polled through the API), within DEADLINE_S."""
    from prefect.client.orchestration import SyncPrefectClient

    deadline = time.monotonic() + DEADLINE_S
    with SyncPrefectClient(env["PREFECT_API_URL"]) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            assert time.monotonic() < deadline, (f"run {run_id} not final after {DEADLINE_S} s: {run.state}", worker_log.read_text()[-3000:])
            time.sleep(3)


def tiny_recipe(out) -> dict:
    """conftest's tiny recipe (its teacher settings), 4 seeds by a path relative to the checkout:
    it resolves only if the pull step put the run in the project folder."""
    recipe = tiny_recipe_dict("data/self_instruct_seed_tasks.jsonl", str(out))
    recipe["source"]["limit"] = 4
    recipe["sampling"]["max_tokens"] = 16
    recipe["judge"]["max_tokens"] = 24
    return recipe


def test_deploy_all_from_the_root_declares_every_deployment(server):
    import yaml
    from prefect.client.orchestration import SyncPrefectClient

    env, _, deployed = server
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    with SyncPrefectClient(env["PREFECT_API_URL"]) as client:
        deployments = client.read_deployments()
    assert sorted(d.name for d in deployments) == sorted(d["name"] for d in declared), deployed.stdout[-2000:]
    assert all(d.pull_steps == [{"distillery.adapters.deploy_steps.enter_project": {}}] for d in deployments)


def test_a_worker_with_a_missing_distillery_home_fails_the_run_and_says_so(server, start_worker, tmp_path):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from distillery.adapters import prefect_api as api

    env, _, _ = server
    missing = tmp_path / "no-such-checkout"
    worker_log = start_worker({"DISTILLERY_HOME": str(missing)})
    out = tmp_path / "never"
    run_id = run_deployment(env, tiny_recipe(out))
    run = wait_final(env, run_id, worker_log)

    assert run.state.type.value in ("FAILED", "CRASHED"), run.state
    message = run.state.message or ""
    assert "DISTILLERY_HOME" in message and str(missing) in message and "prefect worker start" in message, message
    inspected = api.prefect_cli(["flow-run", "inspect", run_id, "--output", "json"], env)
    assert "DISTILLERY_HOME" in json.loads(inspected.stdout)["state"]["message"]
    assert not out.exists()

    # the flow-run process sends its logs in batches, possibly after the state changed: wait for them
    deadline = time.monotonic() + 300
    only_this_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
    with SyncPrefectClient(env["PREFECT_API_URL"]) as client:
        while True:
            logs = [e.message for e in client.read_logs(only_this_run)]
            if any("DISTILLERY_HOME" in line for line in logs):
                break
            assert time.monotonic() < deadline, (logs, worker_log.read_text()[-3000:])
            time.sleep(2)


def test_a_worker_without_distillery_home_runs_the_deployment(server, start_worker, tmp_path):
    env, _, _ = server
    assert "DISTILLERY_HOME" not in env
    worker_log = start_worker()
    out = tmp_path / "ds"
    run_id = run_deployment(env, tiny_recipe(out))
    run = wait_final(env, run_id, worker_log)
    assert run.state.is_completed(), (run.state, worker_log.read_text()[-3000:])

    manifest = json.loads((out / "manifest.json").read_text())
    s = manifest["summary"]
    assert s["rows_in"] == 4 and s["rows_in"] == s["kept"] + s["rejected"]
    assert manifest["run_id"] == run_id
    assert manifest["recipe"]["teacher"]["max_model_len"] == 2048 and manifest["recipe"]["sampling"]["max_tokens"] == 16
