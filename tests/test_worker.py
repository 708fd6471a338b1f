"""The build's worker process (adapters.worker): where load, CPU stages and publishing run."""

import os
import signal

import pytest

from distillery.adapters import worker
from distillery.adapters.worker import WorkerDied, in_worker


def _pid_and_env() -> tuple[int, int, str | None]:
    return os.getpid(), os.getppid(), os.environ.get(worker.BUILD_PID)


def _allocate(mib: int) -> int:
    block = bytearray(mib << 20)
    for i in range(0, len(block), 4096):  # touched, so resident
        block[i] = 1
    return len(block) >> 20


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _fail() -> None:
    raise ValueError("bad row in shard 3")


def test_calls_run_in_one_reused_child_that_names_the_build():
    (pid, parent, named), _ = in_worker(_pid_and_env)
    assert pid != os.getpid() and parent == os.getpid()
    assert named == str(os.getpid())  # a failpoint hit there names the build's process
    assert in_worker(_pid_and_env)[0][0] == pid  # started once, reused


def test_peak_rss_is_the_calls_own():
    _, small = in_worker(_allocate, 1)
    got, big = in_worker(_allocate, 200)
    assert got == 200 and big >= small + 150
    _, after = in_worker(_allocate, 1)
    assert after < big - 150  # measured from the start of each call, not the worker's life


def test_errors_come_back_as_raised_and_the_worker_goes_on():
    with pytest.raises(ValueError, match="bad row in shard 3"):
        in_worker(_fail)
    assert in_worker(_allocate, 1)[0] == 1


def test_a_killed_worker_is_reported_as_transient_and_replaced():
    (before, _, _), _ = in_worker(_pid_and_env)
    with pytest.raises(WorkerDied, match="lower output.stage_rows") as err:
        in_worker(_die)
    assert isinstance(err.value, OSError)  # tasks.retry.transient retries it
    (after, _, _), _ = in_worker(_pid_and_env)
    assert after != before


def test_the_worker_dies_with_a_killed_build(tmp_path):
    """kill -9 of the flow process alone (not its group): the worker must not live on to
    write into a folder a rerun is writing."""
    import subprocess
    import sys
    import time

    import procs

    marker = tmp_path / "worker.pid"
    code = ("import os, time\n"
            "from distillery.adapters.worker import in_worker\n"
            "pid, _ = in_worker(os.getpid)\n"
            f"open({str(marker) + '.tmp'!r}, 'w').write(str(pid)); os.replace({str(marker) + '.tmp'!r}, {str(marker)!r})\n"
            "time.sleep(600)\n")
    build = procs.spawn([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert build.poll() is None and time.monotonic() < deadline, "the worker never started"
        time.sleep(0.05)
    child = int(marker.read_text())
    assert child != build.pid and os.path.exists(f"/proc/{child}")
    os.kill(build.pid, signal.SIGKILL)  # the build only, as a user's kill -9 would
    build.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _alive(child):
        assert time.monotonic() < deadline, f"worker {child} outlived its build"
        time.sleep(0.05)
    procs.kill(build)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"  # a zombie is dead, waiting to be reaped
    except FileNotFoundError:
        return False
