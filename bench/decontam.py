"""Benchmark decontamination at build scale: training rows against eval items.

Eval items (20-80 words) and training rows (prompt + answer, 50-200 words) are
drawn from a 50,000-word Zipf vocabulary (s = 1.1) with some capitalized,
punctuated and non-ASCII words, so both tokenization paths run. A tenth of the
eval items (40-100 words) start with one shared 9-word instruction and 1% of training rows
carry it too: those n-grams have ~10,000 postings each, the costly case for an
index. Planted rows, checked after matching:
  - copies (every 1,000th row): an eval item inside the row, verbatim, with every
    tenth word changed, or truncated to its first 60% -> must be found, with the
    right set and id;
  - decoys (every 1,000th row, offset 500): a span of 30% of an item (at least 8 words)
    -> must not be.
No other row may be hit. Reports index build seconds, match rows/s, peak RSS and
total seconds; writes bench/results/decontam.json.

    nice .venv/bin/python bench/decontam.py                       # 1M rows x 100k items
    nice .venv/bin/python bench/decontam.py --rows 50000 --items 10000
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TEMPLATE = "Answer the following question and explain your reasoning briefly"
SETS = ("gsm8k", "mmlu", "arc", "truthfulqa", "ifeval")


def vocabulary(size: int, seed: int) -> np.ndarray:
    """Distinct pseudo-words; 5% capitalized, 5% with trailing punctuation, 0.3% non-ASCII."""
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["qu", "th", "st", "ch"]
    words: dict[str, None] = {}
    while len(words) < size:
        words["".join(rng.choice(syllables, size=int(rng.integers(1, 5))))] = None
    vocab = np.array(list(words), dtype=object)
    marks = rng.random(size)
    vocab[marks < 0.05] = [w.capitalize() for w in vocab[marks < 0.05]]
    vocab[(marks >= 0.05) & (marks < 0.10)] = [w + rng.choice([",", ".", "?", ":"]) for w in vocab[(marks >= 0.05) & (marks < 0.10)]]
    vocab[(marks >= 0.10) & (marks < 0.103)] = [w + "’s" for w in vocab[(marks >= 0.10) & (marks < 0.103)]]
    return vocab


class Texts:
    """Zipf-distributed random texts (word ranks drawn by inverse CDF)."""

    def __init__(self, vocab: np.ndarray, seed: int, s: float = 1.1):
        weights = 1.0 / np.arange(1, len(vocab) + 1) ** s
        self.cdf = np.cumsum(weights) / weights.sum()
        self.vocab = vocab
        self.rng = np.random.default_rng(seed)

    def batch(self, count: int, low: int, high: int) -> list[str]:
        lengths = self.rng.integers(low, high + 1, size=count)
        ranks = np.searchsorted(self.cdf, self.rng.random(int(lengths.sum())))
        words = self.vocab[np.minimum(ranks, len(self.vocab) - 1)]
        ends = np.cumsum(lengths)
        return [" ".join(words[e - n : e]) for e, n in zip(ends.tolist(), lengths.tolist())]


def eval_items(texts: Texts, count: int) -> list[tuple[str, str, str]]:
    items = []
    for i, text in enumerate(texts.batch(count, 20, 80)):
        if i % 10 == 3:  # a shared instruction, as in templated benchmarks; under a quarter of the item
            text = TEMPLATE + " " + text + " " + texts.batch(1, 11, 11)[0]
        items.append((SETS[i % len(SETS)], f"{SETS[i % len(SETS)]}-{i:06d}", text))
    return items


def plant(row: str, item: str, kind: str, rng: np.random.Generator) -> str:
    """A training row carrying an eval item (copy kinds) or 30% of one (decoy)."""
    words = item.split()
    if kind == "edited":
        words = [("zzedit" if i % 10 == 9 else w) for i, w in enumerate(words)]
    elif kind == "truncated":
        words = words[: int(np.ceil(0.6 * len(words))) + 1]
    elif kind == "decoy":
        span = max(8, int(0.3 * len(words)))
        start = int(rng.integers(0, len(words) - span + 1))
        words = words[start : start + span]
    host = row.split()
    cut = int(rng.integers(0, len(host) + 1))
    return " ".join(host[:cut] + words + host[cut:])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(rows: int, items: int, batch: int, seed: int) -> dict:
    from distillery.guards.decontam import EvalIndex

    t0 = time.perf_counter()
    vocab = vocabulary(50_000, seed)
    evals = eval_items(Texts(vocab, seed + 1), items)
    EvalIndex.build(evals[:10])  # compile (cached on disk after the first run)
    t = time.perf_counter()
    index = EvalIndex.build(evals)
    build_s = time.perf_counter() - t
    gen, rng = Texts(vocab, seed + 2), np.random.default_rng(seed + 3)
    kinds = ("verbatim", "edited", "truncated")
    expected, decoys, wrong, missed, extra = {}, 0, [], [], []
    match_s = 0.0
    for start in range(0, rows, batch):
        texts = gen.batch(min(batch, rows - start), 50, 200)
        for i in range(len(texts)):
            row = start + i
            if row % 1000 in (0, 500):
                item = int(rng.integers(len(evals)))
                kind = "decoy" if row % 1000 == 500 else kinds[(row // 1000) % 3]
                texts[i] = plant(texts[i], evals[item][2], kind, rng)
                if kind == "decoy":
                    decoys += 1
                else:
                    expected[row] = (evals[item][0], evals[item][1], kind)
            elif row % 100 == 7:
                texts[i] = texts[i] + " " + TEMPLATE
        t = time.perf_counter()
        hits = index.match(texts)
        match_s += time.perf_counter() - t
        for i, hit in enumerate(hits):
            want = expected.get(start + i)
            if want is None and hit is not None:
                extra.append((start + i, hit.item_id, hit.coverage))
            elif want is not None and hit is None:
                missed.append((start + i, want))
            elif want is not None and (hit.eval_set, hit.item_id) != want[:2]:
                wrong.append((start + i, want, hit.item_id))
    total_s = time.perf_counter() - t0
    result = {
        "rows": rows, "eval_items": items, "eval_ngrams": int(len(index.post_item)),
        "build_seconds": round(build_s, 2), "match_seconds": round(match_s, 1), "match_rows_per_s": round(rows / match_s),
        "total_seconds": round(total_s, 1), "peak_rss_mib": round(peak_rss_mib()),
        "planted": len(expected), "decoys": decoys, "missed": len(missed), "wrong_item": len(wrong), "false_hits": len(extra),
    }
    assert not missed, f"planted copies not found: {missed[:5]}"
    assert not wrong, f"planted copies matched to the wrong item: {wrong[:5]}"
    assert not extra, f"rows hit that carry no copy: {extra[:5]}"
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="training rows")
    ap.add_argument("--items", type=int, default=100_000, help="eval items")
    ap.add_argument("--batch", type=int, default=10_000, help="training rows per match call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "decontam.json"))
    args = ap.parse_args()
    r = run(args.rows, args.items, args.batch, args.seed)
    print(f"{'rows':>10} {'eval items':>10} {'build s':>8} {'match rows/s':>13} {'peak RSS':>9} {'total s':>8} {'planted found':>14} {'false hits':>10}")
    print(f"{r['rows']:>10,} {r['eval_items']:>10,} {r['build_seconds']:>8} {r['match_rows_per_s']:>13,} "
          f"{r['peak_rss_mib']:>5,} MiB {r['total_seconds']:>8} {r['planted'] - r['missed']:>6,} of {r['planted']:<5,} {r['false_hits']:>10}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
