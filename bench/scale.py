"""Staged builds at scale: wall time and peak memory against the number of rows.

Part 1, the non-engine stages (load, render, signatures, find-duplicates, dedup, publish)
on 10k, 100k and 1M rows: each build in a fresh process of its own, as a Prefect flow
with Prefect's local API, the prompt standing in for the teacher's answer. Prompts are
40 words drawn from the seed tasks' vocabulary; 1% are near copies of an earlier prompt
(one word changed), 0.5% exact copies, and one line in the middle is malformed JSON.
The flow process sends work to the build's worker process (load, CPU stages, publish;
adapters.worker) and a process of find-duplicates' own: the figures are the flow's peak
RSS and each stage's peak in its worker.

Part 2, the engine stages: the same prompts through the real teacher (max_tokens 4), once
as the in-memory path generates (tasks.generate.generate, one engine) and once through the
staged generate stage (shards), side by side in one process on one engine.

    .venv/bin/python bench/scale.py                          # part 1: 10k, 100k, 1M rows
    .venv/bin/python bench/scale.py --rows 10000 --engine 10000
    .venv/bin/python bench/scale.py --rows --engine 100000 --staged-only   # ~70 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from distillery.adapters.worker import peak_rss_mib  # noqa: E402  (this process's VmHWM)
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")  # a busy machine


def seed_file(rows: int, path: Path, words: int = 40) -> dict:
    from dedup import vocabulary

    vocab = vocabulary()
    rng = random.Random(rows)
    kept: list[str] = []
    planted = {"near": 0, "exact": 0}
    with path.open("w") as fh:
        for i in range(rows):
            roll = rng.random()
            if kept and roll < 0.01:
                text = kept[rng.randrange(len(kept))].split()
                text[rng.randrange(len(text))] = rng.choice(vocab)
                text, planted["near"] = " ".join(text), planted["near"] + 1
            elif kept and roll < 0.015:
                text, planted["exact"] = kept[rng.randrange(len(kept))], planted["exact"] + 1
            else:
                text = " ".join(rng.choice(vocab) for _ in range(words))
            if len(kept) < 50_000:
                kept.append(text)
            elif rng.random() < 0.01:
                kept[rng.randrange(len(kept))] = text
            fh.write(json.dumps({"id": f"s{i}", "instruction": text}) + "\n")
            if i == rows // 2:
                fh.write('{"id": "malformed", "instruction": \n')
    return planted


def in_child(fn, *args):
    """fn(*args) in a forked child: what it allocates (the generated source) is not this
    process's peak RSS, which is the flow's to measure."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(fn, args)


