"""A local 2-node Ray cluster for the tests: every listener on 127.0.0.1, usage stats off,
its files (sockets, logs, session) in a folder of the test's own, and nothing of it left
running when it stops.

`ray start --node-ip-address=127.0.0.1` was seen to still advertise the machine's routable
address; `ray.cluster_utils.Cluster` with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 stays on
loopback. Both nodes are this machine: 1 CPU each, as the issue's cluster.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from seaweed import _listeners

ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "VLLM_NO_USAGE_STATS": "1",
    "RAY_DEDUP_LOGS": "1",
}


class LocalRayCluster:
    def __init__(self, tmp: Path, nodes: int = 2, cpus_per_node: int = 1):
        self.tmp, self.nodes, self.cpus = tmp, nodes, cpus_per_node
        self.cluster = None

    def start(self) -> "LocalRayCluster":
        os.environ.update(ENV)
        # Only the cluster's processes get the folder (it is how `processes` finds them):
        # children this process starts later (builds, servers) are not the cluster's.
        before = os.environ.get("RAY_TMPDIR")
        os.environ["RAY_TMPDIR"] = str(self.tmp)
        import ray
        from ray._private import ray_constants
        from ray.cluster_utils import Cluster

        # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when first imported, and vLLM (an
        # engine test earlier in the session) imports Ray before this runs: then GCS advertised
        # the machine's routable address and the driver waited for it forever. Say it again.
        ray_constants.ENABLE_RAY_CLUSTER = False

        try:
            self.cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": self.cpus, "node_ip_address": "127.0.0.1", "include_dashboard": False})
            for _ in range(self.nodes - 1):
                self.cluster.add_node(num_cpus=self.cpus, node_ip_address="127.0.0.1")
            self.cluster.wait_for_nodes()
        finally:
            if before is None:
                os.environ.pop("RAY_TMPDIR")
            else:
                os.environ["RAY_TMPDIR"] = before
        os.environ["RAY_ADDRESS"] = self.address  # `distillery run` children join this cluster
        ray.init(address=self.address, namespace="distillery", _node_ip_address="127.0.0.1")
        return self

    @property
    def address(self) -> str:
        return self.cluster.address

    def processes(self) -> list[int]:
        """Pids of every process of this cluster: those started with its folder in their
        command line or environment (GCS, raylets, workers, actors)."""
        mark = str(self.tmp).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if mark in (entry / "cmdline").read_bytes() or mark in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
        return sorted(pids)

    def listening(self) -> list[tuple[str, int]]:
        """(ip, port) of every TCP socket the cluster's processes listen on, from /proc."""
        import contextlib
        import socket

        found: set[tuple[str, int]] = set()
        for pid in self.processes():
            inodes = set()
            with contextlib.suppress(OSError):
                for fd in (Path("/proc") / str(pid) / "fd").iterdir():
                    with contextlib.suppress(OSError):
                        target = os.readlink(fd)
                        if target.startswith("socket:["):
                            inodes.add(target[8:-1])
            for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
                for inode, addr in _listeners(Path("/proc") / str(pid) / "net" / table, family).items():
                    if inode in inodes:
                        found.add(addr)
        return sorted(found)

    def stop(self, timeout: float = 60) -> list[int]:
        """Shut the cluster down; kill whatever of it outlives that. Returns the pids that
        had to be killed (none, when Ray stops cleanly)."""
        import ray

        ray.shutdown()
        if self.cluster is not None:
            self.cluster.shutdown()
        deadline = time.monotonic() + timeout
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.5)
        left = self.processes()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.environ.pop("RAY_ADDRESS", None)
        return left
