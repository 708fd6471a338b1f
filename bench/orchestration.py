"""Prefect's own overhead in a distill build of 100k rows.

Part 1, measured at full size: the non-engine stages (load, render, length
check, dedup, shard writing) on ROWS rows, once as the flow's Prefect tasks
inside a flow and once as the same functions called bare (`task.fn`).

Part 2, measured per batch: the generation task (one cached task run per batch,
result persisted) against its bare function, on BATCHES batches of the flow's
default batch size with the real engine. A 100k-row build runs
ceil(ROWS / batch) such tasks; its generation time is extrapolated from the
measured batch time.

    .venv/bin/python bench/orchestration.py --rows 100000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ["PREFECT_TASKS_REFRESH_CACHE"] = "true"  # every batch must really generate


def seed_file(rows: int, path: Path) -> None:
    seeds = [json.loads(x) for x in (ROOT / "data" / "self_instruct_seed_tasks.jsonl").read_text().splitlines()]
    with path.open("w") as fh:
        for i in range(rows):
            s = seeds[i % len(seeds)]
            fh.write(json.dumps({"id": f"s{i}", "instruction": f"(Variant {i // len(seeds)}) {s['instruction']}", "instances": s["instances"]}) + "\n")


def stages(recipe, call):
    """The flow's non-engine stages; `call(task, *args)` runs one either way."""
    from tasks.dedup import dedup
    from tasks.generate import check_lengths
    from tasks.load import load_seeds
    from tasks.prompts import render_prompts
    from tasks.write import write_dataset

    times = {}

    def step(name, task, *args):
        t = time.perf_counter()
        out = call(task, *args)
        times[name] = time.perf_counter() - t
        return out

    parsed = step("load", load_seeds, recipe.source)
    rows = step("render", render_prompts, parsed.seeds, recipe.teacher.system_prompt)
    step("check_lengths", check_lengths, rows, recipe.teachers(), recipe.teacher.max_model_len)
    # Dedup and writing see rows shaped as generation leaves them (the prompt as a stand-in answer).
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    fake = [{**r, "id": f"{i:012d}", "response": r["prompt"], "sample_index": 0, "teacher": "t", "teacher_model": "m",
             "sampling": "{}", "run_id": "bench", "created_at": now, "messages": r["messages"]} for i, r in enumerate(rows)]
    kept, rejected = step("dedup", dedup, fake, recipe.dedup)
    summary = {"rows_in": len(rows), "completions_per_prompt": 1, "generated": len(fake), "kept": len(kept), "rejected": len(rejected),
               "rejected_by_reason": {}, "prompt_tokens": 0, "completion_tokens": 0, "stage_seconds": {}}
    step("write", write_dataset, kept, rejected, recipe, summary, "bench", now, {})
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batches", type=int, default=6, help="generation batches timed each way")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "orchestration.json"))
    args = ap.parse_args()

    from prefect import flow

    from distillery.adapters.engine import EngineSpec, close_engines, get_engine
    from distillery.generation import sampling_kwargs
    from distillery.recipe import build_recipe
    from generation import make_rows
    from tasks.generate import generate_batch

    work = Path(tempfile.mkdtemp(prefix="distillery-orch-"))
    seed_file(args.rows, work / "seeds.jsonl")
    recipe = build_recipe({"source": {"uri": str(work / "seeds.jsonl")}, "output": {"uri": str(work / "out"), "rows_per_shard": 10_000},
                           "dedup": {"field": "prompt"}, "sampling": {"max_tokens": args.max_tokens}})

    from prefect.utilities.annotations import quote

    def big(value):  # large row lists go in quoted, as the flows pass them
        return quote(value) if isinstance(value, list) and len(value) > 1000 else value

    @flow(name="bench-orchestration")
    def with_prefect():
        return stages(recipe, lambda task, *a: task(*[big(x) for x in a]))

    t = time.perf_counter()
    prefect_times = with_prefect()
    prefect_total = time.perf_counter() - t
    t = time.perf_counter()
    bare_times = stages(recipe, lambda task, *a: task.fn(*a))
    bare_total = time.perf_counter() - t
    print("stages with Prefect:", {k: round(v, 2) for k, v in prefect_times.items()}, f"total {prefect_total:.1f}s", flush=True)
    print("stages bare:        ", {k: round(v, 2) for k, v in bare_times.items()}, f"total {bare_total:.1f}s", flush=True)

    # Part 2: generation batches, Prefect task vs bare function, same engine.
    batch = recipe.teacher.batch_size
    rows = make_rows(batch * args.batches, system=recipe.teacher.system_prompt)
    spec = EngineSpec.from_teacher(recipe.teacher)
    get_engine(spec)
    s = recipe.sampling
    params = sampling_kwargs(s.n, s.temperature, s.top_p, s.max_tokens, s.seed)
    chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]

    @flow(name="bench-generation-batches")
    def batches_with_prefect():
        return [time_call(lambda c=c: generate_batch(quote(c), "t", spec, params)) for c in chunks]

    def time_call(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    batches_with_prefect()  # warm-up: first flow run, engine caches
    task_times, bare_batch_times = [], []
    for c in chunks:  # alternate, so drift hits both sides alike
        get_engine(spec).llm.reset_prefix_cache()
        bare_batch_times.append(time_call(lambda c=c: generate_batch.fn(c, "t", spec, params)))
    get_engine(spec).llm.reset_prefix_cache()
    task_times = batches_with_prefect()
    per_batch_overhead = (sum(task_times) - sum(bare_batch_times)) / len(chunks)
    per_batch = sum(bare_batch_times) / len(chunks)

    n_batches = math.ceil(args.rows / batch)
    stage_overhead = prefect_total - bare_total
    build_wall = bare_total + n_batches * per_batch
    build_overhead = stage_overhead + n_batches * per_batch_overhead
    report = {
        "rows": args.rows,
        "stages_with_prefect_s": {k: round(v, 2) for k, v in prefect_times.items()},
        "stages_bare_s": {k: round(v, 2) for k, v in bare_times.items()},
        "stages_overhead_s": round(stage_overhead, 2),
        "batch_rows": batch,
        "max_tokens": args.max_tokens,
        "batch_bare_s": round(per_batch, 3),
        "batch_overhead_ms": round(per_batch_overhead * 1000, 1),
        "batches_for_rows": n_batches,
        "build_wall_estimate_s": round(build_wall, 1),
        "orchestration_overhead_s": round(build_overhead, 1),
        "orchestration_share": round(build_overhead / build_wall, 4),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"orchestration: {report['orchestration_share']:.2%} of a {args.rows}-row build (target < 5%)")
    if per_batch_overhead <= 0:
        print("per-batch overhead is below run-to-run noise here; raise --batches for a tighter figure")
    close_engines()


if __name__ == "__main__":
    main()
