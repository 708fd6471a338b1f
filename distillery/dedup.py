"""Exact and MinHash-LSH near-duplicate removal. Pure logic (datasketch, numpy).

Order matters and is deterministic: rows are visited in input order, and the
first row of a group is kept; later members are rejected with the id of the
row they duplicate as their cluster.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

from datasketch import LeanMinHash, MinHash, MinHashLSH

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)


def normalize(text: str) -> str:
    """Case-fold, NFKC and collapse whitespace: the text compared for exact dedup."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def dedup_text(row: dict, field: str) -> str:
    if field == "both":
        return f"{row['prompt']}\n{row['response']}"
    return row[field]


def shingles(text: str, ngram: int) -> set[bytes]:
    words = _WORD.findall(normalize(text))
    if len(words) < ngram:
        return {" ".join(words).encode()} if words else {b""}
    return {" ".join(words[i : i + ngram]).encode() for i in range(len(words) - ngram + 1)}


def minhash(text: str, ngram: int, num_perm: int, seed: int = 1) -> LeanMinHash:
    m = MinHash(num_perm=num_perm, seed=seed)
    m.update_batch(list(shingles(text, ngram)))
    return LeanMinHash(m)


def _reject(row: dict, reason: str, cluster: str, detail: str) -> dict:
    return {**row, "dedup_cluster": cluster, "stage": "dedup", "reason": reason, "detail": detail}


def exact_dedup(rows: Sequence[dict], field: str) -> tuple[list[dict], list[dict]]:
    seen: dict[str, str] = {}
    kept, rejected = [], []
    for row in rows:
        key = hashlib.sha256(normalize(dedup_text(row, field)).encode()).hexdigest()
        if key in seen:
            rejected.append(_reject(row, "exact_duplicate", seen[key], f"same normalized {field} as {seen[key]}"))
        else:
            seen[key] = row["id"]
            kept.append(row)
    return kept, rejected


def near_dedup(
    rows: Sequence[dict], field: str, ngram: int, num_perm: int, threshold: float
) -> tuple[list[dict], list[dict]]:
    """MinHash-LSH: a row whose sketch collides with an earlier kept row's and whose
    estimated Jaccard similarity reaches `threshold` is rejected."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    sketches: dict[str, LeanMinHash] = {}
    kept, rejected = [], []
    for row in rows:
        sketch = minhash(dedup_text(row, field), ngram, num_perm)
        best, best_sim = None, 0.0
        for cand in lsh.query(sketch):
            sim = sketch.jaccard(sketches[cand])
            if sim >= threshold and (sim > best_sim or (sim == best_sim and cand < best)):
                best, best_sim = cand, sim
        if best is not None:
            rejected.append(_reject(row, "near_duplicate", best, f"{field} ~{best_sim:.2f} Jaccard with {best}"))
            continue
        sketches[row["id"]] = sketch
        lsh.insert(row["id"], sketch)
        kept.append({**row, "dedup_cluster": row["id"]})
    return kept, rejected


def deduplicate(
    rows: Sequence[dict], field: str, ngram: int, num_perm: int, threshold: float
) -> tuple[list[dict], list[dict]]:
    """Exact dedup on normalized text, then near-dup removal on what is left."""
    kept, exact = exact_dedup(rows, field)
    kept, near = near_dedup(kept, field, ngram, num_perm, threshold)
    return kept, exact + near
