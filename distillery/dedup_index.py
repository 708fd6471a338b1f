"""The cross-run dedup index's on-disk form: Parquet parts plus index.json. Pure.

A part holds, per published row: its id, its exact-text key and its MinHash
signature. index.json lists the parts and the settings the signatures were
made with; it is written last, so a half-written part is never read.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distillery.dedup import DedupError, DedupParams
from distillery.exact import keys_from_arrow

META = "index.json"
FORMAT = "distillery-dedup-index/1"


def part_schema(num_perm: int) -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("exact_key", pa.binary(16), nullable=False),
        pa.field("signature", pa.list_(pa.uint32(), num_perm), nullable=False),
    ])


def encode_part(ids: list[str], keys: list[bytes], sigs: np.ndarray) -> bytes:
    num_perm = sigs.shape[1]
    flat = pa.array(np.ascontiguousarray(sigs, dtype=np.uint32).reshape(-1), type=pa.uint32())
    table = pa.table(
        [pa.array(ids, pa.string()), pa.array(keys, pa.binary(16)), pa.FixedSizeListArray.from_arrays(flat, num_perm)],
        schema=part_schema(num_perm),
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def decode_part(data: bytes, num_perm: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    table = pq.read_table(io.BytesIO(data))
    sigs = table.column("signature").combine_chunks().flatten().to_numpy().reshape(-1, num_perm)
    return table.column("id").to_pylist(), keys_from_arrow(table.column("exact_key")), sigs


def new_meta(params: DedupParams, datasketch_version: str) -> dict:
    return {"format": FORMAT, "params": asdict(params), "datasketch": datasketch_version, "parts": [], "rows": 0}


def check_meta(meta: dict, params: DedupParams, where: str) -> None:
    if meta.get("format") != FORMAT:
        raise DedupError(f"{where}: not a distillery dedup index (format {meta.get('format')!r}); point --index at a folder made by `distillery dedup --update-index`")
    params.check_index(DedupParams(**meta["params"]), where)


def add_part(meta: dict, path: str, rows: int, data: bytes) -> dict:
    parts = [*meta["parts"], {"path": path, "rows": rows, "sha256": hashlib.sha256(data).hexdigest()}]
    return {**meta, "parts": parts, "rows": meta["rows"] + rows}


def part_name(meta: dict) -> str:
    return f"parts/part-{len(meta['parts']):05d}.parquet"
