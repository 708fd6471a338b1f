"""Processes the tests start: each in a process group of its own, and the whole group killed
when it is done with, pass or fail.

A `distillery run` child has children of its own (Prefect's local API server, vLLM
helpers); killing only the child would orphan them. `spawn` starts a group and `run`
runs one to completion (or to its timeout); `kill` ends a group. `conftest.py` kills
what a test left running when the test ends, and fails the session if anything of a
group outlived it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

_groups: set[int] = set()  # process group ids started through this module and not yet killed
_lasting: set[int] = set()  # groups that outlive a test (session/module servers): checked at session end only


def spawn(cmd: list[str], lasting: bool = False, **kwargs) -> subprocess.Popen:
    """subprocess.Popen in a new session (so a process group of its own), registered for cleanup.

    A `lasting` group (a server a fixture shares between tests) is not killed when the test
    that happened to start it ends; its owner kills it, and the session end checks it is gone."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    track(proc.pid, lasting)
    return proc


def track(pgid: int, lasting: bool = False) -> None:
    """Register a group started elsewhere (with start_new_session=True) for the session-end check."""
    (_lasting if lasting else _groups).add(pgid)


def run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Like subprocess.run(capture_output=True, text=True), but on a timeout or any error the
    whole group is killed, and whatever the command left behind is killed after it exits.
    Output goes through files, not pipes: a leftover grandchild holding a pipe open would
    keep a reader waiting for its end."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = spawn(cmd, stdout=out, stderr=err, **kwargs)
        try:
            proc.wait(timeout=timeout)
        except BaseException:
            kill(proc)
            raise
        kill(proc)
        text = [f.seek(0) or f.read().decode(errors="replace") for f in (out, err)]
    return subprocess.CompletedProcess(cmd, proc.returncode, *text)


def kill(proc: subprocess.Popen | int) -> None:
    """SIGKILL the process group `proc` leads (its members too, after the leader has exited)."""
    pgid = proc if isinstance(proc, int) else proc.pid
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if not isinstance(proc, int):
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # not reaped yet; the kernel has it anyway
            pass
    deadline = time.monotonic() + 10
    while members([pgid]) and time.monotonic() < deadline:
        time.sleep(0.05)
    _groups.discard(pgid)
    _lasting.discard(pgid)


def members(pgids: list[int] | set[int]) -> list[tuple[int, int, str]]:
    """Live processes (pid, pgid, command line) in any of these process groups; zombies are not alive."""
    wanted, found = set(pgids), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid pgrp ...: comm may hold spaces and ')'.
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] == "Z" or int(fields[2]) not in wanted:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        found.append((int(entry.name), int(fields[2]), cmdline[:200]))
    return found


def started() -> set[int]:
    """Groups a test may have left behind (not the lasting ones)."""
    return set(_groups)


def all_started() -> set[int]:
    """Every group not yet killed through this module, lasting ones included."""
    return _groups | _lasting


def kill_left_since(before: set[int]) -> list[tuple[int, int, str]]:
    """Kill every group started since `before` was taken; what was still alive in them."""
    new = started() - before
    alive = members(new)
    for pgid in new:
        kill(pgid)
    return alive


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def prefect_server(home: Path, **extra_env: str):
    """A real `prefect server start` on 127.0.0.1 with its own PREFECT_HOME, in a process group
    of its own; yields (env pointing at it, its log file), stopped whole afterwards."""
    from distillery.adapters import prefect_api as api

    port = free_port()
    env = {**api.server_env(port, str(home)), **extra_env}
    with open(home / "server.log", "ab") as log:
        proc = api.start_server(env, port, log, new_session=True)
        try:
            yield env, log
        finally:
            api.stop(proc)
