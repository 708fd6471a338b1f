"""Staged shards as bytes: rows <-> Parquet with a declared schema and a sha256. Pure.

A staged shard is read back only through `decode`, which checks the bytes against the
checksum its completion record holds: a truncated or corrupt file is never read as data.
"""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq

from distillery.errors import DistilleryError
from distillery.schema import STORED_AS

_ROW_KEY = {column: key for key, column in STORED_AS.items()}


class CorruptShard(DistilleryError):
    """A staged file does not match the checksum its completion record holds."""


def nullable(schema: pa.Schema) -> pa.Schema:
    """The same columns, all nullable: staged rows may not have every field yet (run_id)."""
    return pa.schema([f.with_nullable(True) for f in schema], metadata=schema.metadata)


def encode(rows: list[dict] | pa.Table, schema: pa.Schema) -> tuple[bytes, str]:
    """Parquet bytes of the rows (columns in schema order, missing fields null), and their
    sha256. Rows may come as a table already (signatures: numpy-built, never Python lists)."""
    if isinstance(rows, pa.Table):
        table = rows.select(schema.names).cast(schema)
    else:
        table = pa.Table.from_pydict({f.name: [_value(r, f.name) for r in rows] for f in schema}, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", compression_level=1)
    data = sink.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def decode_table(data: bytes, sha256: str, where: str) -> pa.Table:
    """A staged file as a table, after checking its bytes against its record's sha256."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CorruptShard(f"{where}: {len(data)} bytes that do not match their completion record's sha256 "
                           "(truncated or changed after it was written); rerun to redo it")
    return pq.read_table(io.BytesIO(data))


def decode(data: bytes, sha256: str, where: str) -> list[dict]:
    """The rows of a staged file, after checking its bytes; keys as rows have them in memory."""
    table = decode_table(data, sha256, where)
    return table.rename_columns([_ROW_KEY.get(n, n) for n in table.column_names]).to_pylist()


def _value(row: dict, column: str):
    if column in row:
        return row[column]
    return row.get(_ROW_KEY.get(column, column))
