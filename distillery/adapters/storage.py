"""Storage through fsspec: local paths and s3:// URIs alike.

Credentials are never taken here from anything but fsspec's own resolution
(environment, config files) or options passed in by the caller.
"""

from __future__ import annotations

import posixpath
from contextlib import contextmanager
from typing import Any

from fsspec.core import url_to_fs

from distillery.errors import DistilleryError


class StorageError(DistilleryError, OSError):
    """A path that cannot be read or written; the message names it."""


def _fs(uri: str, **options: Any):
    try:
        return url_to_fs(uri, **options)
    except (ImportError, ValueError) as err:
        raise StorageError(f"{uri}: no filesystem for this URI ({err}); use a local path or s3://bucket/key") from None


def read_bytes(uri: str, what: str = "file", **options: Any) -> bytes:
    fs, path = _fs(uri, **options)
    try:
        if not fs.isfile(path):
            raise StorageError(f"{what} {uri} does not exist; check the path (relative paths start at the working directory)")
        with fs.open(path, "rb", compression="infer") as fh:
            return fh.read()
    except StorageError:
        raise
    except OSError as err:
        raise StorageError(f"{what} {uri} cannot be read: {err}") from None


class Dataset:
    """A dataset folder: files written under a root URI."""

    def __init__(self, uri: str, **options: Any):
        self.uri = uri.rstrip("/")
        self.fs, self.root = _fs(self.uri, **options)

    def path(self, relative: str) -> str:
        return posixpath.join(self.root, relative)

    def write(self, relative: str, data: bytes) -> None:
        """Write to a temporary name, then move into place: readers never see half a file."""
        final = self.path(relative)
        tmp = self.path(posixpath.join(posixpath.dirname(relative), f".{posixpath.basename(relative)}.tmp"))
        self.fs.makedirs(posixpath.dirname(final) or self.root, exist_ok=True)
        with self.fs.open(tmp, "wb") as fh:
            fh.write(data)
        self.fs.mv(tmp, final)

    @contextmanager
    def writer(self, relative: str):
        """A binary file handle for streaming writes; moved into place on success only."""
        final = self.path(relative)
        tmp = self.path(posixpath.join(posixpath.dirname(relative), f".{posixpath.basename(relative)}.tmp"))
        self.fs.makedirs(posixpath.dirname(final) or self.root, exist_ok=True)
        try:
            with self.fs.open(tmp, "wb") as fh:
                yield fh
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise
        self.fs.mv(tmp, final)

    def read(self, relative: str) -> bytes:
        with self.fs.open(self.path(relative), "rb") as fh:
            return fh.read()

    def exists(self, relative: str) -> bool:
        return self.fs.exists(self.path(relative))

    def list(self, folder: str) -> list[str]:
        """Relative paths of the files under `folder` (empty when it is missing)."""
        base = self.path(folder)
        if not self.fs.exists(base):
            return []
        return sorted(posixpath.relpath(p, self.root) for p in self.fs.find(base))

    def remove(self, relative: str) -> None:
        self.fs.rm(self.path(relative))

    def local_path(self) -> str | None:
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return self.root if protocol in ("file", "local") else None


def open_input(uri: str, what: str = "input", **options: Any):
    """A binary file handle for streaming reads; a clear error if it is missing."""
    fs, path = _fs(uri, **options)
    if not fs.isfile(path):
        raise StorageError(f"{what} {uri} does not exist; check the path")
    return fs.open(path, "rb")


def open_dataset(uri: str, **options: Any) -> Dataset:
    return Dataset(uri, **options)


__all__ = ["Dataset", "StorageError", "open_dataset", "read_bytes"]
