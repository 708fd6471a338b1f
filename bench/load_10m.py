"""A source of ten million rows with one malformed line in the middle, through the load
stage: the line is quarantined (named by its line number), the other rows are staged in
shards, and the flow's memory stays near one shard's.

    .venv/bin/python bench/load_10m.py                 # 10M rows
    .venv/bin/python bench/load_10m.py --rows 1000000

Only the load stage runs: at ten million rows the LSH worker of `find-duplicates` would
need about 21 GB here (2.1 GB a million rows, bench/README.md), over this machine's 24 GB;
the stages after load hold a shard each and are measured at 1M rows by bench/scale.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")

WORDS = ("write explain list describe compare summarize translate classify the a of for to in with why how what "
         "poem story email essay recipe plan code function table answer question sentence paragraph list").split()


def source(rows: int, path: Path) -> int:
    """`rows` JSONL records (ids s0...), the malformed line after the middle one; its line number."""
    rng = random.Random(rows)
    middle = rows // 2
    with path.open("w") as fh:
        for start in range(0, rows, 100_000):
            lines = []
            for i in range(start, min(rows, start + 100_000)):
                lines.append(json.dumps({"id": f"s{i}", "instruction": " ".join(rng.choices(WORDS, k=8)) + f" #{i}"}))
                if i == middle:
                    lines.append('{"id": "malformed", "instruction": ')
            fh.write("\n".join(lines) + "\n")
    return middle + 2  # 1-based: the line after row `middle`


def peak_rss_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--stage-rows", type=int, default=5_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "load_10m.json"))
    args = ap.parse_args()

    from prefect import flow

    from distillery.recipe import build_recipe
    from distillery.stages.executor import read_rows, totals
    from flows.staged import staging_root
    from tasks.stages import load
    from tasks.write import dataset_for

    work = Path(tempfile.mkdtemp(prefix="distillery-load-"))
    started = time.perf_counter()
    bad_line = source(args.rows, work / "seeds.jsonl")
    written_s = time.perf_counter() - started
    recipe = build_recipe({"name": "load-10m", "source": {"uri": str(work / "seeds.jsonl"), "id_column": "id", "input_column": None},
                           "output": {"uri": str(work / "out"), "stage_rows": args.stage_rows}})
    rss_before = peak_rss_mib()

    @flow(name="bench-load")
    def run() -> dict:
        store = dataset_for(recipe)
        t0 = time.perf_counter()
        records, about = load(recipe, store, staging_root(recipe))
        seconds = time.perf_counter() - t0
        t = totals(records)
        quarantined = [r for rec in records if rec.rejected for r in read_rows(store, [rec.files[1]])]
        return {"rows_in": about["rows_in"], "seeds": t["rows"], "rejected_by_reason": t["rejected_by_reason"],
                "quarantined": [{k: r.get(k) for k in ("seed_id", "reason", "detail")} for r in quarantined],
                "shards": len(records), "load_seconds": round(seconds, 1)}

    result = run()
    result.update(rows=args.rows, malformed_line=bad_line, source_bytes=(work / "seeds.jsonl").stat().st_size,
                  write_source_seconds=round(written_s, 1), peak_rss_before_load_mib=rss_before, flow_peak_rss_mib=peak_rss_mib())
    assert result["rows_in"] == args.rows + 1 and result["seeds"] == args.rows, result
    assert result["rejected_by_reason"] == {"malformed_json": 1} and str(bad_line) in result["quarantined"][0]["detail"], result
    print(json.dumps(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
