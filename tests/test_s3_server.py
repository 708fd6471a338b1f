"""The test S3 server (tests/seaweed.py) against a real `weed mini`: where it
listens, who it lets in, conditional writes, and what survives a restart."""

from __future__ import annotations

import os
import stat
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import s3fs
from botocore.exceptions import EndpointConnectionError
from seaweed import GRPC_OFFSET, SeaweedFS

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with SeaweedFS(tmp_path_factory.mktemp("seaweed") / "data") as server:
        yield server


def other_fs(s3: SeaweedFS, **kwargs) -> s3fs.S3FileSystem:
    """An s3fs filesystem on the server with other credentials, no retries."""
    fs = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": s3.endpoint_url, "region_name": "us-east-1"},
        config_kwargs={"retries": {"max_attempts": 1}},
        skip_instance_cache=True,
        **kwargs,
    )
    fs.retries = 1
    return fs


def unsigned(request: urllib.request.Request | str):
    """Plain HTTP, no S3 library and no proxy from the environment in between."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(request, timeout=5)


def test_listens_on_loopback_only(s3):
    sockets = s3.listening()
    assert ("127.0.0.1", s3.ports["s3"]) in sockets
    assert all(ip == "127.0.0.1" for ip, _ in sockets), sockets
    # Every listener is on a port chosen here (HTTP, or its gRPC twin at
    # +10000): none fell back to weed's defaults (8333, 9333, 23646, ...).
    chosen = {p for port in s3.ports.values() for p in (port, port + GRPC_OFFSET)}
    assert {port for _, port in sockets} <= chosen, sockets
    assert ("127.0.0.1", s3.ports["master"] + GRPC_OFFSET) in sockets


def test_files_stay_beside_the_data(s3):
    # The identities (with the secret) are outside weed's -dir and private.
    assert s3.config_path.parent != s3.data_dir
    assert not s3.config_path.is_relative_to(s3.data_dir)
    assert stat.S_IMODE(s3.config_path.stat().st_mode) == 0o600
    assert s3.secret_key in s3.config_path.read_text()
    # weed's output, glog included, is in weed.log: not in the terminal, and
    # no weed.<host>.<user>.log.<level>.<time>.<pid> files in the temp folder.
    log = s3.log_path.read_text()
    assert "S3 API Server" in log and f"http port {s3.ports['s3']}" in log  # glog lines
    assert not list(Path(tempfile.gettempdir()).glob(f"weed.*.{s3.pid}"))
    assert s3.start_seconds is not None and s3.start_seconds < 60


def test_right_key_writes_and_reads(s3):
    fs = s3.filesystem()
    fs.pipe_file(f"{s3.bucket}/auth/hello.txt", b"hello")
    assert fs.cat_file(f"{s3.bucket}/auth/hello.txt") == b"hello"
    assert f"{s3.bucket}/auth/hello.txt" in fs.ls(f"{s3.bucket}/auth", refresh=True)
    # The same keys through the environment, as a child process would get them.
    env = s3.env()
    assert env["AWS_ENDPOINT_URL"] == s3.endpoint_url
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (s3.access_key, s3.secret_key)
    body = s3.client().get_object(Bucket=s3.bucket, Key="auth/hello.txt")["Body"].read()
    assert body == b"hello"


def test_wrong_keys_are_refused(s3):
    path = f"{s3.bucket}/auth/secret.txt"
    s3.filesystem().pipe_file(path, b"mine")
    wrong_secret = other_fs(s3, key=s3.access_key, secret="0" * 32)
    wrong_key = other_fs(s3, key="someone-else", secret=s3.secret_key)
    for fs in (wrong_secret, wrong_key):
        # s3fs turns the 403 into PermissionError: "Forbidden" for a GET/HEAD
        # (no error body), weed's own message for the rest.
        with pytest.raises(PermissionError):
            fs.cat_file(path)
        with pytest.raises(PermissionError):
            fs.ls(s3.bucket)
    with pytest.raises(PermissionError, match="signature we calculated does not match"):
        wrong_secret.pipe_file(path, b"theirs")
    with pytest.raises(PermissionError, match="access key"):
        wrong_key.pipe_file(path, b"theirs")
    assert s3.filesystem().cat_file(path) == b"mine"


def test_anonymous_is_refused(s3):
    path = f"{s3.bucket}/auth/private.txt"
    s3.filesystem().pipe_file(path, b"private")
    anon = other_fs(s3, anon=True)
    with pytest.raises(PermissionError):
        anon.cat_file(path)
    with pytest.raises(PermissionError):
        anon.ls(s3.bucket)
    with pytest.raises(PermissionError):
        anon.pipe_file(f"{s3.bucket}/auth/anon.txt", b"x")
    for url in (f"{s3.endpoint_url}/{path}", f"{s3.endpoint_url}/{s3.bucket}", s3.endpoint_url):
        with pytest.raises(urllib.error.HTTPError) as refused:
            unsigned(url)
        assert refused.value.code == 403, url
    request = urllib.request.Request(f"{s3.endpoint_url}/{s3.bucket}/auth/anon.txt", data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        unsigned(request)
    assert refused.value.code == 403
    assert not s3.filesystem().exists(f"{s3.bucket}/auth/anon.txt")


def test_conditional_create(s3):
    fs = s3.filesystem()
    path = f"{s3.bucket}/create/once.txt"
    fs.pipe_file(path, b"first", mode="create")
    # If-None-Match: * on an existing key: 412 PreconditionFailed, which s3fs
    # raises as a plain OSError (errno EINVAL) naming the pre-conditions.
    with pytest.raises(OSError, match="pre-conditions"):
        fs.pipe_file(path, b"second", mode="create")
    assert fs.cat_file(path) == b"first"
    fs.pipe_file(path, b"third")  # an unconditional write still overwrites
    assert fs.cat_file(path) == b"third"


def test_environment_keys_do_not_open_a_second_door(s3, tmp_path, monkeypatch):
    """weed mini makes an admin identity of AWS_ACCESS_KEY_ID/SECRET found in its
    environment; the helper drops them, so only s3.json's keys work. (A second
    server beside the module's one, on its own ports.)"""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-environment")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "e" * 32)
    with SeaweedFS(tmp_path / "data", bucket="second") as other:
        other.filesystem().pipe_file("second/a.txt", b"a")
        intruder = other_fs(other, key="from-the-environment", secret="e" * 32)
        with pytest.raises(PermissionError):
            intruder.cat_file("second/a.txt")
        pid = other.pid
        assert set(other.ports.values()).isdisjoint(s3.ports.values())
        assert ("127.0.0.1", other.ports["s3"]) in other.listening()
    assert not other.running and not os.path.exists(f"/proc/{pid}")


