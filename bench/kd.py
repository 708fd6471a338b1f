"""Soft targets: what keeping the teacher's top-K costs in generation speed and on disk.

The same prompts (the Self-Instruct seed tasks) go through one vLLM engine with
kd top-K = 0, 5 and 20 (sampling settings fixed, seeded); each run reports
completion tokens/s. The K=5 and K=20 rows are then written as distillery writes
them (the kept-row schema plus the kd_ columns, zstd level 3) and the compressed
bytes of kd_topk_ids + kd_topk_logprobs are divided by the stored (token, k)
entries. Target: <= 3 bytes per entry at K=20.

    .venv/bin/python bench/kd.py --prompts 64 --max-tokens 128
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distillery.adapters.engine import EngineSpec, close_engines, get_engine  # noqa: E402
from distillery.generation import attach_completions, sampling_kwargs  # noqa: E402
from distillery.kd import entries, round_logprobs, with_kd  # noqa: E402
from distillery.prompts import render_messages  # noqa: E402
from distillery.recipe import TeacherConfig  # noqa: E402
from distillery.schema import ROW_SCHEMA, to_table  # noqa: E402
from distillery.shards import ShardSpec, plan_shards, write_shard  # noqa: E402
from distillery.sources import parse_source  # noqa: E402


def bytes_per_entry(rows: list[dict], dtype: str, bits: int = 10) -> dict:
    table = round_logprobs(to_table(rows, with_kd(ROW_SCHEMA, dtype)), bits)
    plan = plan_shards(table, "data", "train", ShardSpec(rows_per_shard=10**6))[0]
    shard = write_shard(table, plan, io.BytesIO(), ShardSpec(rows_per_shard=10**6))
    sizes = dict(shard.column_bytes)
    topk = sizes["kd_topk_ids"] + sizes["kd_topk_logprobs"]
    n = entries(rows)
    return {
        "entries": n, "ids_bytes": sizes["kd_topk_ids"], "logprob_bytes": sizes["kd_topk_logprobs"],
        "bytes_per_entry": round(topk / n, 3), "ids_bytes_per_entry": round(sizes["kd_topk_ids"] / n, 3),
        "logprob_bytes_per_entry": round(sizes["kd_topk_logprobs"] / n, 3),
        "file_bytes": shard.bytes, "text_bytes": sizes["response"] + sizes["messages"] + sizes["prompt_text"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--ks", default="0,5,20")
    ap.add_argument("--repeats", type=int, default=2, help="runs per K (best kept); K values alternate")
    args = ap.parse_args()

    path = ROOT / "data" / "self_instruct_seed_tasks.jsonl"
    seeds = parse_source(path.read_bytes(), str(path), input_column="instances.0.input", id_column="id").seeds[: args.prompts]
    rows = render_messages(seeds, None)
    convs = [r["messages"] for r in rows]
    engine = get_engine(EngineSpec.from_teacher(TeacherConfig(max_model_len=2048)))
    ks = [int(k) for k in args.ks.split(",")]
    engine.chat(convs[:4], sampling_kwargs(1, 0.7, 0.95, 8, 0))  # warm-up
    speed: dict[int, list[float]] = {k: [] for k in ks}
    outputs: dict[int, list] = {}
    for _ in range(args.repeats):
        for k in ks:
            params = sampling_kwargs(1, 0.7, 0.95, args.max_tokens, 0)
            if k:
                params["kd_top_k"] = k
            start = time.perf_counter()
            done = engine.chat(convs, params)
            seconds = time.perf_counter() - start
            tokens = sum(c["completion_tokens"] for cs in done for c in cs)
            speed[k].append(tokens / seconds)
            outputs[k] = done
    now = datetime.now(timezone.utc)
    result = {"prompts": len(convs), "max_tokens": args.max_tokens, "tokens_per_s": {}, "storage": {}}
    for k in ks:
        result["tokens_per_s"][k] = round(max(speed[k]), 1)
        if k:
            kept = [{**r, "run_id": "bench"} for r in attach_completions(rows, outputs[k], "teacher", "smollm2-135m-instruct", {"kd_top_k": k}, now)]
            result["storage"][k] = {
                "float16, 7 mantissa bits (default)": bytes_per_entry(kept, "float16", 7),
                "float16, all 10 bits": bytes_per_entry(kept, "float16", 10),
                "float32": bytes_per_entry(kept, "float32"),
            }
    base = result["tokens_per_s"].get(0)
    if base:
        result["relative_speed"] = {k: round(v / base, 3) for k, v in result["tokens_per_s"].items()}
    close_engines()
    print(json.dumps(result, indent=2))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / f"kd-{int(time.time())}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
