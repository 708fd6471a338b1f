"""Shard planning and encoding: a table -> fixed-name Parquet shards with checksums. Pure.

Names are deterministic (`data/train-00000-of-00003.parquet`) and planned
before anything is written, so a rerun replaces the same files instead of
appending new ones. Shards are streamed into any binary file object; the
sha256 and size are computed on the way, so a shard is never held twice in
memory.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_ROW_GROUP = 10_000


@dataclass(frozen=True)
class ShardSpec:
    """How shards are cut and encoded (from the recipe's `output` section)."""

    rows_per_shard: int = 1000
    max_shard_bytes: int | None = 512 * 1024 * 1024
    row_group_size: int = DEFAULT_ROW_GROUP
    compression: str = "zstd"
    compression_level: int | None = 3


@dataclass(frozen=True)
class ShardPlan:
    path: str  # relative to the dataset root
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class WrittenShard:
    path: str
    rows: int
    sha256: str
    bytes: int
    column_bytes: tuple[tuple[str, int], ...] = ()  # compressed bytes per top-level column

    def entry(self) -> dict:
        entry = {"path": self.path, "rows": self.rows, "sha256": self.sha256, "bytes": self.bytes}
        kd = {name: size for name, size in self.column_bytes if name.startswith("kd_")}
        if kd:
            entry["column_bytes"] = kd
        return entry


def shard_bounds(total: int, rows_per_shard: int) -> list[tuple[int, int]]:
    """[start, stop) offsets; an empty table still gets one (empty) shard."""
    if total == 0:
        return [(0, 0)]
    return [(i, min(i + rows_per_shard, total)) for i in range(0, total, rows_per_shard)]


def rows_per_shard_for(table: pa.Table, spec: ShardSpec) -> int:
    """The row target, lowered so that a shard's Arrow data stays under the byte target.

    Bytes are measured on the uncompressed Arrow table, as `datasets`' max_shard_size
    is: files come out smaller once compressed. The average row size is used, so the
    cut is deterministic for a given table.
    """
    rows = spec.rows_per_shard
    if spec.max_shard_bytes and table.num_rows:
        fit = spec.max_shard_bytes * table.num_rows // max(1, table.nbytes)  # integers: no float floor surprises
        rows = min(rows, max(1, fit))
    return rows


def shard_name(prefix: str, split: str, index: int, count: int) -> str:
    return f"{prefix}/{split}-{index:05d}-of-{count:05d}.parquet"


def plan_shards(table: pa.Table, prefix: str, split: str, spec: ShardSpec) -> list[ShardPlan]:
    bounds = shard_bounds(table.num_rows, rows_per_shard_for(table, spec))
    return [ShardPlan(shard_name(prefix, split, i, len(bounds)), start, stop) for i, (start, stop) in enumerate(bounds)]


class HashingWriter:
    """A write-only binary file that hashes and counts what passes through it."""

    def __init__(self, raw):
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        self.raw.write(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()

    def tell(self) -> int:
        return self.size

    def writable(self) -> bool:
        return True

    def close(self) -> None:  # the caller owns `raw`; pyarrow calls close when it is done
        self.closed = True


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet leaf column paths ('messages.list.element.role'): what per-column options match."""
    buf = io.BytesIO()
    pq.write_table(schema.empty_table(), buf)
    parquet = pq.ParquetFile(io.BytesIO(buf.getvalue())).schema
    return [parquet.column(i).path for i in range(len(parquet))]


def _encodings(schema: pa.Schema) -> dict:
    """Soft-target columns compress best without dictionaries (ids) and byte-split (float16
    logprobs); both are standard Parquet encodings every reader knows."""
    if not any(name.startswith("kd_") for name in schema.names):
        return {}
    leaves = _leaf_paths(schema)
    return {
        "use_dictionary": [p for p in leaves if not p.startswith("kd_")],
        "use_byte_stream_split": [p for p in leaves if p.startswith(("kd_token_logprobs", "kd_topk_logprobs"))],
    }


def write_shard(
    table: pa.Table, plan: ShardPlan, sink, spec: ShardSpec, on_row_group: Callable[[int], None] | None = None
) -> WrittenShard:
    """Encode rows [plan.start, plan.stop) of `table` as one Parquet file into `sink`.

    `on_row_group(n)` is called after each row group is handed to the writer.
    """
    return write_pieces([table.slice(plan.start, plan.rows)], table.schema, plan.path, sink, spec, on_row_group)


def write_pieces(pieces: Iterable[pa.Table], schema: pa.Schema, path: str, sink, spec: ShardSpec,
                 on_row_group: Callable[[int], None] | None = None) -> WrittenShard:
    """One Parquet file from tables arriving one after another (a shard never held whole):
    row groups of `spec.row_group_size` rows, cut across the pieces as one table would be."""
    out = HashingWriter(sink)
    compression = None if spec.compression == "none" else spec.compression
    level = spec.compression_level if compression in ("zstd", "gzip", "brotli") else None
    rows, groups = 0, 0
    pending: list[pa.Table] = []
    held = 0
    with pq.ParquetWriter(out, schema, compression=compression, compression_level=level, **_encodings(schema)) as writer:
        def flush(table: pa.Table) -> None:
            nonlocal groups
            writer.write_table(table, row_group_size=spec.row_group_size)
            groups += 1
            if on_row_group:
                on_row_group(groups)

        for piece in pieces:
            pending.append(piece)
            held += piece.num_rows
            rows += piece.num_rows
            while held >= spec.row_group_size:
                whole = pa.concat_tables(pending)
                flush(whole.slice(0, spec.row_group_size))
                rest = whole.slice(spec.row_group_size)
                pending, held = [rest], rest.num_rows
        if held or rows == 0:
            flush(pa.concat_tables(pending) if pending else schema.empty_table())
    sizes: dict[str, int] = {}
    meta = writer.writer.metadata
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            name = column.path_in_schema.split(".")[0]
            sizes[name] = sizes.get(name, 0) + column.total_compressed_size
    return WrittenShard(path, rows, out.digest.hexdigest(), out.size, tuple(sorted(sizes.items())))


def encode_shards(table: pa.Table, prefix: str, split: str, spec: ShardSpec) -> list[tuple[WrittenShard, bytes]]:
    """Every shard in memory: for tests and small tables."""
    shards = []
    for plan in plan_shards(table, prefix, split, spec):
        buf = io.BytesIO()
        shards.append((write_shard(table, plan, buf, spec), buf.getvalue()))
    return shards


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
