"""Seed parsing: bytes of a JSONL / JSON / CSV / Parquet file -> seed rows.

Pure logic: the caller reads the bytes (see adapters.storage). Unusable
records are returned as rejects with a reason, never dropped.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from distillery.errors import DistilleryError

FORMATS = ("jsonl", "json", "csv", "parquet")
_EXT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class SourceError(DistilleryError, ValueError):
    """The source as a whole is unusable; the message names it and what to do."""


@dataclass
class ParsedSource:
    seeds: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    digest: str = ""  # sha256 over every file's name and bytes: what the build read

    @property
    def rows_in(self) -> int:
        return len(self.seeds) + len(self.rejects)


def detect_format(uri: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    lower = uri.lower()
    for ext, name in _EXT.items():
        if lower.endswith(ext) or lower.endswith(ext + ".gz"):
            return name
    raise SourceError(f"{uri}: cannot tell the format from the extension; set source.format to one of {', '.join(FORMATS)}")


def get_path(record: dict, path: str) -> Any:
    """Follow a dotted path ('instances.0.input') into nested dicts and lists."""
    node: Any = record
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return node


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()


def _has_path(records: list[dict], path: str) -> bool:
    return any(get_path(r, path) is not MISSING for r in records if isinstance(r, dict))


def records_jsonl(data: bytes) -> tuple[list[tuple[int, dict]], list[dict]]:
    ok, bad = [], []
    for lineno, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            bad.append(_reject(f"line-{lineno}", "malformed_json", f"line {lineno}: {err.msg} at column {err.colno}", line))
            continue
        if not isinstance(rec, dict):
            bad.append(_reject(f"line-{lineno}", "malformed_json", f"line {lineno}: expected a JSON object, got {type(rec).__name__}", line))
            continue
        ok.append((lineno, rec))
    return ok, bad


def records_table(data: bytes, fmt: str, uri: str) -> list[tuple[int, dict]]:
    try:
        if fmt == "csv":
            frame = pl.read_csv(io.BytesIO(data), infer_schema=False)
        elif fmt == "parquet":
            frame = pl.read_parquet(io.BytesIO(data))
        else:
            loaded = json.loads(data)
            if isinstance(loaded, dict):
                loaded = next((v for v in loaded.values() if isinstance(v, list)), None)
            if not isinstance(loaded, list):
                raise SourceError(f"{uri}: a JSON source must be a list of objects (or an object holding one); use JSONL for one object per line")
            return [(i, r) for i, r in enumerate(loaded, start=1)]
    except SourceError:
        raise
    except Exception as err:  # polars / json raise many types for corrupt files
        raise SourceError(f"{uri}: cannot be read as {fmt} ({err.__class__.__name__}: {str(err)[:200]}); check the file or set source.format") from None
    return list(enumerate(frame.to_dicts(), start=1))


def _reject(seed_id: str, reason: str, detail: str, raw: Any) -> dict:
    raw_text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
    return {"seed_id": seed_id, "stage": "load", "reason": reason, "detail": detail, "raw": raw_text}


def _text(value: Any) -> str | None:
    if value is MISSING or value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def parse_source(
    data: bytes,
    uri: str,
    fmt: str = "auto",
    instruction_column: str = "instruction",
    input_column: str | None = None,
    id_column: str | None = None,
    limit: int | None = None,
    response_column: str | None = None,
) -> ParsedSource:
    """Turn a seed file's bytes into seed rows {seed_id, instruction, input}."""
    fmt = detect_format(uri, fmt)
    if fmt == "jsonl":
        records, rejects = records_jsonl(data)
    else:
        records, rejects = records_table(data, fmt, uri), []
    if limit is not None:
        records = records[:limit]
    dicts = [r for _, r in records if isinstance(r, dict)]
    _check_columns(dicts, uri, instruction_column, input_column, id_column, response_column)
    out = ParsedSource(rejects=rejects)
    seeds_from(records, out, instruction_column, input_column, id_column, response_column)
    return out


