"""Run stages shard by shard on a store, skipping every shard whose record matches.

Pure logic with storage passed in: `store` is anything with read/write/exists/list/
remove over paths relative to the dataset root (adapters.storage.Dataset is one).
The same two calls serve one process, a Prefect task per shard, or a Ray task.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import pyarrow as pa

from distillery.errors import DistilleryError
from distillery.faults import failpoint
from distillery.stages.contract import (
    Record, Stage, StagedFile, part_name, record_name, rejected_name, stage_key,
)
from distillery.stages.staged import decode, decode_table, encode, nullable
from distillery.schema import REJECT_SCHEMA

STAGED_REJECTS = nullable(REJECT_SCHEMA)


class Store(Protocol):
    def read(self, path: str) -> bytes: ...
    def write(self, path: str, data: bytes) -> None: ...
    def exists(self, path: str) -> bool: ...
    def list(self, folder: str) -> list[str]: ...
    def remove(self, path: str) -> None: ...
    def create(self, path: str, data: bytes) -> None: ...  # FileExistsError if it exists: one writer wins


class AccountingError(RuntimeError):
    """A stage lost or invented rows: a bug, never an input problem."""


def finished(store: Store, folder: str, shard: int, key: str, verify: bool = True) -> Record | None:
    """The shard's record if it matches `key` and (with `verify`) every file it lists is
    intact; None means the shard must be (re)done."""
    path = f"{folder}/{record_name(shard)}"
    if not store.exists(path):
        return None
    try:
        record = Record.loads(store.read(path))
    except (ValueError, KeyError, TypeError):
        return None  # a record cut short: redo the shard
    if record.key != key:
        return None
    if verify:
        for f in record.files:
            try:
                intact = hashlib.sha256(store.read(f.path)).hexdigest() == f.sha256
            except (FileNotFoundError, OSError):
                intact = False
            if not intact:
                return None
    return record


class StagedShardMissing(DistilleryError):
    """A staged file a finished shard listed is gone: another build into the same output
    published (and cleared the staging area) while this one ran."""


def _read(store: Store, file: StagedFile) -> bytes:
    try:
        return store.read(file.path)
    except FileNotFoundError:
        raise StagedShardMissing(
            f"{file.path} is gone while this build read it: another build into the same output probably "
            "published and cleared _temporary/; check the output's manifest.json, and rerun to build this recipe again"
        ) from None


def read_rows(store: Store, files: Sequence[StagedFile]) -> list[dict]:
    return [row for f in files for row in decode(_read(store, f), f.sha256, f.path)]


def read_table(store: Store, file: StagedFile) -> pa.Table:
    return decode_table(_read(store, file), file.sha256, file.path)


def write_shard(store: Store, folder: str, name: str, shard: int, key: str, rows_in: int,
                rows: list[dict], schema: pa.Schema, rejected: list[dict], facts: dict, seconds: float,
                attempt: str | None = None) -> Record:
    """Rows, then rejects, then the record: a record is only ever written after its files.

    With `attempt` (an id unique to this try), the files get it in their names and the record
    is created only if no other try committed first (create-only: a hard link on disk,
    If-None-Match on S3): two tries of a shard running at once (at-least-once executors)
    never overwrite each other's files, and the one committed is the one every reader sees."""
    files = []
    tag = f".{attempt}" if attempt else ""
    for path, part, part_schema in ((f"{folder}/{part_name(shard)[:-8]}{tag}.parquet", rows, schema),
                                    (f"{folder}/{rejected_name(shard)[:-8]}{tag}.parquet", rejected, STAGED_REJECTS)):
        data, sha = encode(part, part_schema)
        store.write(path, data)
        files.append(StagedFile(path, sha, len(data), len(part)))
    failpoint(f"stage.{name}.staged")
    reasons = Counter(r["reason"] for r in rejected)
    record = Record(name, shard, key, rows_in, tuple(files), tuple(sorted(reasons.items())),
                    tuple(sorted(facts.items())), round(seconds, 3))
    if attempt is None:
        store.write(f"{folder}/{record_name(shard)}", record.dumps())
        return record
    try:
        store.create(f"{folder}/{record_name(shard)}", record.dumps())
    except FileExistsError:
        winner = finished(store, folder, shard, key)
        if winner is None:
            raise
        for f in files:  # the other try won: its files are the shard's
            store.remove(f.path)
        return winner
    return record


