"""Exact and MinHash-LSH near-duplicate removal, streaming. Pure logic.

Rows arrive in batches (`Deduplicator.add`); only ids, an exact-text key and
a uint32 signature per row are kept, so memory grows with the row count, not
with the text. `finish()` turns LSH buckets into candidate pairs, keeps the
pairs whose estimated Jaccard reaches the threshold, joins them (and exact
matches) into clusters by connected components, and picks one representative
per cluster: a row already in the cross-run index, else the highest judge
score, else the smallest id.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np

from distillery.errors import DistilleryError
from distillery.lsh import band_keys, candidate_pairs, lsh_params
from distillery.minhash import encode_batch, permutations, signature_batch, signatures

_CHUNK = 1 << 16  # signature rows per storage chunk


class DedupError(DistilleryError, ValueError):
    """Dedup settings that cannot work together (e.g. an index built differently)."""


@dataclass(frozen=True)
class DedupParams:
    num_perm: int = 128
    threshold: float = 0.8
    ngram: int = 5
    shingle: str = "word"  # or "char"
    seed: int = 1

    def check_index(self, other: "DedupParams", where: str) -> None:
        mine, theirs = asdict(self), asdict(other)
        fields = [k for k in ("num_perm", "ngram", "shingle", "seed") if mine[k] != theirs[k]]
        if fields:
            diff = ", ".join(f"{k}={theirs[k]!r} there vs {mine[k]!r} here" for k in fields)
            raise DedupError(f"dedup index {where} was built with different settings ({diff}); use matching settings or a new index")


def normalize(text: str) -> str:
    """Case-fold, NFKC and collapse whitespace: the text compared for exact dedup."""
    # str.split() with no argument splits on runs of Unicode whitespace, like
    # \s+, at a tenth of the regex's cost.
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def exact_key(text: str) -> bytes:
    return hashlib.blake2b(normalize(text).encode("utf-8", "replace"), digest_size=16).digest()


def _band_key(data: bytes) -> bytes:
    """One band slice's bucket key, row by row (the Ray dedup's shuffle); `distillery.lsh` keys whole batches."""
    return hashlib.blake2b(data, digest_size=8).digest()


@dataclass
class DedupResult:
    ids: list[str]
    representative: np.ndarray  # per row: index of its cluster's representative
    reason: list[str | None]  # None kept; else exact_duplicate / near_duplicate / missing_field / empty_field
    similarity: np.ndarray  # estimated Jaccard with the representative (1.0 for exact)
    n_index: int  # the first n_index rows came from the index
    non_utf8_replaced: int

    def rows(self) -> range:
        return range(self.n_index, len(self.ids))


class Deduplicator:
    def __init__(self, params: DedupParams, batch: int = 64):
        self.params = params
        self.batch = batch
        self.a, self.b = permutations(params.num_perm, params.seed)
        self.bands, self.band_rows = lsh_params(params.threshold, params.num_perm)  # datasketch's split
        self._keys: list[np.ndarray] = []  # per stored batch: its band keys (n, bands) ...
        self._key_rows: list[np.ndarray] = []  # ... and the rows they belong to
        self.ids: list[str] = []
        self.scores: list[float | None] = []
        self._chunks: list[np.ndarray] = []
        self._exact: dict[bytes, int] = {}
        self._exact_of: dict[int, int] = {}
        self._invalid: dict[int, str] = {}
        self.n_index = 0
        self.non_utf8_replaced = 0

    def __len__(self) -> int:
        return len(self.ids)

    def signature(self, i: int) -> np.ndarray:
        return self._chunks[i // _CHUNK][i % _CHUNK]

    def _store(self, sigs: np.ndarray, rows: Sequence[int]) -> None:
        """Keep a batch's signatures and its LSH band keys, computed for the whole batch at once."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return
        sigs = np.asarray(sigs, dtype=np.uint32)
        while int(rows.max()) // _CHUNK >= len(self._chunks):
            self._chunks.append(np.zeros((_CHUNK, self.params.num_perm), dtype=np.uint32))
        chunk = rows // _CHUNK
        for c in np.unique(chunk):
            here = chunk == c
            self._chunks[c][rows[here] % _CHUNK] = sigs[here]
        self._keys.append(band_keys(sigs, self.bands, self.band_rows))
        self._key_rows.append(rows)

    def add_index(self, ids: Sequence[str], keys: Sequence[bytes], sigs: np.ndarray) -> None:
        """Rows published by earlier builds: they win every cluster they join."""
        if len(self.ids) != self.n_index:
            raise DedupError("load the dedup index before adding new rows")
        start = len(self.ids)
        self.ids.extend(ids)
        self.scores.extend([None] * len(ids))
        for offset, key in enumerate(keys):
            self._exact.setdefault(bytes(key), start + offset)
        self._store(sigs, range(start, start + len(ids)))
        self.n_index = len(self.ids)

    def add(self, ids: Sequence[str], texts: Sequence[str | None], scores: Sequence[float | None] | None = None) -> None:
        """Add a batch; rows with a missing or empty text are marked, never dropped."""
        start = len(self.ids)
        self.ids.extend(ids)
        self.scores.extend(scores if scores is not None else [None] * len(ids))
        fresh_rows, fresh_texts = [], []
        for offset, text in enumerate(texts):
            i = start + offset
            if text is None:
                self._invalid[i] = "missing_field"
            elif not text.strip():
                self._invalid[i] = "empty_field"
            else:
                first = self._exact.setdefault(exact_key(text), i)
                if first != i:
                    self._exact_of[i] = first
                else:
                    fresh_rows.append(i)
                    fresh_texts.append(text)
        for s in range(0, len(fresh_texts), self.batch):
            buf, offsets, replaced = encode_batch(fresh_texts[s : s + self.batch])
            self.non_utf8_replaced += replaced
            sigs = signature_batch(buf, offsets, self.params.ngram, self.params.shingle, self.a, self.b)
            self._store(sigs.astype(np.uint32), fresh_rows[s : s + self.batch])

    def add_prepared(self, ids: Sequence[str], keys: Sequence[bytes | None], sigs: np.ndarray,
                     invalid: Sequence[str | None], scores: Sequence[float | None] | None = None) -> None:
        """`add` for rows whose exact keys and signatures were computed elsewhere (`prepare`,
        a shard at a time): the same result as `add` on their texts, in the same order."""
        start = len(self.ids)
        self.ids.extend(ids)
        self.scores.extend(scores if scores is not None else [None] * len(ids))
        fresh = []
        for offset, (key, why) in enumerate(zip(keys, invalid)):
            i = start + offset
            if why is not None:
                self._invalid[i] = why
                continue
            first = self._exact.setdefault(bytes(key), i)
            if first != i:
                self._exact_of[i] = first
            else:
                fresh.append(offset)
        if fresh:
            self._store(np.asarray(sigs, dtype=np.uint32)[fresh], [start + o for o in fresh])

    def _candidate_pairs(self) -> np.ndarray:
        if not self._keys:
            return np.zeros((0, 2), dtype=np.int64)
        return candidate_pairs(np.concatenate(self._keys), np.concatenate(self._key_rows))

    def signatures_of(self, rows: np.ndarray) -> np.ndarray:
        """The stored signatures of many rows, gathered a chunk at a time."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.params.num_perm), dtype=np.uint32)
        chunk = rows // _CHUNK
        for c in np.unique(chunk):
            here = chunk == c
            out[here] = self._chunks[c][rows[here] % _CHUNK]
        return out

    def _similarity(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        out = np.empty(len(left), dtype=np.float64)
        for s in range(0, len(left), 65536):
            out[s : s + 65536] = (self.signatures_of(left[s : s + 65536]) == self.signatures_of(right[s : s + 65536])).mean(axis=1)
        return out

    def near_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Candidate pairs whose estimated Jaccard reaches the threshold, and that estimate."""
        pairs = self._candidate_pairs()
        sims = self._similarity(pairs[:, 0], pairs[:, 1]) if len(pairs) else np.zeros(0)
        keep = sims >= self.params.threshold
        return pairs[keep], sims[keep]

    def _rank(self, i: int) -> tuple:
        score = self.scores[i]
        return (i >= self.n_index, -(score if score is not None else float("-inf")), self.ids[i])

    def finish(self) -> DedupResult:
        n = len(self.ids)
        parent = np.arange(n)
        find = partial(find_root, parent)

        pairs, sims = self.near_pairs()
        edges = [*pairs.tolist(), *self._exact_of.items()]
        for x, y in edges:
            join(parent, x, y)
        # Only rows on an edge can share a cluster; everyone else represents itself.
        members: dict[int, list[int]] = {}
        for i in {v for edge in edges for v in edge}:
            members.setdefault(find(i), []).append(i)
        rep = np.arange(n)
        for group in members.values():
            rep[group] = min(group, key=self._rank)
        sim_of = {(min(x, y), max(x, y)): s for (x, y), s in zip(pairs.tolist(), sims.tolist())}
        reason: list[str | None] = [None] * n
        similarity = np.ones(n)
        for i in range(n):
            if i in self._invalid:
                reason[i] = self._invalid[i]
            elif rep[i] != i:
                same_text = self._exact_root(i) == self._exact_root(rep[i])
                reason[i] = "exact_duplicate" if same_text else "near_duplicate"
                similarity[i] = 1.0 if same_text else sim_of.get((min(i, rep[i]), max(i, rep[i])), self._estimate(i, rep[i]))
        return DedupResult(self.ids, rep, reason, similarity, self.n_index, self.non_utf8_replaced)

    def export(self, rows: Sequence[int]) -> tuple[list[str], list[bytes], np.ndarray]:
        """(ids, exact keys, signatures) of some rows, for adding them to an index."""
        key_of = {first: key for key, first in self._exact.items()}
        roots = [self._exact_root(i) for i in rows]
        sigs = np.stack([self.signature(r) for r in roots]) if rows else np.zeros((0, self.params.num_perm), np.uint32)
        return [self.ids[i] for i in rows], [key_of[r] for r in roots], sigs

    def _exact_root(self, i: int) -> int:
        return self._exact_of.get(i, i)

    def _estimate(self, i: int, j: int) -> float:
        return float((self.signature(self._exact_root(i)) == self.signature(self._exact_root(j))).mean())


