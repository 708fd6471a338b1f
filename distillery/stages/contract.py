"""The stage contract: one shape for every step of a build.

A stage turns one input shard (a list of rows) into output rows and rejected rows,
each rejected row carrying `stage`, `reason` and `detail`. It never touches storage:
an executor (executor.py here, a Prefect flow, a Ray job) reads the input shard,
calls `run`, writes what comes back under the build's staging area, and writes the
shard's completion record last. The record is what a rerun trusts: a shard whose
record matches its input and the stage's settings is skipped.

    _temporary/<build>/<stage>/part-00000.parquet       rows
    _temporary/<build>/<stage>/rejected-00000.parquet   rows rejected here, with reasons
    _temporary/<build>/<stage>/part-00000.done.json     the completion record

A stage also says what shapes its output (`settings`, and the code in `code`): a
change there changes the record's key, so that stage and every stage after it
(whose inputs then change) is redone, and no other.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa


@dataclass
class ShardOutput:
    rows: list[dict] | pa.Table
    rejected: list[dict] = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # small sums for the record (tokens, scores)


class Stage(Protocol):
    name: str
    schema: pa.Schema  # of the rows it writes (staged shards are never schema-inferred)
    fanout: int  # output rows per input row not rejected (a teacher's n); 1 for most

    def settings(self) -> dict:
        """JSON-able: everything besides the input that shapes the output."""

    def code(self) -> Sequence[Callable]:
        """The functions whose source shapes the output (hashed into the key)."""

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        """One input shard in, its output and rejects out. No storage, no globals."""


def code_digest(functions: Sequence[Callable]) -> str:
    """sha256 of the functions' source: a comment elsewhere in the file changes nothing."""
    digest = hashlib.sha256()
    for fn in functions:
        digest.update(f"{fn.__module__}.{fn.__qualname__}\0".encode())
        digest.update(inspect.getsource(fn).encode())
    return digest.hexdigest()[:16]


def stage_key(stage: Stage, inputs: Sequence[str]) -> str:
    """What a completion record must match: the stage, its settings and code, and the
    checksums of the input files it read."""
    blob = json.dumps([stage.name, stage.settings(), code_digest(stage.code()), list(inputs)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def part_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


def rejected_name(shard: int) -> str:
    return f"rejected-{shard:05d}.parquet"


def record_name(shard: int) -> str:
    return f"part-{shard:05d}.done.json"


@dataclass(frozen=True)
class StagedFile:
    path: str  # relative to the dataset root
    sha256: str
    bytes: int
    rows: int


@dataclass(frozen=True)
class Record:
    """A finished shard of a stage: written after its files, read before trusting them."""

    stage: str
    shard: int
    key: str
    rows_in: int
    files: tuple[StagedFile, ...]  # rows first, then rejects
    rejected_by_reason: tuple[tuple[str, int], ...] = ()
    facts: tuple[tuple[str, float], ...] = ()
    seconds: float = 0.0

    @property
    def rows_out(self) -> int:
        return self.files[0].rows

    @property
    def rejected(self) -> int:
        return sum(n for _, n in self.rejected_by_reason)

    def dumps(self) -> bytes:
        body = {**self.__dict__, "files": [f.__dict__ for f in self.files],
                "rejected_by_reason": dict(self.rejected_by_reason), "facts": dict(self.facts)}
        return json.dumps(body, sort_keys=True, indent=1).encode()

    @classmethod
    def loads(cls, data: bytes) -> "Record":
        body = json.loads(data)
        return cls(body["stage"], body["shard"], body["key"], body["rows_in"],
                   tuple(StagedFile(**f) for f in body["files"]),
                   tuple(sorted(body["rejected_by_reason"].items())), tuple(sorted(body["facts"].items())),
                   body.get("seconds", 0.0))

    def balanced(self, fanout: int = 1) -> bool:
        """Every input row is out (`fanout` times) or rejected: a stage may not lose rows."""
        return (self.rows_in - self.rejected) * fanout == self.rows_out
