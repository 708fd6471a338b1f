"""`distillery export`: a dataset, read through its manifest, in the formats trainers read.

  openai    chat fine-tuning JSONL: one {"messages": [...]} per line
  alpaca    a JSON list of {"instruction", "input", "output"}
  sharegpt  a JSON list of {"conversations": [{"from", "value"}, ...]}
  hf        a folder `datasets.load_dataset` and TRL open as it is: the Parquet shards, the
            dataset card, the manifest (so `distillery inspect` checks it) and `kd/` when the
            build has soft targets (so `distillery kd-check` works); rejected rows stay behind

Polars does the reshaping. Shards are checked against the manifest's sha256 first.
"""

from __future__ import annotations

import io
import json

import polars as pl

from distillery.adapters.storage import StorageError, open_dataset
from distillery.card import PICTURES
from distillery.report import CARD, MANIFEST, dataset_card, dumps
from distillery.shards import sha256_bytes

FORMATS = ("openai", "alpaca", "sharegpt", "hf")
KD_FOLDER = "kd"  # the teacher's tokenizer and whatever else kd-check reads
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
    frame = pl.concat(frames) if frames else pl.DataFrame()
    if "messages" in frame.columns and frame.schema.get("prompt") == pl.String:  # kept rows written before `prompt_text`
        frame = frame.rename({"prompt": "prompt_text"})
    return frame


def _reshape(frame: pl.DataFrame, fmt: str) -> pl.DataFrame:
    if fmt == "openai":
        return frame.select("messages")
    if fmt == "alpaca":
        for name in ("instruction", "input"):  # shards written before these columns existed
            if name not in frame.columns:
                frame = frame.with_columns(pl.lit(None, pl.String).alias(name))
        return frame.select(
            pl.coalesce("instruction", "prompt_text").alias("instruction"),
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


def export_manifest(manifest: dict, uri: str) -> dict:
    """The build's manifest as the hf export carries it: every data shard as it is, no
    rejected shards (they are not training data), and where the rows came from."""
    return {
        **manifest,
        "rejected_shards": [],
        "rejected_rows": 0,
        "export": {"format": "hf", "source": uri, "rejected_rows_left_out": manifest.get("rejected_rows", 0)},
    }


def _export_hf(ds, uri: str, manifest: dict, shards: list[tuple[str, bytes]], to: str) -> None:
    """Shards, kd/ and the card first, the manifest last: like a build, the folder is unfinished without one."""
    out = open_dataset(to)
    if (type(out.fs), out.root) == (type(ds.fs), ds.root):
        raise StorageError(f"--to {to}: that is the dataset itself; export into another folder")
    out.remove(MANIFEST)
    kd_files = ds.list(KD_FOLDER)
    keep = {*kd_files, *(path for path, _ in shards)}
    for path in out.list("data") + out.list("rejected") + out.list(KD_FOLDER):  # left from an earlier export here
        if path not in keep:
            out.remove(path)
    for path, data in shards:
        out.write(path, data)
    for path in kd_files:
        out.write(path, ds.read(path))
    for picture in PICTURES:  # the card links them
        if ds.exists(picture):
            out.write(picture, ds.read(picture))
        else:
            out.remove(picture)
    out.write(CARD, ds.read(CARD) if ds.exists(CARD) else dataset_card(manifest).encode())
    out.write(MANIFEST, dumps(export_manifest(manifest, uri)))


def export_dataset(uri: str, fmt: str, to: str) -> dict:
    """Write the export; returns {"rows", "path"}."""
    if fmt not in FORMATS:
        raise StorageError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    ds = open_dataset(uri)
    manifest, shards = _trusted_shards(ds, uri)
    rows = sum(e["rows"] for e in manifest["shards"])
    if fmt == "hf":
        _export_hf(ds, uri, manifest, shards, to)
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
