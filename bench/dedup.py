"""MinHash signature speed from raw text, and end-to-end dedup at corpus scale.

Signatures (each method in its own process, pinned to one core, from raw
text with word 5-gram shingling included, 128 permutations):
  (a) datasketch, naive: MinHash() and update() per shingle
  (b) datasketch MinHash.bulk
  (c) rensa RMinHash with Python shingling
  (d) distillery (compiled shingling + hashing + permutations, in batches)

End to end (--e2e N): N documents streamed through distillery's Deduplicator
(exact keys, signatures, datasketch MinHashLSH, candidate verification,
clusters), 1% of them planted near-copies. Reports seconds and peak RSS.

    .venv/bin/python bench/dedup.py --docs 10000
    .venv/bin/python bench/dedup.py --e2e 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NUM_PERM, NGRAM, WORDS = 128, 5, 200


def vocabulary() -> list[str]:
    seeds = [json.loads(line) for line in (ROOT / "data" / "self_instruct_seed_tasks.jsonl").read_text().splitlines()]
    return sorted({w for s in seeds for w in (s["instruction"] + " " + s["instances"][0]["output"]).split()})


def documents(count: int, seed: int = 0, start: int = 0):
    """Deterministic ~200-word documents, generated in batches (never all in memory)."""
    import numpy as np

    vocab = np.array(vocabulary(), dtype=object)
    rng = np.random.default_rng(seed + start)
    for offset in range(0, count, 10_000):
        n = min(10_000, count - offset)
        idx = rng.integers(len(vocab), size=(n, WORDS))
        yield [" ".join(vocab[row]) for row in idx]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_method(method: str, count: int) -> dict:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from distillery.minhash import shingles

    texts = [t for batch in documents(count) for t in batch]
    start = time.perf_counter()
    if method == "a":
        from datasketch import MinHash

        for t in texts:
            m = MinHash(num_perm=NUM_PERM)
            for sh in shingles(t, NGRAM):
                m.update(sh)
    elif method == "b":
        from datasketch import MinHash

        MinHash.bulk([shingles(t, NGRAM) for t in texts], num_perm=NUM_PERM)
    elif method == "c":
        from rensa import RMinHash

        for t in texts:
            m = RMinHash(num_perm=NUM_PERM, seed=1)
            m.update([s.decode() for s in shingles(t, NGRAM)])
            m.digest()
    elif method == "d":
        from distillery.minhash import permutations, signatures

        a, b = permutations(NUM_PERM)
        signatures(texts[:64], NGRAM, a, b)  # JIT load (cached on disk after the first run)
        start = time.perf_counter()
        signatures(texts, NGRAM, a, b)
    seconds = time.perf_counter() - start
    return {"method": method, "docs": count, "seconds": round(seconds, 3), "docs_per_s": round(count / seconds), "peak_rss_mib": round(peak_rss_mib())}


def run_e2e(count: int) -> dict:
    from distillery.dedup import DedupParams, Deduplicator

    dedup = Deduplicator(DedupParams(num_perm=NUM_PERM, threshold=0.8, ngram=NGRAM))
    busy = 0.0
    planted = 0
    for b, batch in enumerate(documents(count)):
        # plant near-copies: every 100th document repeats an earlier one with one word changed
        for i in range(0, len(batch), 100):
            if i >= 1:
                words = batch[i - 1].split()
                words[len(words) // 2] = "planted"
                batch[i] = " ".join(words)
                planted += 1
        ids = [f"doc-{b * 10_000 + i:09d}" for i in range(len(batch))]
        t = time.perf_counter()
        dedup.add(ids, batch)
        busy += time.perf_counter() - t
    t = time.perf_counter()
    result = dedup.finish()
    finish = time.perf_counter() - t
    removed = sum(r is not None for r in result.reason)
    return {
        "docs": count, "planted": planted, "removed": removed, "add_seconds": round(busy, 1), "finish_seconds": round(finish, 1),
        "total_seconds": round(busy + finish, 1), "peak_rss_mib": round(peak_rss_mib()), "lsh_bands_rows": [dedup.lsh.b, dedup.lsh.r],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000, help="documents for the signature comparison")
    ap.add_argument("--methods", default="abcd")
    ap.add_argument("--e2e", type=int, default=0, help="documents for the end-to-end run (0: skip)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dedup.json"))
    args = ap.parse_args()
    if args.one:  # child process: one method, JSON on stdout
        print(json.dumps(run_e2e(args.docs) if args.one == "e2e" else run_method(args.one, args.docs)))
        return

    results = {"signatures": [], "e2e": None}
    names = {"a": "datasketch naive", "b": "datasketch bulk", "c": "rensa + Python shingling", "d": "distillery"}
    for m in args.methods:
        out = subprocess.run([sys.executable, __file__, "--one", m, "--docs", str(args.docs)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        results["signatures"].append(row)
        print(f"({m}) {names[m]:26s} {row['docs_per_s']:>9,} docs/s   peak RSS {row['peak_rss_mib']:>6,} MiB", flush=True)
    if args.e2e:
        out = subprocess.run([sys.executable, __file__, "--one", "e2e", "--docs", str(args.e2e)], capture_output=True, text=True, check=True)
        results["e2e"] = json.loads(out.stdout.strip().splitlines()[-1])
        print("end to end:", json.dumps(results["e2e"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
