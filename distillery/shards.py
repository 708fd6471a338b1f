"""Shard planning and encoding: tables -> named Parquet blobs with checksums. Pure.

Names are deterministic (`data/train-00000-of-00003.parquet`), so a rerun
replaces the same files instead of appending new ones.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class EncodedShard:
    path: str  # relative to the dataset root
    rows: int
    sha256: str
    data: bytes

    def entry(self) -> dict:
        return {"path": self.path, "rows": self.rows, "sha256": self.sha256, "bytes": len(self.data)}


def shard_bounds(total: int, rows_per_shard: int) -> list[tuple[int, int]]:
    """[start, stop) offsets; an empty table still gets one (empty) shard."""
    if total == 0:
        return [(0, 0)]
    return [(i, min(i + rows_per_shard, total)) for i in range(0, total, rows_per_shard)]


def shard_name(prefix: str, split: str, index: int, count: int) -> str:
    return f"{prefix}/{split}-{index:05d}-of-{count:05d}.parquet"


def encode_table(table: pa.Table, compression: str) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=None if compression == "none" else compression)
    return buf.getvalue()


def encode_shards(table: pa.Table, prefix: str, split: str, rows_per_shard: int, compression: str) -> list[EncodedShard]:
    bounds = shard_bounds(table.num_rows, rows_per_shard)
    shards = []
    for index, (start, stop) in enumerate(bounds):
        data = encode_table(table.slice(start, stop - start), compression)
        name = shard_name(prefix, split, index, len(bounds))
        shards.append(EncodedShard(name, stop - start, hashlib.sha256(data).hexdigest(), data))
    return shards


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