def find_root(parent: np.ndarray, x: int) -> int:
    """Union-find: x's root, halving the path on the way."""
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        parent[x], x = root, parent[x]
    return root


def join(parent: np.ndarray, x: int, y: int) -> None:
    """Union-find: one cluster of x's and y's, rooted at the smaller root."""
    rx, ry = find_root(parent, x), find_root(parent, y)
    if rx != ry:
        parent[max(rx, ry)] = min(rx, ry)


def prepare(texts: Sequence[str | None], params: DedupParams, batch: int = 64
            ) -> tuple[list[bytes | None], np.ndarray, list[str | None], int]:
    """Per text: exact key, signature and why it cannot be compared (missing/empty), and
    the count of non-UTF-8 characters replaced. For `Deduplicator.add_prepared`."""
    a, b = permutations(params.num_perm, params.seed)
    keys: list[bytes | None] = [None] * len(texts)
    invalid: list[str | None] = [None] * len(texts)
    sigs = np.zeros((len(texts), params.num_perm), dtype=np.uint32)
    valid = []
    for i, text in enumerate(texts):
        if text is None:
            invalid[i] = "missing_field"
        elif not text.strip():
            invalid[i] = "empty_field"
        else:
            keys[i] = exact_key(text)
            valid.append(i)
    replaced = 0
    for s in range(0, len(valid), batch):
        rows = valid[s : s + batch]
        buf, offsets, bad = encode_batch([texts[i] for i in rows])
        replaced += bad
        sigs[rows] = signature_batch(buf, offsets, params.ngram, params.shingle, a, b).astype(np.uint32)
    return keys, sigs, invalid, replaced


