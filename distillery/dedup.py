"""Exact and MinHash-LSH near-duplicate removal, streaming. Pure logic.

Rows arrive in batches (`Deduplicator.add`), their texts as one Arrow string column:
exact keys (`distillery.exact`), signatures and LSH band keys are computed for the whole
batch in compiled passes over its UTF-8 buffer, and only ids, scores, exact keys, a
uint32 signature and the band keys are kept per row, so memory grows with the row count,
not with the text. `finish()` groups exact keys by sorting, turns LSH buckets into
candidate pairs (`distillery.lsh`), keeps the pairs whose estimated Jaccard reaches the
threshold, joins them (and exact matches) into clusters by connected components, and
picks one representative per cluster: a row already in the cross-run index, else the
highest judge score, else the smallest id. Every step after `add` works on arrays.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from distillery.errors import DistilleryError
from distillery.exact import exact_key, exact_keys, keys_from_arrow, keys_from_bytes, keys_to_bytes, normalize
from distillery.lsh import band_keys, candidate_pairs, lsh_params
from distillery.minhash import _signatures, permutations

_CHUNK = 1 << 16  # signature rows per storage chunk
_SIG_BATCH = 1024  # documents per call of the signature kernel

__all__ = ["DedupParams", "Deduplicator", "DedupResult", "exact_key", "normalize", "prepare", "text_column"]


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


def text_column(texts) -> tuple[pa.LargeStringArray, int]:
    """Texts as one Arrow large_string array (None: null), and how many held characters UTF-8
    cannot encode (lone surrogates, e.g. from a JSON escape), which are replaced."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if isinstance(texts, pa.Array):
        return (texts if texts.type == pa.large_string() else texts.cast(pa.large_string())), 0
    try:
        return pa.array(texts, pa.large_string()), 0
    except (pa.ArrowException, UnicodeError):
        fixed, replaced = [], 0
        for t in texts:
            try:
                t is None or t.encode("utf-8")
            except UnicodeEncodeError:
                t = t.encode("utf-8", "replace").decode("utf-8")
                replaced += 1
            fixed.append(t)
        return pa.array(fixed, pa.large_string()), replaced


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(UTF-8 bytes, int64 offsets of each text into them, validity) of a large_string array, zero-copy."""
    _, offsets, data = arr.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    buf = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else np.zeros(1, np.uint8)
    valid = np.ones(len(arr), dtype=np.bool_) if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
    return buf, offsets, valid


def prepare(texts, params: DedupParams, perms: tuple[np.ndarray, np.ndarray] | None = None
            ) -> tuple[np.ndarray, np.ndarray, list[str | None], int]:
    """Per text (a list of str/None or an Arrow string column): exact key (uint64 (n, 2)),
    signature (uint32 (n, num_perm)) and why it cannot be compared (missing_field /
    empty_field, else None); and the count of characters UTF-8 could not encode."""
    column, replaced = text_column(texts)
    buf, offsets, valid = _buffers(column)
    keys, blank = exact_keys(buf, offsets, valid)
    a, b = perms or permutations(params.num_perm, params.seed)
    n = len(column)
    sigs = np.empty((n, params.num_perm), dtype=np.uint32)
    scratch = np.empty((min(n, _SIG_BATCH), params.num_perm), dtype=np.uint64)
    for s in range(0, n, _SIG_BATCH):
        out = scratch[: min(_SIG_BATCH, n - s)]
        _signatures(buf, offsets[s : s + len(out) + 1], params.ngram, params.shingle == "char", a, b, out)
        sigs[s : s + len(out)] = out
    invalid: list[str | None] = [None] * n
    if not valid.all() or blank.any():
        for i in np.flatnonzero(~valid | blank).tolist():
            invalid[i] = "missing_field" if not valid[i] else "empty_field"
    return keys, sigs, invalid, replaced


@dataclass
class DedupResult:
    ids: list[str]
    representative: np.ndarray  # per row: index of its cluster's representative
    reason: list[str | None]  # per row: None kept; else exact_duplicate / near_duplicate / missing_field / empty_field
    similarity: np.ndarray  # estimated Jaccard with the representative (1.0 for exact)
    n_index: int  # the first n_index rows came from the index
    non_utf8_replaced: int

    def rows(self) -> range:
        return range(self.n_index, len(self.ids))


class Deduplicator:
    def __init__(self, params: DedupParams, batch: int = 64, spill: str | None = None):
        """`spill`: a folder where signatures go, row after row, as they are added (512 B a row
        at 128 permutations), and whence the rows of candidate pairs are read back: memory then
        holds ids, exact and band keys per row (~150 B) instead of ~650 B."""
        self.params = params
        self.spill = spill
        self._sig_path = os.path.join(spill, "signatures.u32") if spill else None
        self._sig_file = open(self._sig_path, "w+b") if spill else None
        self.perms = permutations(params.num_perm, params.seed)
        self.bands, self.band_rows = lsh_params(params.threshold, params.num_perm)  # datasketch's split
        self.ids: list[str] = []
        self._scores: list[np.ndarray] = []  # per added batch (contiguous rows): float64, NaN for none
        self._exact: list[np.ndarray] = []  # ... its exact keys, uint64 (n, 2)
        self._bands: list[np.ndarray] = []  # ... its band keys, uint64 (n, bands)
        self._chunks: list[np.ndarray] = []  # signatures, _CHUNK rows each (unless spilled)
        self._invalid: dict[int, str] = {}
        self.n_index = 0
        self.non_utf8_replaced = 0
        self._exact_root: np.ndarray | None = None  # after finish(): each row's first row with the same key

    def __len__(self) -> int:
        return len(self.ids)

    def signature(self, i: int) -> np.ndarray:
        return self.signatures_of(np.array([i]))[0]

    def _append(self, ids: Sequence[str], keys: np.ndarray, sigs: np.ndarray, invalid: Sequence[str | None] | None,
                scores: Sequence[float | None] | None) -> None:
        start, n = len(self.ids), len(ids)
        if len(keys) != n or len(sigs) != n:
            raise DedupError(f"{n} ids but {len(keys)} exact keys and {len(sigs)} signatures")
        self.ids.extend(ids)
        if scores is None:
            scores = np.full(n, np.nan)
        elif not isinstance(scores, np.ndarray):
            scores = np.array([np.nan if s is None else s for s in scores], dtype=np.float64)
        self._scores.append(np.asarray(scores, dtype=np.float64))
        self._exact.append(np.asarray(keys, dtype=np.uint64).reshape(n, 2))
        sigs = np.asarray(sigs, dtype=np.uint32)
        self._bands.append(band_keys(sigs, self.bands, self.band_rows))
        for offset, why in enumerate(invalid or ()):
            if why is not None:
                self._invalid[start + offset] = why
        if self._sig_file is not None:
            sigs.tofile(self._sig_file)
            return
        written = 0
        while written < n:
            row = start + written
            while row // _CHUNK >= len(self._chunks):
                self._chunks.append(np.empty((_CHUNK, self.params.num_perm), dtype=np.uint32))
            take = min(n - written, _CHUNK - row % _CHUNK)
            self._chunks[row // _CHUNK][row % _CHUNK : row % _CHUNK + take] = sigs[written : written + take]
            written += take

    def add_index(self, ids: Sequence[str], keys, sigs: np.ndarray) -> None:
        """Rows published by earlier builds: they win every cluster they join."""
        if len(self.ids) != self.n_index:
            raise DedupError("load the dedup index before adding new rows")
        self._append(ids, _as_keys(keys), sigs, None, None)
        self.n_index = len(self.ids)

    def add(self, ids: Sequence[str], texts, scores: Sequence[float | None] | None = None) -> None:
        """Add a batch (texts: a list of str/None or an Arrow string column); rows with a
        missing or empty text are marked, never dropped."""
        keys, sigs, invalid, replaced = prepare(texts, self.params, self.perms)
        self.non_utf8_replaced += replaced
        self._append(ids, keys, sigs, invalid, scores)

    def add_prepared(self, ids: Sequence[str], keys, sigs: np.ndarray,
                     invalid: Sequence[str | None], scores: Sequence[float | None] | None = None) -> None:
        """`add` for rows whose exact keys and signatures were computed elsewhere (`prepare`,
        a shard at a time): the same result as `add` on their texts, in the same order."""
        self._append(ids, _as_keys(keys), sigs, invalid, scores)

    def signatures_of(self, rows: np.ndarray) -> np.ndarray:
        """The stored signatures of many rows, gathered a chunk at a time."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.params.num_perm), dtype=np.uint32)
        if self._sig_file is not None:
            # Read back a block of rows at a time, only blocks holding wanted rows. (A memory map
            # would count every page the kernel maps around each touched one, ~all of them.)
            self._sig_file.flush()
            order = np.argsort(rows, kind="stable")
            wanted = rows[order]
            bounds = np.searchsorted(wanted, np.arange(0, len(self.ids) + _CHUNK, _CHUNK))
            size = out.shape[1] * 4
            view, fd = memoryview(out).cast("B"), self._sig_file.fileno()
            for block in np.flatnonzero(np.diff(bounds)).tolist():
                lo, hi = bounds[block], bounds[block + 1]
                first = block * _CHUNK
                count = min(_CHUNK, len(self.ids) - first)
                if (hi - lo) * 16 < count:  # a few rows of the block: one read each
                    for k, row in zip(order[lo:hi].tolist(), wanted[lo:hi].tolist()):
                        os.preadv(fd, [view[k * size : (k + 1) * size]], row * size)
                    continue
                self._sig_file.seek(first * size)
                data = np.fromfile(self._sig_file, dtype=np.uint32, count=count * out.shape[1]).reshape(count, -1)
                out[order[lo:hi]] = data[wanted[lo:hi] - first]
            self._sig_file.seek(0, os.SEEK_END)
            return out
        chunk = rows // _CHUNK
        for c in np.unique(chunk).tolist():
            here = chunk == c
            out[here] = self._chunks[c][rows[here] % _CHUNK]
        return out

    def _similarity(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Estimated Jaccard of row pairs: the share of equal signature values."""
        out = np.empty(len(left), dtype=np.float64)
        step = 1 << 18
        for s in range(0, len(left), step):
            m = len(left[s : s + step])
            rows, where = np.unique(np.r_[left[s : s + step], right[s : s + step]], return_inverse=True)
            sigs = self.signatures_of(rows)  # each row once
            for t in range(0, m, 1 << 14):
                u = min(m, t + (1 << 14))
                out[s + t : s + u] = (sigs[where[t:u]] == sigs[where[m + t : m + u]]).mean(axis=1)
        return out

    def _valid(self) -> np.ndarray:
        valid = np.ones(len(self.ids), dtype=np.bool_)
        if self._invalid:
            valid[np.fromiter(self._invalid, dtype=np.int64)] = False
        return valid

    def exact_roots(self) -> np.ndarray:
        """Per row: the first row with the same exact key (itself for the first, and for rows
        without a text)."""
        n = len(self.ids)
        roots = np.arange(n)
        if not n:
            return roots
        keys = np.concatenate(self._exact)
        rows = np.flatnonzero(self._valid())
        order = np.lexsort((rows, keys[rows, 1], keys[rows, 0]))
        k, r = keys[rows[order]], rows[order]
        first = np.r_[True, (k[1:] != k[:-1]).any(axis=1)]
        roots[r] = r[first][np.cumsum(first) - 1]
        return roots

    def lsh_rows(self, roots: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The rows LSH compares (valid exact roots) and their band keys, uint64 (m, bands)."""
        roots = self.exact_roots() if roots is None else roots
        if not self.ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.bands), dtype=np.uint64)
        rows = np.flatnonzero(self._valid() & (roots == np.arange(len(roots))))
        keys = np.concatenate(self._bands)
        return rows, (keys if len(rows) == len(keys) else keys[rows])

    def candidates(self, roots: np.ndarray | None = None) -> np.ndarray:
        """LSH candidate pairs (i < j), unique and sorted."""
        rows, keys = self.lsh_rows(roots)
        return candidate_pairs(keys, rows)

    def near_pairs(self, roots: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Candidate pairs among exact roots whose estimated Jaccard reaches the threshold, and that estimate."""
        pairs = self.candidates(roots)
        sims = self._similarity(pairs[:, 0], pairs[:, 1]) if len(pairs) else np.zeros(0)
        keep = sims >= self.params.threshold
        return pairs[keep], sims[keep]

    def finish(self) -> DedupResult:
        n = len(self.ids)
        roots = self._exact_root = self.exact_roots()
        pairs, sims = self.near_pairs(roots)
        dup = np.flatnonzero(roots != np.arange(n))
        edges = np.concatenate([pairs, np.stack([dup, roots[dup]], axis=1)]).astype(np.int64)
        rep = np.arange(n)
        if len(edges):
            graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
            _, label = connected_components(graph, directed=False)
            members = np.unique(edges)  # only rows on an edge can share a cluster
            scores = np.concatenate(self._scores)[members]
            ids = np.array([self.ids[i] for i in members.tolist()], dtype=object)
            id_rank = np.empty(len(members), dtype=np.int64)
            id_rank[np.argsort(ids, kind="stable")] = np.arange(len(members))
            # best first: an index row, then the highest score (none last), then the smallest id
            order = np.lexsort((id_rank, np.where(np.isnan(scores), np.inf, -scores), members >= self.n_index, label[members]))
            lab = label[members[order]]
            first = np.r_[True, lab[1:] != lab[:-1]]
            best = members[order][first][np.cumsum(first) - 1]
            rep[members[order]] = best
        reason = np.full(n, None, dtype=object)
        similarity = np.ones(n)
        moved = np.flatnonzero(rep != np.arange(n))
        same_text = roots[moved] == roots[rep[moved]]
        reason[moved] = np.where(same_text, "exact_duplicate", "near_duplicate")
        near = moved[~same_text]
        if len(near):  # most copies pair with their representative directly: that pair's estimate
            a, b = roots[near], roots[rep[near]]
            code, known = np.minimum(a, b) * n + np.maximum(a, b), pairs[:, 0] * n + pairs[:, 1]
            at = np.minimum(np.searchsorted(known, code), max(len(known) - 1, 0))
            direct = (known[at] == code) if len(known) else np.zeros(len(near), dtype=np.bool_)
            similarity[near[direct]] = sims[at[direct]]
            if not direct.all():
                similarity[near[~direct]] = self._similarity(a[~direct], b[~direct])
        for i, why in self._invalid.items():
            reason[i] = why
        return DedupResult(self.ids, rep, reason.tolist(), similarity, self.n_index, self.non_utf8_replaced)

    def export(self, rows: Sequence[int]) -> tuple[list[str], list[bytes], np.ndarray]:
        """(ids, exact keys, signatures) of some rows, for adding them to an index (after finish)."""
        roots = (self._exact_root if self._exact_root is not None else self.exact_roots())[np.asarray(rows, dtype=np.int64)]
        keys = np.concatenate(self._exact)[roots] if len(roots) else np.zeros((0, 2), np.uint64)
        return [self.ids[i] for i in rows], keys_to_bytes(keys), self.signatures_of(roots)


def _as_keys(keys) -> np.ndarray:
    if isinstance(keys, np.ndarray) and keys.dtype == np.uint64:
        return keys
    if isinstance(keys, (pa.Array, pa.ChunkedArray)):
        return keys_from_arrow(keys)
    return keys_from_bytes(keys)


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


def index_entries(ids: Sequence[str], texts: Sequence[str], params: DedupParams) -> tuple[list[str], list[bytes], np.ndarray]:
    """(ids, exact keys, signatures) computed from text, for rows to publish in an index."""
    keys, sigs, _, _ = prepare(list(texts), params)
    return list(ids), keys_to_bytes(keys), sigs


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
