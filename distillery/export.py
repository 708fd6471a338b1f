"""`distillery export`: a dataset, read through its manifest, in the formats trainers read.

  openai    chat fine-tuning JSONL: one {"messages": [...]} per line
  alpaca    a JSON list of {"instruction", "input", "output"}
  sharegpt  a JSON list of {"conversations": [{"from", "value"}, ...]}
  hf        a folder `datasets.load_dataset` opens: the Parquet shards and the dataset card

Polars does the reshaping. Shards are checked against the manifest's sha256 first.
"""

from __future__ import annotations

import io
import json

import polars as pl

from distillery.adapters.storage import StorageError, open_dataset
from distillery.report import CARD, MANIFEST
from distillery.shards import sha256_bytes

FORMATS = ("openai", "alpaca", "sharegpt", "hf")
_FROM = {"system": "system", "user": "human", "assistant": "gpt"}


def _trusted_shards(ds, uri: str) -> tuple[dict, list[tuple[str, bytes]]]:
    if not ds.exists(MANIFEST):
        raise StorageError(f"{uri}: no {MANIFEST}; only finished builds can be exported (rerun `distillery run`)")
    manifest = json.loads(ds.read(MANIFEST))
    shards = []
    for entry in manifest["shards"]:
        data = ds.read(entry["path"])
        if sha256_bytes(data) != entry["sha256"]:
            raise StorageError(f"{uri}/{entry['path']}: does not match the manifest's sha256; rebuild the dataset")
        shards.append((entry["path"], data))
    return manifest, shards


def _frame(shards: list[tuple[str, bytes]]) -> pl.DataFrame:
    frames = [pl.read_parquet(io.BytesIO(data)) for _, data in shards]
    return pl.concat(frames) if frames else pl.DataFrame()


def _reshape(frame: pl.DataFrame, fmt: str) -> pl.DataFrame:
    if fmt == "openai":
        return frame.select("messages")
    if fmt == "alpaca":
        for name in ("instruction", "input"):  # shards written before these columns existed
            if name not in frame.columns:
                frame = frame.with_columns(pl.lit(None, pl.String).alias(name))
        return frame.select(
            pl.coalesce("instruction", "prompt").alias("instruction"),
            pl.col("input").fill_null(""),
            pl.col("response").alias("output"),
        )
    # sharegpt: roles renamed, fields renamed
    return frame.select(
        pl.col("messages").list.eval(
            pl.struct(
                pl.element().struct.field("role").replace_strict(_FROM, default="human").alias("from"),
                pl.element().struct.field("content").alias("value"),
            )
        ).alias("conversations")
    )


def export_dataset(uri: str, fmt: str, to: str) -> dict:
    """Write the export; returns {"rows", "path"}."""
    if fmt not in FORMATS:
        raise StorageError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    ds = open_dataset(uri)
    manifest, shards = _trusted_shards(ds, uri)
    rows = sum(e["rows"] for e in manifest["shards"])
    if fmt == "hf":
        out = open_dataset(to)
        for path, data in shards:
            out.write(path, data)
        out.write(CARD, ds.read(CARD))
        return {"rows": rows, "path": to}
    frame = _frame(shards)
    if "messages" not in frame.columns:
        raise StorageError(f"{uri}: a preference dataset (prompt/chosen/rejected) exports only as --format hf")
    table = _reshape(frame, fmt)
    buf = io.BytesIO()
    if fmt == "openai":
        table.write_ndjson(buf)
    else:
        buf.write(json.dumps(table.to_dicts(), ensure_ascii=False, indent=1).encode())
    parent, _, name = to.rstrip("/").rpartition("/")
    open_dataset(parent or ".").write(name, buf.getvalue())
    return {"rows": rows, "path": to}