def seeds_from(records: list[tuple[int, Any]], out: ParsedSource, instruction_column: str, input_column: str | None,
               id_column: str | None, response_column: str | None) -> None:
    """Records (position, dict) -> seed rows or rejects, appended to `out`."""
    for pos, rec in records:
        seed_id = _text(get_path(rec, id_column)) if id_column else None
        seed_id = seed_id or f"row-{pos}"
        instruction = _text(get_path(rec, instruction_column))
        if instruction is None or not instruction.strip():
            out.rejects.append(_reject(seed_id, "empty_prompt", f"{instruction_column!r} is empty or missing", rec))
            continue
        extra = _text(get_path(rec, input_column)) if input_column else None
        seed = {"seed_id": seed_id, "instruction": instruction.strip(), "input": (extra or "").strip()}
        if response_column:
            answer = _text(get_path(rec, response_column))
            if answer is None or not answer.strip():
                out.rejects.append(_reject(seed_id, "empty_response", f"{response_column!r} is empty or missing", rec))
                continue
            seed["response"] = answer.strip()
        out.seeds.append(seed)


def parse_sources(files: list[tuple[str, bytes]], fmt: str = "auto", instruction_column: str = "instruction",
                  input_column: str | None = None, id_column: str | None = None, limit: int | None = None,
                  response_column: str | None = None) -> ParsedSource:
    """Parse one file or many (a glob's matches, in order) into one set of seed rows.

    With several files, positional ids carry the file's name (`part-1.jsonl:row-3`).
    A seed id seen before is quarantined as `duplicate_seed_id`, never silently merged.
    """
    digest = hashlib.sha256()
    out = ParsedSource()
    for uri, data in files:
        digest.update(f"{uri}\0{len(data)}\0".encode())
        digest.update(data)
        remaining = None if limit is None else limit - out.rows_in
        if remaining is not None and remaining <= 0:
            continue
        part = parse_source(data, uri, fmt, instruction_column, input_column, id_column, remaining, response_column)
        if len(files) > 1:
            name = posixpath.basename(uri)
            for row in [*part.seeds, *part.rejects]:
                if row["seed_id"].startswith(("row-", "line-")):
                    row["seed_id"] = f"{name}:{row['seed_id']}"
        out.seeds += part.seeds
        out.rejects += part.rejects
    seen: set[str] = set()
    unique = []
    for seed in out.seeds:
        if seed["seed_id"] in seen:
            out.rejects.append(_reject(seed["seed_id"], "duplicate_seed_id", f"seed id {seed['seed_id']!r} appears more than once (source.id_column={id_column!r}); ids must be unique", seed))
            continue
        seen.add(seed["seed_id"])
        unique.append(seed)
    out.seeds = unique
    out.digest = digest.hexdigest()
    return out


@dataclass
class SourceFile:
    """One file of a source, opened by the caller (pure code reads, never opens)."""

    uri: str
    size: int
    open: Any  # () -> a binary file handle
    mark: str = ""  # ETag or mtime: a changed file has another


def _jsonl_records(fh, digest) -> Iterator[tuple[int, dict] | dict]:
    """Records of a JSONL handle, or a reject dict for a malformed line; hashed on the way."""
    for lineno, raw in enumerate(fh, start=1):
        digest.update(raw)
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            yield _reject(f"line-{lineno}", "malformed_json", f"line {lineno}: {err.msg} at column {err.colno}", line)
            continue
        if not isinstance(rec, dict):
            yield _reject(f"line-{lineno}", "malformed_json", f"line {lineno}: expected a JSON object, got {type(rec).__name__}", line)
            continue
        yield (lineno, rec)


def _file_records(file: SourceFile, fmt: str, digest) -> Iterator[tuple[int, dict] | dict]:
    digest.update(f"{file.uri}\0{file.size}\0".encode())
    with file.open() as fh:
        if detect_format(file.uri, fmt) == "jsonl":
            yield from _jsonl_records(fh, digest)
            return
        data = fh.read()  # CSV, JSON and Parquet are parsed whole (a file at a time)
    digest.update(data)
    yield from records_table(data, detect_format(file.uri, fmt), file.uri)


@dataclass
class StreamedSource:
    """What `stream_sources` read, filled in as it goes: `digest` is final once exhausted."""

    rows_in: int = 0
    seeds: int = 0
    rejects: int = 0
    digest: str = ""