def run_shard(store: Store, root: str, stage: Stage, shard: int, inputs: Sequence[StagedFile],
              extra_inputs: Sequence[str] = (), attempt: str | None = None) -> tuple[Record, bool]:
    """Run `stage` on one shard (the rows of `inputs`), or find it done. Returns (record, ran).

    `extra_inputs` are checksums of other files the stage depends on (a drop list);
    `attempt` commits create-only (write_shard)."""
    key = stage_key(stage, [f.sha256 for f in inputs] + list(extra_inputs))
    folder = f"{root}/{stage.name}"
    done = finished(store, folder, shard, key)
    if done is not None:
        return done, False
    if attempt is not None and store.exists(f"{folder}/{record_name(shard)}"):
        store.remove(f"{folder}/{record_name(shard)}")  # an earlier key's (or a torn) record: this try replaces it
    started = time.perf_counter()
    rows = read_rows(store, inputs)
    out = stage.run(rows, shard)
    record = write_shard(store, folder, stage.name, shard, key, len(rows), out.rows, stage.schema,
                         [{**r, "stage": r.get("stage") or stage.name} for r in out.rejected], out.facts,
                         time.perf_counter() - started, attempt)
    if not record.balanced(getattr(stage, "fanout", 1)):
        raise AccountingError(f"stage {stage.name} shard {shard}: {record.rows_in} rows in, {record.rows_out} out, "
                              f"{record.rejected} rejected (fanout {getattr(stage, 'fanout', 1)})")
    return record, True


def stage_source(store: Store, root: str, name: str, key: str, shards: Iterable[tuple[list[dict], list[dict], int]],
                 schema: pa.Schema, about: Callable[[], dict] = dict) -> tuple[list[Record], int]:
    """The first stage: shards parsed from the source, as (rows, rejects, rows_read) per shard.
    Shards whose record matches are not rewritten; `about()` (e.g. the source's digest, known
    once it is read) is kept with the stage's completion. Returns (records, shards written)."""
    folder = f"{root}/{name}"
    records, written = [], 0
    for shard, (rows, rejected, rows_in) in enumerate(shards):
        shard_key = f"{key}-{shard}"
        done = finished(store, folder, shard, shard_key)
        if done is None:
            done = write_shard(store, folder, name, shard, shard_key, rows_in, rows, schema, rejected, {}, 0.0)
            written += 1
        records.append(done)
    _drop_after(store, folder, len(records))
    store.write(f"{folder}/_complete.json", json.dumps({"key": key, "shards": len(records), **about()}).encode())
    return records, written


def source_done(store: Store, root: str, name: str, key: str) -> tuple[list[Record], dict] | None:
    """The source stage's records and `about` if it finished for this key (every shard
    intact), else None."""
    folder = f"{root}/{name}"
    if not store.exists(f"{folder}/_complete.json"):
        return None
    done = json.loads(store.read(f"{folder}/_complete.json"))
    if done.get("key") != key:
        return None
    records = [finished(store, folder, i, f"{key}-{i}") for i in range(done["shards"])]
    return None if any(r is None for r in records) else (records, done)  # type: ignore[return-value]


def _drop_after(store: Store, folder: str, count: int) -> None:
    """Remove shards numbered `count` and up: left by an earlier, longer run of the stage."""
    for path in store.list(folder):
        base = path.rsplit("/", 1)[-1]
        number = base.split("-", 1)[-1].split(".", 1)[0]
        if number.isdigit() and int(number) >= count:
            store.remove(path)


def totals(records: Sequence[Record]) -> dict[str, Any]:
    """A stage's sums over its shards: rows in, out, rejected (by reason), and its facts."""
    reasons: Counter[str] = Counter()
    facts: Counter[str] = Counter()
    for r in records:
        reasons.update(dict(r.rejected_by_reason))
        facts.update(dict(r.facts))
    return {"shards": len(records), "rows_in": sum(r.rows_in for r in records), "rows": sum(r.rows_out for r in records),
            "rejected": sum(reasons.values()), "rejected_by_reason": dict(sorted(reasons.items())),
            "facts": dict(facts), "seconds": round(sum(r.seconds for r in records), 3)}