def cpu_build(rows: int, stage_rows: int) -> dict:
    """One non-engine build (in this process): stage timings, RSS, counts."""
    work = Path(tempfile.mkdtemp(prefix="distillery-scale-"))
    planted = in_child(seed_file, rows, work / "seeds.jsonl")

    from prefect import flow

    from distillery.recipe import build_recipe
    from distillery.stages.dedup import ApplyDrops, Signatures
    from distillery.stages.prompts import Render
    from flows.build import open_build, timed
    from flows.publish import publish_staged
    from flows.staged import Stages, _files, staged_row_schema, staging_root
    from scale_stages import StandIn
    from tasks.stages import duplicates, load, shard_drops
    from tasks.write import dataset_for

    recipe = build_recipe({"name": "scale", "source": {"uri": str(work / "seeds.jsonl"), "id_column": "id", "input_column": None},
                           "dedup": {"field": "prompt", "ngram": 5}, "judge": {"enabled": False},
                           "output": {"uri": str(work / "out"), "stage_rows": stage_rows, "rows_per_shard": 100_000}})
    staged = staged_row_schema(recipe)
    rss: dict[str, int] = {}

    @flow(name="bench-scale")
    def build() -> dict:
        store, root = dataset_for(recipe), staging_root(recipe)
        timings: dict[str, float] = {}
        with timed(timings, "load"):
            loaded, about = load(recipe, store, root)
        rss["load"] = peak_rss_mib()
        b = open_build(recipe, about["digest"], stages=timings)
        b.rows_in = about["rows_in"]
        run = Stages(store, root, b)
        run.records["load"] = loaded
        run.worker_rss["load"] = about["worker_peak_rss_mib"]
        rendered = run.run(Render(recipe.teacher.system_prompt), _files(loaded), "render")
        rss["render"] = peak_rss_mib()
        answered = run.run(StandIn(staged), _files(rendered), "stand-in answers")
        rss["stand-in answers"] = peak_rss_mib()
        sigs = run.run(Signatures("prompt", recipe.dedup.params()), _files(answered), "signatures")
        rss["signatures"] = peak_rss_mib()
        with timed(b.stages, "find-duplicates"):
            drop_file, counts = duplicates(store, root, sigs, recipe)
        run.worker_rss["find-duplicates"] = counts["worker_peak_rss_mib"]
        rss["find-duplicates"] = peak_rss_mib()
        final = run.run(ApplyDrops(shard_drops(store, drop_file), staged, counts["digest"]), _files(answered), "dedup", [counts["digest"]])
        rss["dedup"] = peak_rss_mib()
        summary = summary_of(run, about, answered, final, counts)
        manifest = publish_staged(recipe, b, store, run, final, summary)
        store.remove_tree("_temporary")
        rss["publish"] = peak_rss_mib()
        return {"stage_seconds": manifest["summary"]["stage_seconds"], "kept": manifest["rows"], "rejected": manifest["rejected_rows"],
                "shards": len(manifest["shards"]), "worker_peak_rss_mib": counts["worker_peak_rss_mib"], "dropped": counts["dropped"],
                "stage_worker_peak_rss_mib": run.worker_rss}

    def summary_of(run, about, answered, final, counts) -> dict:
        from collections import Counter

        from distillery.report import summary_from_counts

        rejected = Counter()
        for records in run.records.values():
            for r in records:
                for reason, n in r.rejected_by_reason:
                    rejected[(r.stage, reason)] += n
        return summary_from_counts(about["rows_in"], 1, sum(r.rows_out for r in answered), sum(r.rows_out for r in final),
                                   rejected, 0, 0, None, counts["clusters"], run.b.stages)

    rss["before the flow"] = peak_rss_mib()
    started = time.perf_counter()
    result = build()
    result.update(rows=rows, wall_seconds=round(time.perf_counter() - started, 1), flow_peak_rss_mib=peak_rss_mib(),
                  peak_rss_after_stage_mib=rss, planted=planted, stage_rows=stage_rows)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--stage-rows", type=int, default=5_000)
    ap.add_argument("--engine", type=int, nargs="*", default=[], help="rows for part 2 (engine stages)")
    ap.add_argument("--staged-only", action="store_true", help="part 2 on the staged path alone (no side by side)")
    ap.add_argument("--repeats", type=int, default=3, help="builds per size; the table takes the median")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(cpu_build(args.one, args.stage_rows)))
        return
    results = []
    for rows in args.rows:
        runs = []
        for _ in range(args.repeats):
            env = {**os.environ, "PREFECT_HOME": tempfile.mkdtemp(prefix="distillery-scale-prefect-")}
            out = subprocess.run([sys.executable, __file__, "--one", str(rows), "--stage-rows", str(args.stage_rows)],
                                 capture_output=True, text=True, env=env, cwd=ROOT)
            if out.returncode:
                sys.exit(f"the {rows}-row build failed:\n{out.stderr[-4000:]}")
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
        median = {"rows": rows, "median_of": len(runs),
                  "flow_peak_rss_mib": statistics.median(r["flow_peak_rss_mib"] for r in runs),
                  "flow_peak_rss_mib_each": [r["flow_peak_rss_mib"] for r in runs],
                  "non_engine_seconds": statistics.median(sum(v for k, v in r["stage_seconds"].items() if k != "stand-in answers")
                                                          for r in runs),
                  "worker_peak_rss_mib": statistics.median(r["worker_peak_rss_mib"] for r in runs),
                  "stage_worker_peak_rss_mib": {stage: statistics.median(r["stage_worker_peak_rss_mib"][stage] for r in runs)
                                                for stage in runs[0]["stage_worker_peak_rss_mib"]}}
        results.append({"median": median, "runs": runs})
        print(json.dumps(median), flush=True)
    if len(results) > 1:
        first, last = results[0]["median"], results[-1]["median"]
        growth = 100.0 * (last["flow_peak_rss_mib"] / first["flow_peak_rss_mib"] - 1)
        print(f"flow peak RSS, median of {args.repeats}: {first['flow_peak_rss_mib']} MiB at {first['rows']:,} rows, "
              f"{last['flow_peak_rss_mib']} MiB at {last['rows']:,} rows: {growth:+.1f}% (bar: < 10%)", flush=True)
    for rows in args.engine:
        from scale_engine import side_by_side

        results.append(side_by_side(rows, paths=("staged",) if args.staged_only else ("in-memory", "staged")))
        print(json.dumps(results[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
