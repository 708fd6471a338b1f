"""The diversity report: the engine's guard against collapse. Pure logic.

- distinct-1 / distinct-2: unique word unigrams / bigrams over all of them (Li et al., 2016);
- mean pairwise similarity: the MinHash Jaccard estimate over every pair of a fixed-seed sample;
- near-seed share: the share of rows whose Jaccard estimate with some seed reaches the
  dedup threshold (they restate a seed instead of adding something).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import numpy as np
from datasketch import MinHashLSH
from datasketch.lean_minhash import LeanMinHash

from distillery.minhash import permutations, signatures


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    grams, total = set(), 0
    for text in texts:
        w = _words(text)
        for i in range(len(w) - n + 1):
            grams.add(tuple(w[i : i + n]))
            total += 1
    return round(len(grams) / total, 4) if total else None


def diversity_report(texts: Sequence[str], seeds: Sequence[str], threshold: float = 0.8, ngram: int = 3,
                     num_perm: int = 128, sample: int = 300, seed: int = 0) -> dict:
    texts = [t for t in texts if t and t.strip()]
    report = {"rows": len(texts), "distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
              "mean_pairwise_similarity": None, "sample": 0, "near_seed_share": None, "near_seed_threshold": threshold}
    if not texts:
        return report
    a, b = permutations(num_perm)
    picked = random.Random(seed).sample(texts, min(sample, len(texts)))
    sigs = signatures(picked, ngram, a, b)
    if len(picked) > 1:
        eq = (sigs[:, None, :] == sigs[None, :, :]).mean(axis=2)
        upper = eq[np.triu_indices(len(picked), k=1)]
        report["mean_pairwise_similarity"] = round(float(upper.mean()), 4)
        report["sample"] = len(picked)
    seeds = [s for s in seeds if s and s.strip()]
    if seeds:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        seed_sigs = signatures(seeds, ngram, a, b)
        for i, sig in enumerate(seed_sigs):
            lsh.insert(i, LeanMinHash(seed=1, hashvalues=sig))
        mine = signatures(texts, ngram, a, b)
        near = 0
        for sig in mine:
            hits = lsh.query(LeanMinHash(seed=1, hashvalues=sig))
            if any((seed_sigs[j] == sig).mean() >= threshold for j in hits):
                near += 1
        report["near_seed_share"] = round(near / len(texts), 4)
    return report


def format_diversity(report: dict) -> str:
    return (f"diversity: distinct-1 {report['distinct_1']}, distinct-2 {report['distinct_2']}, "
            f"mean pairwise similarity {report['mean_pairwise_similarity']} (sample of {report['sample']}), "
            f"near a seed {report['near_seed_share']} (Jaccard >= {report['near_seed_threshold']})")
