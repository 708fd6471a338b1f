"""The suite's process hygiene: what a command leaves behind dies with its group."""

from __future__ import annotations

import sys
import time

import procs

# A child that starts a grandchild and exits at once, as `distillery run` leaves Prefect's
# local API server behind when it is killed.
LEAVES_A_GRANDCHILD = [sys.executable, "-c",
                       "import subprocess, sys; p = subprocess.Popen(['sleep', '300']); print(p.pid)"]


def test_run_kills_what_the_command_left_behind():
    done = procs.run(LEAVES_A_GRANDCHILD, timeout=60)
    grandchild = int(done.stdout)
    assert done.returncode == 0
    assert not alive(grandchild)
    assert procs.members([grandchild]) == [] and grandchild not in procs.started()


def test_a_group_left_running_by_a_test_is_found_and_killed():
    before = procs.started()
    child = procs.spawn([sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"])
    deadline = time.monotonic() + 60
    while len(procs.members([child.pid])) < 2:  # the child and its sleep
        assert time.monotonic() < deadline, "the child did not start its grandchild"
        time.sleep(0.05)
    left = procs.kill_left_since(before)
    assert {pgid for _, pgid, _ in left} == {child.pid} and len(left) == 2
    assert procs.members([child.pid]) == [] and child.wait(timeout=30) == -9


def test_a_timeout_kills_the_whole_group():
    started = time.monotonic()
    try:
        procs.run([sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '301.25']); time.sleep(300)"], timeout=2)
    except Exception as err:  # subprocess.TimeoutExpired
        assert type(err).__name__ == "TimeoutExpired"
    else:
        raise AssertionError("the command should have timed out")
    assert time.monotonic() - started < 60
    assert running("sleep 301.25") == []



def test_a_lasting_server_outlives_the_test_that_started_it_but_not_the_session_check():
    before = procs.started()
    server = procs.spawn(["sleep", "302.5"], lasting=True)  # as a session fixture's server
    try:
        assert procs.kill_left_since(before) == [] and alive(server.pid)
        assert server.pid in procs.all_started() and server.pid not in procs.started()
    finally:
        procs.kill(server)
    assert not alive(server.pid) and server.pid not in procs.all_started()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def running(cmdline: str) -> list[int]:
    from pathlib import Path

    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and alive(int(entry.name)) and (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip() == cmdline:
                found.append(int(entry.name))
        except OSError:
            continue
    return found
