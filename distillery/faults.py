"""Failpoints: named places where a test can stop a build (as FoundationDB and TiKV do).

Inert unless the environment names a point: DISTILLERY_FAILPOINT=name, or name:N
for its N-th hit. At that hit the process writes its pid to
DISTILLERY_FAILPOINT_FILE (atomically) and waits until the file is removed; in the build's
worker process (adapters.worker) it writes the flow process's pid, the build's. Meanwhile the
test does what it came to do: kill -9 the process, or stop the S3 server and
then remove the file to let the build go on into the outage.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

_hits: Counter[str] = Counter()
_lock = threading.Lock()


def failpoint(name: str) -> None:
    spec = os.environ.get("DISTILLERY_FAILPOINT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    with _lock:
        _hits[name] += 1
        if _hits[name] != int(count or 1):
            return
    marker = Path(os.environ.get("DISTILLERY_FAILPOINT_FILE", "distillery-failpoint"))
    # Written whole, then renamed into place: a test polling for the marker never reads it empty.
    staged = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    staged.write_text(os.environ.get("DISTILLERY_BUILD_PID") or str(os.getpid()))
    os.replace(staged, marker)
    while marker.exists():
        time.sleep(0.05)
