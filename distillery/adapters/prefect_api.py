"""The Prefect API: a local server, its work pool and worker, deployments, triggers.

`distillery serve` and the server tests use the same helpers, so what a person
clicks through is what the tests check.
"""

from __future__ import annotations

import os
import shutil
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


class PrefectError(DistilleryError, RuntimeError):
    """The Prefect server, worker or a deployment did not do what was asked."""


def server_env(port: int, home: str | None = None) -> dict:
    env = dict(os.environ)
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
    env.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "distillery")  # storage retries show in the run's logs
    env.setdefault("DISTILLERY_HOME", str(ROOT))
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


def start_server(env: dict, port: int, log) -> subprocess.Popen:
    """A Prefect server (SQLite under PREFECT_HOME) on 127.0.0.1, waited on until healthy."""
    proc = subprocess.Popen([_prefect(), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PrefectError(f"the Prefect server exited with code {proc.returncode}; see its log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(1)
    proc.terminate()
    raise PrefectError(f"the Prefect server on 127.0.0.1:{port} did not become healthy in 120 s")


def prepare(env: dict) -> None:
    """The process work pool, the engine concurrency limit, and the deployments."""
    prefect_cli(["work-pool", "create", POOL, "--type", "process", "--overwrite"], env)
    prefect_cli(["concurrency-limit", "create", ENGINE_LIMIT_TAG, "1"], env, check=False)
    prefect_cli(["--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all"], env)


def start_worker(env: dict, log) -> subprocess.Popen:
    return subprocess.Popen([_prefect(), "worker", "start", "--pool", POOL], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def stop(*procs: subprocess.Popen) -> None:
    """Stop in the order given (workers before the server), politely, then firmly."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
