"""The `ray` backend on a local 2-node Ray cluster (127.0.0.1, 1 CPU per node).

Generation (--prompts N): the same N seed tasks through the distill flow (judge and dedup
off) on 1 engine, then on 2 (one per node), engines warm before either build. Reports
completion tokens/s of the generate stage and the 2-vs-1 ratio. On a 2-core machine
both engines share the same two cores, so the ratio says how much the scheduling costs,
not what a second GPU gives: docs/ray-throughput-method.md is the method on real GPUs.

Dedup (--dedup N): N ~200-word documents (1% planted near-copies) as signature shards
of 10k rows, computed on the cluster with the project's kernel; then the drop list by
the cluster's shuffle and by the local deduplicator (find_duplicates, in a child
process), timed, with peak RSS per worker; the two drop lists must be equal.

    .venv/bin/python bench/ray.py --prompts 48 --max-tokens 128
    .venv/bin/python bench/ray.py --dedup 1000000
    python bench/ray.py --address ray://head:10001 --engines 1,8 --prompts 20000 --model /models/M   # real GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# This file is ray.py: with its folder first on the path, `import ray` would find it, not Ray.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
RESULTS = ROOT / "bench" / "results"
SHARD = 10_000


def generation(prompts: int, max_tokens: int, address: str, counts: list[int], model: str, local: bool,
               output: str | None) -> dict:
    from distillery.adapters.engine import EngineSpec
    from distillery.adapters.ray_engines import start_pool
    from distillery.execution import ExecutionConfig
    from distillery.recipe import build_recipe
    from flows.distill import distill

    # a local cluster's nodes are this machine: each engine on a core of its own
    binds = [str(c) for c in sorted(os.sched_getaffinity(0))] if local else []
    execution = {"backend": "ray", "ray_address": address, "engines": max(counts), "task_cpus": 0, "engine_cpu_binds": binds}
    _, warm = start_pool(EngineSpec(model=model, max_model_len=2048), ExecutionConfig(**execution))
    out, root = {"engine_start_seconds": round(warm, 1)}, output or tempfile.mkdtemp(prefix="bench-ray-")
    for engines in counts:
        recipe = build_recipe({
            "name": f"bench-ray-{engines}",
            "source": {"uri": str(ROOT / "data" / "self_instruct_seed_tasks.jsonl"), "instruction_column": "instruction",
                       "input_column": "instances.0.input", "id_column": "id", "limit": prompts},
            "teacher": {"model": model, "max_model_len": 2048, "batch_size": 8},
            "sampling": {"temperature": 0.7, "max_tokens": max_tokens, "seed": 0},
            "dedup": {"enabled": False}, "judge": {"enabled": False},
            "output": {"uri": f"{root}/e{engines}-{int(time.time())}", "stage_rows": 8},
            "execution": {**execution, "engines": engines},
        })
        summary = distill(recipe)["summary"]
        seconds = summary["stage_seconds"]["generate"]
        out[f"{engines}_engine"] = {"completion_tokens": summary["completion_tokens"], "generate_seconds": round(seconds, 1),
                                    "tokens_per_second": round(summary["completion_tokens"] / seconds, 1)}
    one = out[f"{counts[0]}_engine"]["tokens_per_second"] / counts[0]
    for engines in counts[1:]:  # throughput against engines x one engine's (the target: >= 0.9 on GPUs)
        out[f"efficiency_{engines}_engines"] = round(out[f"{engines}_engine"]["tokens_per_second"] / (engines * one), 3)
    return out


def _signature_shard(store, shard: int, docs: int, params) -> tuple:
    """In a Ray task: shard `shard`'s documents (deterministic), their signatures, staged."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_dedup", ROOT / "bench" / "dedup.py")
    bench_dedup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_dedup)  # bench/dedup.py's documents, by path (bench/ is not a package)
    from distillery.stages.contract import StagedFile
    from distillery.stages.dedup import Signatures, signature_schema
    from distillery.stages.staged import encode

    texts = next(bench_dedup.documents(min(SHARD, docs - shard * SHARD), start=shard * SHARD))
    for i in range(0, len(texts), 100):  # every 100th document: a near-copy of the one before
        if i:
            words = texts[i - 1].split()
            words[len(words) // 2] = "planted"
            texts[i] = " ".join(words)
    rows = [{"id": f"doc-{shard * SHARD + i:09d}", "response": t} for i, t in enumerate(texts)]
    table = Signatures("response", params).run(rows, shard).rows
    data, sha = encode(table, signature_schema(params.num_perm))
    path = f"sig/part-{shard:05d}.parquet"
    store.write(path, data)
    return StagedFile(path, sha, len(data), table.num_rows)


def _local_dedup(uri: str, files, params) -> tuple[list, dict, float, int]:
    from distillery.adapters.storage import open_dataset
    from distillery.adapters.worker import peak_rss_mib
    from distillery.stages.dedup import find_duplicates
    from distillery.stages.executor import read_table

    store = open_dataset(uri)
    started = time.perf_counter()
    drops, counts = find_duplicates((read_table(store, f) for f in files), params, "response")
    return drops, counts, time.perf_counter() - started, peak_rss_mib()


def dedup(docs: int, partitions: int) -> dict:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import ray

    from distillery.adapters.ray_stages import dedup_on_cluster
    from distillery.adapters.storage import open_dataset
    from distillery.dedup import DedupParams

    params = DedupParams(num_perm=128, threshold=0.8, ngram=5)
    folder = tempfile.mkdtemp(prefix="bench-ray-dedup-")
    store = open_dataset(folder)
    started = time.perf_counter()
    task = ray.remote(_signature_shard).options(num_cpus=1)
    files = ray.get([task.remote(store, s, docs, params) for s in range(-(-docs // SHARD))])
    signatures = time.perf_counter() - started
    started = time.perf_counter()
    drops, counts = dedup_on_cluster(store, files, params, "response", partitions, cpus=1)
    cluster = time.perf_counter() - started
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        local, local_counts, local_seconds, local_peak = child.submit(_local_dedup, folder, files, params).result()
    assert drops == local, "the cluster's drop list differs from the local deduplicator's"
    return {"docs": docs, "shards": len(files), "partitions": partitions, "signatures_on_cluster_seconds": round(signatures, 1),
            "dropped": counts["dropped"], "candidate_pairs": counts["candidate_pairs"],
            "cluster_dedup_seconds": round(cluster, 1), "local_dedup_seconds": round(local_seconds, 1),
            "cluster_peak_rss_mib": {k: counts[f"{k}_peak_rss_mib"] for k in ("map", "reduce", "gather")},
            "local_peak_rss_mib": local_peak, "same_drop_list": True}


def main() -> None:
    from raycluster import LocalRayCluster

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=0, help="seed tasks to generate for on 1 and 2 engines")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--dedup", type=int, default=0, help="documents to dedup on the cluster and locally")
    p.add_argument("--partitions", type=int, default=16)
    p.add_argument("--engines", default="1,2", help="engine counts to compare, the first as the baseline (default 1,2)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="teacher model (a folder on every node)")
    p.add_argument("--address", help="an existing Ray cluster (e.g. ray://head:10001); default: a local 2-node one")
    p.add_argument("--output", help="where the builds go (s3://... on a real cluster: every node reads and writes it)")
    args = p.parse_args()
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-prefect-"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no phoning home from a benchmark
    os.environ.setdefault("DO_NOT_TRACK", "1")
    cluster = None
    if args.address:
        from distillery.adapters.ray_engines import connect

        connect(args.address, "distillery")
    else:
        cluster = LocalRayCluster(Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))).start()
    result: dict = {}
    try:
        if args.prompts:
            counts = [int(c) for c in args.engines.split(",")]
            result["generation"] = generation(args.prompts, args.max_tokens, args.address or cluster.address, counts, args.model,
                                              local=cluster is not None, output=args.output)
        if args.dedup:
            result["dedup"] = dedup(args.dedup, args.partitions)
    finally:
        from distillery.adapters.ray_engines import stop_engines

        if args.prompts:
            stop_engines(None, "distillery")
        if cluster is not None:
            cluster.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"ray-{int(time.time())}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