def test_restart_keeps_data(s3):
    fs = s3.filesystem()
    big = os.urandom(6 * 1024 * 1024)  # more than weed's 4 MB chunk: two chunks
    before = {f"{s3.bucket}/restart/small.txt": b"small", f"{s3.bucket}/restart/big.bin": big}
    fs.pipe(before)
    fs.pipe_file(f"{s3.bucket}/restart/created.txt", b"created", mode="create")
    ports, pid = dict(s3.ports), s3.pid

    s3.stop()
    try:
        assert not s3.running and s3.listening() == []
        # While stopped: botocore's EndpointConnectionError ("Could not connect
        # to the endpoint URL"), which s3fs lets through untranslated. It is a
        # botocore.exceptions.ConnectionError (a BotoCoreError), NOT the builtin
        # ConnectionError/OSError. With one attempt it fails within about a
        # second (measured 0.3-0.9 s); with s3fs's and botocore's default
        # retries it takes ~9 s.
        down = s3.filesystem(retries=1, config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 1})
        began = time.monotonic()
        with pytest.raises(EndpointConnectionError):
            down.cat_file(f"{s3.bucket}/restart/small.txt")
        with pytest.raises(EndpointConnectionError):
            down.pipe_file(f"{s3.bucket}/restart/while-down.txt", b"x")
        assert time.monotonic() - began < 10
    finally:
        s3.start()

    assert s3.ports == ports and s3.pid != pid
    # No retries: start() returning means the old volumes are served already
    # (not "volume 1 not found" for a few seconds).
    fs = s3.filesystem(retries=1, config_kwargs={"retries": {"max_attempts": 1}})
    for path, data in before.items():
        assert fs.cat_file(path) == data
    assert not fs.exists(f"{s3.bucket}/restart/while-down.txt")
    # Earlier objects are still there for conditional writes too.
    with pytest.raises(OSError, match="pre-conditions"):
        fs.pipe_file(f"{s3.bucket}/restart/created.txt", b"again", mode="create")
    fs.pipe_file(f"{s3.bucket}/restart/after.txt", b"after")
    assert fs.cat_file(f"{s3.bucket}/restart/after.txt") == b"after"

    s3.restart()
    fs = s3.filesystem(retries=1, config_kwargs={"retries": {"max_attempts": 1}})
    assert fs.cat_file(f"{s3.bucket}/restart/after.txt") == b"after"
    assert fs.cat_file(f"{s3.bucket}/restart/big.bin") == big
    assert sorted(fs.ls(f"{s3.bucket}/restart", refresh=True)) == sorted(
        f"{s3.bucket}/restart/{name}" for name in ("after.txt", "big.bin", "created.txt", "small.txt")
    )
