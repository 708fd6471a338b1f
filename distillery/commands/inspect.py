"""`distillery inspect`: read a dataset through its manifest and check it."""

from __future__ import annotations

import io
import json
import textwrap

import pyarrow.parquet as pq

from distillery.adapters.storage import StorageError, open_dataset
from distillery.report import MANIFEST, format_summary, verify_manifest
from distillery.shards import sha256_bytes


def inspect_dataset(uri: str, rows: int = 3) -> tuple[str, bool]:
    """A printable report and whether the dataset agrees with its manifest."""
    ds = open_dataset(uri)
    if not ds.exists(MANIFEST):
        raise StorageError(f"{uri}: no {MANIFEST}; the build did not finish or this is not a distillery dataset (rerun `distillery run`)")
    try:
        manifest = json.loads(ds.read(MANIFEST))
    except json.JSONDecodeError as err:
        raise StorageError(f"{uri}/{MANIFEST}: not valid JSON ({err.msg}); rerun the build") from None
    paths = set(ds.list("data") + ds.list("rejected"))
    paths |= {e["path"] for e in manifest.get("shards", []) + manifest.get("rejected_shards", [])}
    files = {p: (ds.read(p) if ds.exists(p) else None) for p in sorted(paths) if p.endswith(".parquet")}
    problems = verify_manifest(manifest, files, sha256_bytes)
    for entry in manifest.get("shards", []) + manifest.get("rejected_shards", []):
        data = files.get(entry["path"])
        if data is not None and pq.ParquetFile(io.BytesIO(data)).metadata.num_rows != entry["rows"]:
            problems.append(f"{entry['path']}: row count differs from the manifest's {entry['rows']}")

    lines = [f"dataset {manifest.get('name')} at {uri} (run {manifest.get('run_id')}, {manifest.get('created_at')})"]
    lines.append(f"shards: {len(manifest['shards'])} ({manifest['rows']} rows), rejected shards: {len(manifest['rejected_shards'])} ({manifest['rejected_rows']} rows)")
    lines.append(format_summary(manifest["summary"]))
    export = manifest.get("export")
    if export:
        lines.append(f"an --format {export['format']} export of {export['source']}: its {export['rejected_rows_left_out']} "
                     "rejected rows are not part of it (they stay with the build)")
    kd = manifest.get("kd")
    if kd:
        tok = kd["tokenizer"]
        lines.append(f"soft targets: top-{kd['top_k']} {kd['distribution']} as {kd['logprob_dtype']}, {kd['entries']} entries, "
                     f"{kd['bytes_per_entry']} bytes each on disk; tokenizer {tok['name']} ({tok['vocab_size']} ids, sha256 {tok['sha256'][:12]})")
    if manifest["shards"] and files.get(manifest["shards"][0]["path"]):
        table = pq.read_table(io.BytesIO(files[manifest["shards"][0]["path"]]))
        for row in table.slice(0, rows).to_pylist():
            lines += _sample(row)
    if problems:
        lines.append("PROBLEMS:")
        lines += [f"  {p}" for p in problems]
    else:
        lines.append("manifest check: OK")
    return "\n".join(lines), not problems


def _sample(row: dict) -> list[str]:
    if "chosen" in row:  # a preference pair
        return [
            f"--- {row['id']} (seed {row['seed_id']}, scores {row['score_chosen']:.2f} > {row['score_rejected']:.2f})",
            "Q: " + textwrap.shorten(row["prompt"][-1]["content"], 200),
            f"chosen ({row['chosen_teacher']}): " + textwrap.shorten(row["chosen"][0]["content"], 200),
            f"rejected ({row['rejected_teacher']}): " + textwrap.shorten(row["rejected"][0]["content"], 200),
        ]
    return [
        f"--- {row['id']} (seed {row['seed_id']}, teacher {row.get('teacher')}, judge {row.get('judge_score')})",
        "Q: " + textwrap.shorten(row.get("prompt_text") or row.get("prompt") or "", 200),  # `prompt` before the rename
        "A: " + textwrap.shorten(row["response"], 300),
    ]