def index_entries(ids: Sequence[str], texts: Sequence[str], params: DedupParams) -> tuple[list[str], list[bytes], np.ndarray]:
    """(ids, exact keys, signatures) computed from text, for rows to publish in an index."""
    a, b = permutations(params.num_perm, params.seed)
    sigs = signatures(list(texts), params.ngram, a, b, params.shingle).astype(np.uint32)
    return list(ids), [exact_key(t) for t in texts], sigs


def dedup_text(row: dict, field: str) -> str | None:
    if field == "both":
        parts = [row.get("prompt"), row.get("response")]
        return None if any(p is None for p in parts) else f"{parts[0]}\n{parts[1]}"
    return row.get(field)


def deduplicate_rows(
    rows: Sequence[dict], field: str, params: DedupParams, index: Deduplicator | None = None
) -> tuple[list[dict], list[dict], DedupResult]:
    """Dedup in-memory rows (the flow's stage). `index`, if given, is a
    Deduplicator already holding an index's rows; it is used up."""
    dedup = index or Deduplicator(params)
    dedup.add([r["id"] for r in rows], [dedup_text(r, field) for r in rows], [r.get("judge_score") for r in rows])
    result = dedup.finish()
    kept, rejected = [], []
    for row, i in zip(rows, result.rows()):
        verdict = dedup_verdict(result, i, field)
        (kept if verdict.get("reason") is None else rejected).append({**row, **verdict})
    return kept, rejected, result


def dedup_verdict(result: DedupResult, i: int, field: str) -> dict:
    """The dedup fields of row i: `dedup_cluster` if kept; with stage, reason and detail if not."""
    why = result.reason[i]
    cluster = result.ids[result.representative[i]]
    if why is None:
        return {"dedup_cluster": cluster}
    if why in ("missing_field", "empty_field"):
        detail = f"{field} is missing" if why == "missing_field" else f"{field} is empty"
        return {"dedup_cluster": None, "duplicate_of": None, "stage": "dedup", "reason": why, "detail": detail}
    in_index = result.representative[i] < result.n_index
    detail = f"{field} ~{result.similarity[i]:.2f} Jaccard with {cluster}" + (" (published by an earlier build)" if in_index else "")
    return {"dedup_cluster": cluster, "duplicate_of": cluster, "stage": "dedup",
            "reason": "seen_in_index" if in_index else why, "detail": detail}
