"""The build's worker process: where a staged build's data work runs.

Reading the source into seed shards, every CPU stage, and cutting the published shards
run here, one call at a time; the flow process sends stages and file lists and gets
completion records back. So the flow holds records, never rows, and its memory does not
grow with the build (bench/scale.py measures both). Engine stages stay in the flow process,
where the engine is opened once.

One spawned process per flow process, started on first use and reused by every build it
runs. It dies with the flow process: a kill -9 of a build stops its worker too, so a rerun
never races a stray writer.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable

# Failpoints (distillery.faults) hit in the worker name the flow process: killing the
# build is what a crash test means.
BUILD_PID = "DISTILLERY_BUILD_PID"

_pool: ProcessPoolExecutor | None = None
_owner: int | None = None
_lock = threading.Lock()


class WorkerDied(OSError):
    """The worker process was killed (most often by the kernel, out of memory). An OSError:
    the task retries once in a fresh worker."""


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)  # the flow process is gone


def _start(parent: int) -> None:
    os.environ[BUILD_PID] = str(parent)
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="parent-watch").start()


def peak_rss_mib() -> int:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def measured(fn: Callable, args: tuple) -> tuple[Any, int]:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here on (Linux)
    except OSError:
        pass
    return fn(*args), peak_rss_mib()


def in_worker(fn: Callable, *args) -> tuple[Any, int]:
    """fn(*args) in the worker (both picklable). Returns its result and the worker's peak
    RSS in MiB during the call."""
    global _pool, _owner
    with _lock:
        if _pool is None or _owner != os.getpid():
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start, initargs=(os.getpid(),))
            _owner = os.getpid()
        pool = _pool
    try:
        return pool.submit(measured, fn, args).result()
    except BrokenProcessPool:
        with _lock:
            if _pool is pool:
                _pool = None
        raise WorkerDied(
            f"the build's worker process died while running {getattr(fn, '__name__', fn)} (killed, most likely out of "
            "memory); lower output.stage_rows to give each shard less memory, and rerun: finished shards are kept"
        ) from None