def stream_sources(files: list[SourceFile], shard_rows: int, seen: StreamedSource, fmt: str = "auto",
                   instruction_column: str = "instruction", input_column: str | None = None,
                   id_column: str | None = None, limit: int | None = None,
                   response_column: str | None = None) -> Iterator[tuple[list[dict], list[dict], int]]:
    """parse_sources, a shard at a time: yields (seeds, rejects, rows read) for every
    `shard_rows` records, holding one shard's rows (and the seed ids seen, for duplicates)."""
    digest = hashlib.sha256()
    ids = SeenIds()
    chunk = ParsedSource()
    count = 0

    def flush():
        nonlocal chunk, count
        out = (chunk.seeds, chunk.rejects, count)
        seen.seeds += len(chunk.seeds)
        seen.rejects += len(chunk.rejects)
        chunk, count = ParsedSource(), 0
        return out

    columns = {c: o for c, o in ((instruction_column, "instruction_column"), (input_column, "input_column"),
                                 (id_column, "id_column"), (response_column, "response_column")) if c}
    for file in files:
        name = posixpath.basename(file.uri) if len(files) > 1 else None
        unseen, first, in_file = dict(columns), None, 0  # a column no record of the first shard has is an error
        for item in _file_records(file, fmt, digest):
            if limit is not None and seen.rows_in >= limit:
                continue  # keep reading: the digest covers every byte
            seen.rows_in += 1
            count += 1
            part = ParsedSource()
            in_file += 1
            if isinstance(item, dict):
                part.rejects.append(item)
            else:
                first = first or item[1]
                for column in [c for c in unseen if get_path(item[1], c) is not MISSING]:
                    del unseen[column]
                seeds_from([item], part, instruction_column, input_column, id_column, response_column)
            for row in [*part.seeds, *part.rejects]:
                if name and row["seed_id"].startswith(("row-", "line-")):
                    row["seed_id"] = f"{name}:{row['seed_id']}"
            for seed in part.seeds:
                if not ids.add(seed["seed_id"]):
                    chunk.rejects.append(_reject(seed["seed_id"], "duplicate_seed_id", f"seed id {seed['seed_id']!r} appears more than once (source.id_column={id_column!r}); ids must be unique", seed))
                else:
                    chunk.seeds.append(seed)
            chunk.rejects += part.rejects
            if in_file == shard_rows:
                _missing_columns(unseen, first, file.uri)
            if count >= shard_rows:
                yield flush()
        if in_file < shard_rows:
            _missing_columns(unseen, first, file.uri)
    seen.digest = digest.hexdigest()
    if count or seen.rows_in == 0:
        yield flush()


class SeenIds:
    """The seed ids a streamed source has shown so far, as 64-bit hashes: 8 bytes an id in
    a sorted array instead of ~90 in a set of strings, so memory stays near a shard's even at
    ten million seeds. Two different ids share a hash with odds of about n^2 / 2^65 (3e-8 at
    a million): that row would be quarantined as a duplicate, never dropped."""

    def __init__(self, batch: int = 1 << 16):
        self.old = np.empty(0, dtype=np.uint64)
        self.new: set[int] = set()
        self.batch = batch

    def add(self, seed_id: str) -> bool:
        """True if the id is new (and now seen), False if it was seen before."""
        h = int.from_bytes(hashlib.blake2b(seed_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
        if h in self.new:
            return False
        at = int(np.searchsorted(self.old, np.uint64(h)))
        if at < self.old.size and int(self.old[at]) == h:
            return False
        self.new.add(h)
        if len(self.new) >= self.batch:
            fresh = np.sort(np.fromiter(self.new, dtype=np.uint64, count=len(self.new)))
            # A merge of two sorted arrays (none of `fresh` is in `old`): one copy, not a sort.
            self.old = np.insert(self.old, np.searchsorted(self.old, fresh), fresh)
            self.new.clear()
        return True


def _missing_columns(unseen: dict[str, str], first: dict | None, uri: str) -> None:
    if unseen and first is not None:
        column, option = next(iter(unseen.items()))
        found = ", ".join(sorted(first.keys())[:12])
        raise SourceError(f"{uri}: column {column!r} not found (source.{option}); columns there: {found}")


def _check_columns(dicts: list[dict], uri: str, instruction_column: str, input_column: str | None,
                   id_column: str | None, response_column: str | None) -> None:
    for column, option in ((instruction_column, "instruction_column"), (input_column, "input_column"), (id_column, "id_column"), (response_column, "response_column")):
        if column and dicts and not _has_path(dicts, column):
            found = ", ".join(sorted(dicts[0].keys())[:12])
            raise SourceError(f"{uri}: column {column!r} not found (source.{option}); columns there: {found}")
