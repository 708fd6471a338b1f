"""Shard-write throughput: distillery's publish against one raw pyarrow.parquet.write_table.

A ~1 GB (uncompressed Arrow) table of SFT-shaped rows (the kept-row schema; prompts and
answers of words drawn from the seed tasks' vocabulary, Zipf-distributed, every row
distinct) is written
  (raw)        once with pq.write_table(table, path, compression="zstd", compression_level=3);
  (distillery) with tasks.write.publish: shards streamed to _temporary/<attempt>/ with their
               sha256 computed on the way, committed into fixed names, card, report, manifest
               created last; the recipe's output settings (zstd level 3, row groups of 10k).
Both to the same local disk, fsync'd before the clock stops (a write that is still in the page
cache is not written). Best of --repeats, alternating. Throughput counts the table's Arrow
bytes.

    .venv/bin/python bench/shards.py --gb 1.0
    .venv/bin/python bench/shards.py --gb 1.0 --rows-per-shard 1000   # many small shards
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distillery.adapters.storage import open_dataset  # noqa: E402
from distillery.recipe import OutputConfig, Recipe  # noqa: E402
from distillery.report import build_manifest, summarize  # noqa: E402
from distillery.schema import ROW_SCHEMA, rejects_table  # noqa: E402
from distillery.shards import ShardSpec  # noqa: E402
from tasks.write import publish  # noqa: E402


def vocabulary() -> np.ndarray:
    seeds = [json.loads(line) for line in (ROOT / "data" / "self_instruct_seed_tasks.jsonl").read_text().splitlines()]
    return np.array(sorted({w for s in seeds for w in (s["instruction"] + " " + s["instances"][0]["output"]).split()}))


def texts(vocab: np.ndarray, count: int, words: int, rng: np.random.Generator) -> list[str]:
    ranks = np.minimum(rng.zipf(1.3, size=(count, words)) - 1, len(vocab) - 1)
    return [" ".join(row) for row in vocab[ranks]]


def make_table(gb: float, seed: int = 0) -> pa.Table:
    vocab, rng = vocabulary(), np.random.default_rng(seed)
    batches, size, n = [], 0, 0
    now = datetime(2026, 11, 22, tzinfo=timezone.utc)
    while size < gb * 1e9:
        count = 20_000
        prompts, answers = texts(vocab, count, 40, rng), texts(vocab, count, 300, rng)
        ids = [f"{i:032x}" for i in range(n, n + count)]
        msgs = [[{"role": "user", "content": p}, {"role": "assistant", "content": a}] for p, a in zip(prompts, answers)]
        cols = {
            "id": ids, "messages": msgs, "prompt_text": prompts, "response": answers, "instruction": prompts, "input": [""] * count,
            "seed_id": [f"seed-{i}" for i in range(n, n + count)], "sample_index": [0] * count, "teacher": ["teacher"] * count,
            "teacher_model": ["smollm2-135m-instruct"] * count, "sampling": ['{"temperature": 0.7}'] * count,
            "finish_reason": ["stop"] * count, "prompt_tokens": rng.integers(20, 80, count).tolist(),
            "completion_tokens": rng.integers(200, 400, count).tolist(), "run_id": ["bench"] * count, "created_at": [now] * count,
        }
        batch = pa.Table.from_pydict({f.name: cols.get(f.name, [None] * count) for f in ROW_SCHEMA}, schema=ROW_SCHEMA)
        batches.append(batch)
        size += batch.nbytes
        n += count
    return pa.concat_tables(batches).combine_chunks()


def fsync_tree(path: Path) -> None:
    for p in path.rglob("*") if path.is_dir() else [path]:
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)


def raw_write(table: pa.Table, folder: Path) -> tuple[float, int]:
    path = folder / "raw.parquet"
    start = time.perf_counter()
    pq.write_table(table, path, compression="zstd", compression_level=3)
    fsync_tree(path)
    seconds = time.perf_counter() - start
    size = path.stat().st_size
    path.unlink()
    return seconds, size


def distillery_write(table: pa.Table, folder: Path, out: OutputConfig) -> tuple[float, int, int]:
    uri = str(folder / "ds")
    recipe = Recipe(output=out.model_copy(update={"uri": uri}))
    spec = ShardSpec(out.rows_per_shard, int(out.max_shard_mb * 1024 * 1024) if out.max_shard_mb else None,
                     out.row_group_size, out.compression, out.compression_level)
    summary = summarize(table.num_rows, 1, table.num_rows, [], [], {})

    def make(data, rejects):
        return build_manifest("bench", "bench", "", recipe.model_dump(mode="json"), {}, data, rejects, summary, {}, attempt="a")

    start = time.perf_counter()
    manifest = publish(open_dataset(uri), [(table, "data", "train"), (rejects_table([]), "rejected", "rejected")], spec, make, None, "a")
    fsync_tree(Path(uri))
    seconds = time.perf_counter() - start
    size = sum(e["bytes"] for e in manifest["shards"])
    shutil.rmtree(uri)
    return seconds, size, len(manifest["shards"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.0, help="table size in GB of Arrow data")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows-per-shard", type=int, help="override the recipe default")
    ap.add_argument("--max-shard-mb", type=float, help="override the recipe default")
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    table = make_table(args.gb)
    print(f"table: {table.num_rows:,} rows, {table.nbytes / 1e9:.2f} GB of Arrow data (built in {time.perf_counter() - t0:.0f} s)")
    changes = {k: v for k, v in (("rows_per_shard", args.rows_per_shard), ("max_shard_mb", args.max_shard_mb)) if v}
    out = OutputConfig(**changes)
    folder = Path(tempfile.mkdtemp(prefix="bench-shards-", dir=args.dir))
    raw, ours = [], []
    try:
        for _ in range(args.repeats):
            raw.append(raw_write(table, folder))
            ours.append(distillery_write(table, folder, out))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    best_raw, best_ours = min(raw), min(ours)
    result = {
        "rows": table.num_rows, "arrow_bytes": table.nbytes, "cpus": os.cpu_count(),
        "output": {k: getattr(out, k) for k in ("rows_per_shard", "max_shard_mb", "row_group_size", "compression", "compression_level")},
        "raw_seconds": [round(s, 2) for s, _ in raw], "distillery_seconds": [round(s, 2) for s, _, _ in ours],
        "raw_MBps": round(table.nbytes / 1e6 / best_raw[0], 1), "distillery_MBps": round(table.nbytes / 1e6 / best_ours[0], 1),
        "raw_file_bytes": best_raw[1], "distillery_file_bytes": best_ours[1], "shards": best_ours[2],
        "ratio": round(best_raw[0] / best_ours[0], 3),
    }
    print(json.dumps(result, indent=2))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / f"shards-{int(time.time())}.json").write_text(json.dumps(result, indent=2))
    print(f"distillery writes at {100 * result['ratio']:.0f}% of a single raw write_table ({result['shards']} shards); target >= 80%")


if __name__ == "__main__":
    main()
