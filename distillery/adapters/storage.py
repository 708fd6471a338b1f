"""Storage through fsspec: local paths and s3:// URIs alike.

Credentials come from fsspec's own resolution (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL, ~/.aws) or from a Prefect
`AwsCredentials` block named in the recipe (`storage_options`). They live only
in the filesystem object: never in a message, a log line or a written file.

Every remote call that can fail on a flaky network goes through `retrying`:
exponential backoff on connection errors and 5xx answers, then one clear
`StorageError` that says what was not done.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import uuid
import time
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

from fsspec.core import url_to_fs

from distillery.errors import DistilleryError

log = logging.getLogger("distillery.storage")
T = TypeVar("T")
GLOB_CHARS = "*?["


class StorageError(DistilleryError, OSError):
    """A path that cannot be read or written; the message names it."""


class PublishConflict(StorageError, FileExistsError):
    """Another writer published this dataset (or committed this shard) first."""


# Connection-level failures, by class name so that botocore/aiohttp stay optional imports.
_TRANSIENT_NAMES = {
    "ConnectionError", "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectionClosedError", "ClientConnectorError", "ServerDisconnectedError", "ClientOSError",
    "ClientPayloadError", "IncompleteReadError", "TimeoutError", "ConnectionResetError",
    "ConnectionRefusedError", "BrokenPipeError", "ResponseStreamingError",
}
_TRANSIENT_TEXT = ("ServiceUnavailable", "SlowDown", "InternalError", "RequestTimeout", "503", "502", "500 ")
_TRANSIENT_ERRNO = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.EPIPE, errno.EHOSTUNREACH, errno.ENETUNREACH}


def is_transient(err: BaseException) -> bool:
    """True for failures a retry can fix: the network, a restarting server, throttling."""
    if isinstance(err, (StorageError, PermissionError, FileNotFoundError, FileExistsError, IsADirectoryError)):
        return False
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(err).__mro__):
        return True
    if isinstance(err, OSError) and err.errno in _TRANSIENT_ERRNO:
        return True
    text = str(err)
    return isinstance(err, OSError) and any(t in text for t in _TRANSIENT_TEXT)


_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "AWS_SECRET_KEY", "AWS_ACCESS_KEY")
_secrets: set[str] = set()  # values passed in as options: scrubbed from every message like the environment's


def scrub(text: str) -> str:
    """The text with every known credential replaced: messages may quote a request."""
    for value in _secrets | {os.environ.get(k, "") for k in _SECRET_ENV}:
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _describe(err: BaseException) -> str:
    return scrub(f"{type(err).__name__}: {str(err)[:300]}")


def retrying(what: str, fn: Callable[[], T], attempts: int = 5, backoff: float = 2.0, max_delay: float = 60.0) -> T:
    """Call `fn`, retrying transient failures with exponential backoff.

    `what` names the operation and its URI for the messages. A failure that
    outlives every attempt becomes a StorageError saying so.
    """
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except PermissionError as err:
            raise StorageError(
                f"{what}: access denied ({_describe(err)}); check the credentials (storage.credentials_block, or "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL) and the bucket's permissions"
            ) from None
        except BaseException as err:
            if not isinstance(err, Exception) or not is_transient(err):
                raise
            if attempt == attempts:
                raise StorageError(
                    f"{what}: storage did not answer after {attempts} attempts over {time.monotonic() - started:.0f} s "
                    f"(last error {_describe(err)}); check that the endpoint is up, then try again"
                ) from None
            delay = min(max_delay, backoff * 2 ** (attempt - 1))
            log.warning("%s failed (%s); attempt %d of %d, retrying in %.1f s", what, _describe(err), attempt, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _fs(uri: str, **options: Any):
    try:
        return url_to_fs(uri, **options)
    except (ImportError, ValueError) as err:
        raise StorageError(f"{uri}: no filesystem for this URI ({err}); use a local path or s3://bucket/key") from None


def _protocol(fs) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def storage_options(credentials_block: str | None = None, endpoint_url: str | None = None) -> dict:
    """fsspec options for s3:// URIs: from a Prefect AwsCredentials block, else the environment.

    Returns {} when nothing is set, so fsspec/botocore resolve credentials themselves.
    """
    options: dict[str, Any] = {}
    if credentials_block:
        try:
            from prefect_aws import AwsCredentials
        except ImportError:
            raise StorageError("storage.credentials_block needs prefect-aws; install it (`pip install prefect-aws`) or use environment credentials") from None
        try:
            creds = AwsCredentials.load(credentials_block, _sync=True)
        except ValueError as err:
            raise StorageError(f"storage.credentials_block {credentials_block!r}: no such AwsCredentials block ({str(err)[:200]}); create it in the UI or with AwsCredentials(...).save({credentials_block!r})") from None
        if creds.aws_access_key_id:
            options["key"] = creds.aws_access_key_id
        if creds.aws_secret_access_key:
            options["secret"] = creds.aws_secret_access_key.get_secret_value()
        if creds.aws_session_token:
            options["token"] = creds.aws_session_token
        client = {}
        if creds.region_name:
            client["region_name"] = creds.region_name
        block_endpoint = getattr(creds.aws_client_parameters, "endpoint_url", None)
        if block_endpoint and not endpoint_url:
            endpoint_url = block_endpoint
        if client:
            options["client_kwargs"] = client
    if endpoint_url:
        options.setdefault("client_kwargs", {})["endpoint_url"] = endpoint_url
    _secrets.update(v for k, v in options.items() if k in ("key", "secret", "token"))
    return options


def _quiet_wire_logs() -> None:
    """botocore logs every request's headers at DEBUG, the access key id among them: keep
    its loggers at INFO whatever the root level (set them yourself to debug the wire)."""
    for name in ("botocore", "aiobotocore", "s3fs", "urllib3"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:  # not configured by the user
            logger.setLevel(logging.INFO)


def _for(uri: str, options: dict) -> dict:
    """Only s3 URIs take the S3 options."""
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    _quiet_wire_logs()
    _secrets.update(v for k, v in options.items() if k in ("key", "secret", "token") and isinstance(v, str))
    # One quick retry inside botocore; the backoff, its budget and its log lines are `retrying`'s.
    config = {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 10, "read_timeout": 120}
    return {**options, "config_kwargs": {**config, **options.get("config_kwargs", {})}}


def read_bytes(uri: str, what: str = "file", retries: int = 5, backoff: float = 2.0, **options: Any) -> bytes:
    fs, path = _fs(uri, **_for(uri, options))

    def read() -> bytes:
        if not fs.isfile(path):
            raise StorageError(f"{what} {uri} does not exist; check the path (relative paths start at the working directory)")
        with fs.open(path, "rb", compression="infer") as fh:
            return fh.read()

    try:
        return retrying(f"reading {what} {uri}", read, retries, backoff)
    except StorageError:
        raise
    except OSError as err:
        raise StorageError(f"{what} {uri} cannot be read: {_describe(err)}") from None


def read_many(uri: str, what: str = "file", retries: int = 5, backoff: float = 2.0, **options: Any) -> list[tuple[str, bytes]]:
    """One file, or every file a glob matches (sorted), as (uri, bytes) pairs."""
    if not any(c in uri for c in GLOB_CHARS):
        return [(uri, read_bytes(uri, what, retries, backoff, **options))]
    fs, pattern = _fs(uri, **_for(uri, options))
    matched = _glob(fs, pattern, uri, what, retries, backoff)
    scheme = uri.split("://", 1)[0] + "://" if "://" in uri else ""
    return [(scheme + p, read_bytes(scheme + p, what, retries, backoff, **options)) for p in matched]


class Dataset:
    """A dataset folder: files written under a root URI, with retries on remote hiccups."""

    def __init__(self, uri: str, retries: int = 5, backoff: float = 2.0, **options: Any):
        self.uri = uri.rstrip("/")
        self.fs, self.root = _fs(self.uri, **_for(uri, options))
        self.retries, self.backoff = retries, backoff

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        return retrying(f"{what} {self.uri}", fn, self.retries, self.backoff)

    def path(self, relative: str) -> str:
        return posixpath.join(self.root, relative)

    def _makedirs(self, relative: str) -> None:
        if self.local_path() is not None:
            os.makedirs(posixpath.dirname(self.path(relative)) or self.root, exist_ok=True)

    def write(self, relative: str, data: bytes) -> None:
        """Write to a temporary name, then move into place: readers never see half a file."""
        tmp = posixpath.join(posixpath.dirname(relative), f".{posixpath.basename(relative)}.tmp")

        def put():
            self._makedirs(relative)
            self.fs.pipe_file(self.path(tmp), data)
            self.fs.mv(self.path(tmp), self.path(relative))

        self._retry(f"writing {relative} to", put)

    def stream(self, relative: str, fill: Callable[[Any], T]) -> T:
        """Open `relative` for writing, let `fill(handle)` write into it, close; retried as a whole."""
        def once() -> T:
            self._makedirs(relative)
            with self.fs.open(self.path(relative), "wb") as fh:
                return fill(fh)

        return self._retry(f"writing {relative} to", once)

    def move(self, src: str, dst: str) -> None:
        """Rename within the dataset: atomic on local disk; copy-then-delete on S3."""
        def mv():
            self._makedirs(dst)
            if self.local_path() is not None:
                os.replace(self.path(src), self.path(dst))
            elif not self.fs.exists(self.path(src)) and self.fs.exists(self.path(dst)):
                return  # an earlier attempt moved it before the connection dropped
            else:
                self.fs.mv(self.path(src), self.path(dst))

        self._retry(f"committing {dst} in", mv)

    def create(self, relative: str, data: bytes) -> None:
        """Publish `relative` only if it does not exist yet: one writer wins.

        Local disk: hard-link a complete temporary file into place (fails if the
        name exists). S3: a conditional PUT (If-None-Match: *). Other filesystems
        fall back to check-then-write, which is not atomic.
        """
        final = self.path(relative)
        local = self.local_path()
        if local is not None:
            # unique per writer, threads included: two tries racing in one process must not share it
            tmp = self.path(f".{posixpath.basename(relative)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
            self._makedirs(relative)
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise PublishConflict(f"{self.uri}/{relative} already exists: another writer published this dataset first; nothing of this run was published") from None
            finally:
                os.unlink(tmp)
            return

        def put():
            if _protocol(self.fs) in ("s3", "s3a"):
                try:
                    self.fs.pipe_file(final, data, mode="create")
                except OSError as err:
                    if "pre-condition" in str(err) or "PreconditionFailed" in str(err):
                        raise PublishConflict(f"{self.uri}/{relative} already exists: another writer published this dataset first; nothing of this run was published") from None
                    raise
            else:
                if self.fs.exists(final):
                    raise PublishConflict(f"{self.uri}/{relative} already exists: another writer published this dataset first")
                self.fs.pipe_file(final, data)

        try:
            self._retry(f"publishing {relative} in", put)
        except PublishConflict:
            raise

    def read(self, relative: str) -> bytes:
        return self._retry(f"reading {relative} from", lambda: self.fs.cat_file(self.path(relative)))

    def exists(self, relative: str) -> bool:
        def check() -> bool:
            self.fs.invalidate_cache(self.path(relative))
            return self.fs.exists(self.path(relative))

        return self._retry(f"checking {relative} in", check)

    def list(self, folder: str) -> list[str]:
        """Relative paths of the files under `folder` (empty when it is missing)."""
        base = self.path(folder)

        def find() -> list[str]:
            self.fs.invalidate_cache(base)
            if not self.fs.exists(base):
                return []
            found = self.fs.find(base, detail=True)  # S3 servers may list empty "directories": skip them
            return sorted(posixpath.relpath(p, self.root) for p, info in found.items() if info.get("type") != "directory")

        return self._retry(f"listing {folder} in", find)

    def remove(self, relative: str) -> None:
        def rm():
            if self.fs.exists(self.path(relative)):
                self.fs.rm(self.path(relative))

        self._retry(f"removing {relative} from", rm)

    def remove_tree(self, folder: str) -> None:
        def rm():
            self.fs.invalidate_cache(self.path(folder))
            if self.fs.exists(self.path(folder)):
                self.fs.rm(self.path(folder), recursive=True)

        self._retry(f"removing {folder} from", rm)

    def local_path(self) -> str | None:
        return self.root if _protocol(self.fs) in ("file", "local") else None

    @contextmanager
    def writer(self, relative: str):
        """A binary file handle for streaming writes; moved into place on success only.

        Not retried (the caller streams into it); use `stream` for retried writes.
        """
        tmp = posixpath.join(posixpath.dirname(relative), f".{posixpath.basename(relative)}.tmp")
        self._makedirs(relative)
        try:
            with self.fs.open(self.path(tmp), "wb") as fh:
                yield fh
        except BaseException:
            if self.fs.exists(self.path(tmp)):
                self.fs.rm(self.path(tmp))
            raise
        self.move(tmp, relative)


def open_input(uri: str, what: str = "input", **options: Any):
    """A binary file handle for streaming reads; a clear error if it is missing."""
    fs, path = _fs(uri, **_for(uri, options))
    if not fs.isfile(path):
        raise StorageError(f"{what} {uri} does not exist; check the path")
    return fs.open(path, "rb")


def open_output(uri: str, **options: Any):
    """A binary file handle for a streamed write (a local file's folder is made first)."""
    fs, path = _fs(uri, **_for(uri, options))
    if _protocol(fs) == "file":
        fs.makedirs(fs._parent(path), exist_ok=True)
    return fs.open(path, "wb")


def open_dataset(uri: str, retries: int = 5, backoff: float = 2.0, **options: Any) -> Dataset:
    return Dataset(uri, retries, backoff, **options)


__all__ = ["Dataset", "PublishConflict", "StorageError", "is_transient", "open_dataset", "read_bytes", "read_many", "retrying", "storage_options"]


def _glob(fs, pattern: str, uri: str, what: str, retries: int, backoff: float) -> list[str]:
    """The files a glob matches, sorted; an error that says so when none does."""
    try:
        matched = retrying(f"listing {what} {uri}", lambda: sorted(p for p in fs.glob(pattern) if fs.isfile(p)), retries, backoff)
    except PermissionError as err:
        raise StorageError(f"{what} {uri}: access denied ({str(err)[:200]}); check the credentials") from None
    if not matched:
        raise StorageError(f"{what} {uri}: the pattern matched no files; check the path and the pattern")
    return matched


def list_source(uri: str, what: str = "file", retries: int = 5, backoff: float = 2.0, **options: Any) -> list:
    """One file, or every file a glob matches (sorted), as `sources.SourceFile`s to stream:
    opened (decompressed by extension) only when read."""
    from distillery.sources import SourceFile

    fs, path = _fs(uri, **_for(uri, options))
    scheme = uri.split("://", 1)[0] + "://" if "://" in uri else ""
    if any(c in uri for c in GLOB_CHARS):
        matched = _glob(fs, path, uri, what, retries, backoff)
        names = [scheme + p for p in matched]
    elif not retrying(f"checking {what} {uri}", lambda: fs.isfile(path), retries, backoff):
        raise StorageError(f"{what} {uri} does not exist; check the path (relative paths start at the working directory)")
    else:
        matched, names = [path], [uri]
    out = []
    for name, p in zip(names, matched):
        info = retrying(f"reading {what} {name}'s size", lambda p=p: fs.info(p), retries, backoff)
        # What tells a changed file from the same one without reading it: ETag on S3, mtime on disk.
        mark = str(info.get("ETag") or info.get("mtime") or info.get("LastModified") or "")
        out.append(SourceFile(name, int(info.get("size") or 0), _opener(fs, p), mark))
    return out


def _opener(fs, path: str) -> partial:
    return partial(fs.open, path, "rb", compression="infer")  # picklable: opened in the build's worker
