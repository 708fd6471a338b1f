"""MinHash signature speed from raw text, and the `distillery dedup` command end to end.

Signatures (--methods, --docs; each method in its own process, pinned to one
core, from raw text with word 5-gram shingling included, 128 permutations):
  (a) datasketch, naive: MinHash() and update() per shingle
  (b) datasketch MinHash.bulk
  (c) rensa RMinHash with Python shingling
  (d) distillery (compiled shingling + hashing + permutations, in batches)

End to end (--e2e N1,N2,...; --dup-rates p1,p2,...): for each document count N
and share p of planted near-copies, a JSONL corpus under --data-dir
(docs-{N}-{p}.jsonl, built once and reused; docs-{N}-{p}.json records how many
rows were planted). Each line is {"id": "doc-000000001", "text": "..."}: ~200
words drawn from the seed tasks' vocabulary; a planted row copies a random
earlier row (at most 10,000 rows back) with 1 to 3 words changed, so its word
5-gram Jaccard to that row stays above ~0.83 (a vocabulary word such as "don't"
is two words to the shingler; measured on 20,000 rows at p=0.2: min 0.84,
median 0.91). The whole command, as a user runs it,

    python -m distillery.commands.cli dedup FILE --column text --output DIR

runs in a child process pinned to one core (after one untimed warm-up run on a
2,000-row corpus, so numba's on-disk cache is warm): wall seconds around the
child, its peak RSS, its own report; kept + rejected rows are checked against
N, and rejected rows are shown next to planted ones. For comparison, datasketch
MinHash.bulk signatures alone (method b: shingling + 128 permutations, no LSH,
no I/O) on the first min(N, --bulk-docs) rows of the same file, also pinned to
one core. One line per (N, p); all rows under "e2e" in --out.

    .venv/bin/python bench/dedup.py --docs 10000
    .venv/bin/python bench/dedup.py --methods "" --e2e 100000,1000000

Profile (--profile): the command on the first (N, p) under cProfile instead of
timing it; prints the top 25 functions by cumulative and by own time:

    .venv/bin/python bench/dedup.py --methods "" --e2e 1000000 --dup-rates 0.01 --profile
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
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
    if method in ("a", "b", "c"):  # load the library before the clock starts: its import is no signature time
        importlib.import_module("rensa" if method == "c" else "datasketch")
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


CORPUS_FORMAT = 1  # bump when the generator changes: cached corpora are rebuilt
BATCH = 10_000  # rows generated at a time; also how far back a planted copy may reach
WARMUP_DOCS = 2_000
PROFILE_CHILD = """
import atexit, cProfile, os, sys
from distillery.commands.cli import main
prof = cProfile.Profile()
code = prof.runcall(main, sys.argv[2:])
prof.dump_stats(sys.argv[1])
atexit._run_exitfuncs()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"""


def corpus(data_dir: Path, count: int, rate: float, seed: int = 0) -> tuple[Path, dict]:
    """The JSONL corpus for (count, rate): built once, streamed in batches, written atomically."""
    import numpy as np

    path = data_dir / f"docs-{count}-{rate:g}.jsonl"
    side = data_dir / f"docs-{count}-{rate:g}.json"
    want = {"format": CORPUS_FORMAT, "docs": count, "dup_rate": rate, "words": WORDS, "seed": seed}
    if path.exists() and side.exists():
        meta = json.loads(side.read_text())
        if all(meta.get(k) == v for k, v in want.items()) and path.stat().st_size == meta.get("bytes"):
            return path, meta
    data_dir.mkdir(parents=True, exist_ok=True)
    vocab = np.array(vocabulary(), dtype=object)
    v = len(vocab)
    rng = np.random.default_rng([seed, count, round(rate * 1_000_000)])
    dumps = json.dumps
    planted = 0
    prev = np.empty((0, WORDS), dtype=np.int32)
    started = time.perf_counter()
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for offset in range(0, count, BATCH):
                n = min(BATCH, count - offset)
                window = np.concatenate([prev, rng.integers(v, size=(n, WORDS), dtype=np.int32)])
                base = len(prev)
                rows = np.flatnonzero(rng.random(n) < rate)
                rows = rows[offset + rows >= 1]  # the very first row has nothing to copy
                back = rng.integers(1, BATCH + 1, size=len(rows))
                changes = rng.integers(1, 4, size=len(rows))
                where = rng.integers(WORDS, size=(len(rows), 3))
                shift = rng.integers(1, v, size=(len(rows), 3))
                for j, r in enumerate(rows):  # ascending: a copy of a copy sees its source final
                    g = base + int(r)
                    src = g - min(int(back[j]), offset + int(r))
                    doc = window[src].copy()
                    w = where[j, : changes[j]]
                    doc[w] = (doc[w] + shift[j, : changes[j]]) % v
                    window[g] = doc
                planted += len(rows)
                prev = window[base:]
                texts = [" ".join(words) for words in vocab[prev].tolist()]
                f.write("".join([dumps({"id": f"doc-{offset + i + 1:09d}", "text": t}) + "\n" for i, t in enumerate(texts)]))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {**want, "planted": planted, "bytes": path.stat().st_size, "build_seconds": round(time.perf_counter() - started, 1)}
    side_tmp = side.with_name(f"{side.name}.tmp-{os.getpid()}")
    side_tmp.write_text(json.dumps(meta, indent=2))
    os.replace(side_tmp, side)
    return path, meta


def _pin(core: int):
    return lambda: os.sched_setaffinity(0, {core})


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_cli(path: Path, out_dir: Path, core: int, profile: Path | None = None) -> dict:
    """`distillery dedup` on one file in a child pinned to `core`: wall seconds, peak RSS, its output."""
    import tempfile

    shutil.rmtree(out_dir, ignore_errors=True)
    args = ["dedup", str(path), "--column", "text", "--output", str(out_dir)]
    if profile is None:
        cmd = [sys.executable, "-m", "distillery.commands.cli", *args]
    else:  # entry() leaves by os._exit, which would skip `-m cProfile -o`'s dump: profile main() instead
        cmd = [sys.executable, "-c", PROFILE_CHILD, str(profile), *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env=_child_env(), preexec_fn=_pin(core))
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {proc.returncode}\n--- stdout\n{stdout}\n--- stderr\n{stderr[-4000:]}")
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, "stdout": stdout, "stderr": stderr}


def check_output(out_dir: Path, count: int) -> dict:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    kept = pq.ParquetFile(out_dir / "kept.parquet").metadata.num_rows
    rejected = pq.ParquetFile(out_dir / "rejected.parquet").metadata.num_rows
    assert kept + rejected == count, f"kept {kept} + rejected {rejected} != {count} rows in"
    reasons = pq.read_table(out_dir / "rejected.parquet", columns=["dedup_reason"]).column(0)
    by_reason = {str(r["values"]): int(r["counts"]) for r in pc.value_counts(reasons).to_pylist()}
    return {"kept": kept, "rejected": rejected, "by_reason": dict(sorted(by_reason.items()))}


def run_bulk(path: str, count: int) -> dict:
    """Child: datasketch MinHash.bulk (method b) on the first `count` rows of a JSONL corpus."""
    from datasketch import MinHash

    from distillery.minhash import shingles

    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(texts) == count:
                break
            texts.append(json.loads(line)["text"])
    start = time.perf_counter()
    # method b's call; shingles are made as bulk iterates instead of all first (same work, less memory)
    MinHash.bulk((shingles(t, NGRAM) for t in texts), num_perm=NUM_PERM)
    seconds = time.perf_counter() - start
    return {"docs": len(texts), "seconds": round(seconds, 3), "docs_per_s": round(len(texts) / seconds), "peak_rss_mib": round(peak_rss_mib())}


def bulk_speed(path: Path, count: int, core: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--one", "bulk", "--docs", str(count), "--bulk-file", str(path)],
        capture_output=True, text=True, check=True, cwd=ROOT, preexec_fn=_pin(core),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _stat(text: str, key: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(key):
            try:
                return float(line[len(key):].strip())
            except ValueError:
                return None
    return None


def print_profile(prof: Path, top: int = 25) -> None:
    import pstats

    for order in ("cumulative", "tottime"):
        print(f"\n--- top {top} by {order}")
        pstats.Stats(str(prof), stream=sys.stdout).strip_dirs().sort_stats(order).print_stats(top)


def run_e2e(args) -> list[dict]:
    counts = [int(c.replace("_", "")) for c in args.e2e.split(",") if c.strip()]
    rates = [float(r) for r in args.dup_rates.split(",") if r.strip()]
    data_dir = Path(args.data_dir)
    core = args.core if args.core is not None else min(os.sched_getaffinity(0))
    out_dir = data_dir / "out"
    for count in counts:  # build (or reuse) every corpus first
        for rate in rates:
            t = time.perf_counter()
            path, meta = corpus(data_dir, count, rate)
            print(f"corpus {path}: {meta['docs']:,} docs, {meta['planted']:,} planted, {meta['bytes'] / 2**20:,.0f} MiB "
                  f"({time.perf_counter() - t:.1f} s)", flush=True)
    warm, _ = corpus(data_dir, WARMUP_DOCS, rates[0])
    try:
        run_cli(warm, out_dir, core)  # untimed: numba's on-disk JIT cache
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    print(f"warm-up run on {WARMUP_DOCS:,} docs done; timed runs pinned to core {core}", flush=True)

    if args.profile:
        path, meta = corpus(data_dir, counts[0], rates[0])
        prof = data_dir / f"dedup-{counts[0]}-{rates[0]:g}.prof"
        try:
            run = run_cli(path, out_dir, core, profile=prof)
            check = check_output(out_dir, counts[0])
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        print(f"profile of `distillery dedup` on {counts[0]:,} docs, dup rate {rates[0]:g} "
              f"({run['seconds']:.1f} s under cProfile; rejected {check['rejected']:,} of {meta['planted']:,} planted); "
              f"stats in {prof}")
        print(run["stdout"].rstrip())
        print_profile(prof)
        return []

    rows = []
    for count in counts:
        bulk_path, _ = corpus(data_dir, count, rates[0])
        bulk = bulk_speed(bulk_path, min(count, args.bulk_docs), core)
        for rate in rates:
            path, meta = corpus(data_dir, count, rate)
            try:
                run = run_cli(path, out_dir, core)
                check = check_output(out_dir, count)
            finally:
                shutil.rmtree(out_dir, ignore_errors=True)
            docs_per_s = count / run["seconds"]
            row = {
                "docs": count, "dup_rate": rate, "planted": meta["planted"], "rejected": check["rejected"],
                "kept": check["kept"], "rejected_by_reason": check["by_reason"], "seconds": round(run["seconds"], 2),
                "command_seconds": _stat(run["stdout"], "seconds:"), "docs_per_s": round(docs_per_s),
                "peak_rss_mib": round(run["peak_rss_mib"]), "datasketch_bulk_docs": bulk["docs"],
                "datasketch_bulk_docs_per_s": bulk["docs_per_s"], "ratio_vs_datasketch_bulk": round(docs_per_s / bulk["docs_per_s"], 1),
                "core": core, "command_stdout": run["stdout"],
            }
            rows.append(row)
            reasons = ", ".join(f"{k} {v:,}" for k, v in check["by_reason"].items()) or "none"
            print(f"{count:>10,} docs  dup {rate:<5g} planted {meta['planted']:>8,}  rejected {check['rejected']:>8,} ({reasons})  "
                  f"{run['seconds']:>8.1f} s  {docs_per_s:>8,.0f} docs/s  peak RSS {run['peak_rss_mib']:>6,.0f} MiB  |  "
                  f"datasketch bulk {bulk['docs_per_s']:>6,} docs/s ({bulk['docs']:,} docs)  x{row['ratio_vs_datasketch_bulk']}",
                  flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000, help="documents for the signature comparison")
    ap.add_argument("--methods", default="abcd", help='signature methods to compare ("" for none)')
    ap.add_argument("--e2e", default="", help="comma-separated document counts for end-to-end runs of `distillery dedup`")
    ap.add_argument("--dup-rates", default="0.01,0.2", help="comma-separated shares of planted near-copies (end to end)")
    ap.add_argument("--data-dir", default="/tmp/distillery-bench-dedup", help="corpora and command output (end to end)")
    ap.add_argument("--bulk-docs", type=int, default=100_000, help="at most this many documents for datasketch bulk (end to end)")
    ap.add_argument("--core", type=int, help="CPU to pin end-to-end children to (default: the lowest allowed)")
    ap.add_argument("--profile", action="store_true", help="profile the command on the first (N, p) instead of timing")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--bulk-file", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dedup.json"))
    args = ap.parse_args()
    if args.one:  # child process: one method, JSON on stdout
        print(json.dumps(run_bulk(args.bulk_file, args.docs) if args.one == "bulk" else run_method(args.one, args.docs)))
        return

    out = Path(args.out)
    results = {"signatures": [], "e2e": []}
    if out.exists():  # keep the other mode's results
        try:
            results.update(json.loads(out.read_text()))
        except ValueError:
            pass
    names = {"a": "datasketch naive", "b": "datasketch bulk", "c": "rensa + Python shingling", "d": "distillery"}
    if args.methods:
        results["signatures"] = []
    for m in args.methods:
        proc = subprocess.run([sys.executable, __file__, "--one", m, "--docs", str(args.docs)], capture_output=True, text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        results["signatures"].append(row)
        print(f"({m}) {names[m]:26s} {row['docs_per_s']:>9,} docs/s   peak RSS {row['peak_rss_mib']:>6,} MiB", flush=True)
    if args.e2e:
        rows = run_e2e(args)
        if args.profile:
            return
        results["e2e"] = rows
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
