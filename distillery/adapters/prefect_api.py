"""The Prefect API: a local server, its work pool and worker, deployments, triggers.

`distillery serve` and the server tests use the same helpers, so what a person
clicks through is what the tests check.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from distillery.errors import DistilleryError
from distillery.recipe import apply_overrides, build_recipe

POOL = "distillery-process"
ENGINE_LIMIT_TAG = "gpu"
ROOT = Path(__file__).resolve().parents[2]
_GROUP_LEADERS: set[int] = set()  # pids of processes started in their own session
_START_TIMEOUT_S = 300  # a first start migrates its database: minutes on a busy machine


class PrefectError(DistilleryError, RuntimeError):
    """The Prefect server, worker or a deployment did not do what was asked."""


def server_env(port: int, home: str | None = None) -> dict:
    env = dict(os.environ)
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["DO_NOT_TRACK"] = "1"  # the client side (workers, flow runs) would report usage too
    env["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
    env.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "distillery")  # storage retries show in the run's logs
    if home:
        env["PREFECT_HOME"] = home
    return env


def _prefect() -> str:
    found = shutil.which("prefect", path=os.path.dirname(sys.executable)) or shutil.which("prefect")
    if not found:
        raise PrefectError("the `prefect` command is not on PATH; run `make install`")
    return found


def prefect_cli(args: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([_prefect(), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise PrefectError(f"`prefect {' '.join(args)}` failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc


def start_server(env: dict, port: int, log, new_session: bool = False) -> subprocess.Popen:
    """A Prefect server (SQLite under PREFECT_HOME) on 127.0.0.1, waited on until healthy.

    `new_session` starts it in its own process group, which `stop` ends whole (tests do this)."""
    proc = _spawn(["server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log, new_session)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop(proc)
            raise PrefectError(f"the Prefect server exited with code {proc.returncode}; see its log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(1)
    stop(proc)
    raise PrefectError(f"the Prefect server on 127.0.0.1:{port} did not become healthy in {_START_TIMEOUT_S} s; see its log")


def prepare(env: dict) -> None:
    """The process work pool, the engine concurrency limit, and the deployments of the root
    prefect.yaml (run from the repository root, as a Prefect user runs `prefect deploy --all`)."""
    prefect_cli(["work-pool", "create", POOL, "--type", "process", "--overwrite"], env)
    prefect_cli(["concurrency-limit", "create", ENGINE_LIMIT_TAG, "1"], env, check=False)
    prefect_cli(["--no-prompt", "deploy", "--all"], env)


def start_worker(env: dict, log, new_session: bool = False) -> subprocess.Popen:
    """A process worker on the pool. Its flow-run processes (and their engines) stay in its process group."""
    return _spawn(["worker", "start", "--pool", POOL], env, log, new_session)


def _spawn(args: list[str], env: dict, log, new_session: bool) -> subprocess.Popen:
    proc = subprocess.Popen([_prefect(), *args], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=new_session)
    if new_session:
        _GROUP_LEADERS.add(proc.pid)
    return proc


def _signal(proc: subprocess.Popen, sig: int) -> None:
    """To the whole process group when `proc` leads one (started with new_session), else to it."""
    try:
        if proc.pid in _GROUP_LEADERS:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass


def stop(*procs: subprocess.Popen) -> None:
    """Stop in the order given (workers before the server), politely, then firmly; a process
    started with new_session goes with its whole group (a worker's flow runs and engines)."""
    for proc in procs:
        if proc.poll() is None:
            _signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait()
        _signal(proc, signal.SIGKILL)  # what the group leader left behind
        _GROUP_LEADERS.discard(proc.pid)


def trigger(deployment: str, overrides: list[str] | None = None, wait: bool = False,
            idempotency_key: str | None = None, timeout: float | None = None):
    """Run a deployment with its default recipe plus `overrides`; the FlowRun comes back.

    With `wait`, returns once the run is final. The same `idempotency_key`
    returns the run it first created instead of starting another.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(deployment)
    except ObjectNotFound:
        raise PrefectError(f"deployment {deployment!r} not found; names look like 'distill/distill-demo' (`prefect deployment ls`)") from None
    recipe = apply_overrides(dict(dep.parameters.get("recipe") or {}), overrides or [])
    build_recipe(recipe, f"deployment {deployment}")  # fail here, not in the worker
    return run_deployment(
        deployment, parameters={"recipe": recipe}, idempotency_key=idempotency_key,
        timeout=(timeout if wait else 0), poll_interval=2, as_subflow=False,
    )


__all__ = ["PrefectError", "prepare", "server_env", "start_server", "start_worker", "stop", "trigger"]
