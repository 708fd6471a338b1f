"""MinHash LSH on whole signature matrices at once. Pure logic (numpy, numba, datasketch's parameters).

datasketch's `MinHashLSH` hashes each row's band slices one Python call at a time and keeps a
dict per band; at a million rows that is most of a dedup's time. Here the band keys of a whole
batch are computed in one compiled pass (one 64-bit key per row and band), buckets are runs of equal keys
after a sort, and candidate pairs come out of those runs as arrays. The band/row split is
datasketch's own `_optimal_param`, so a threshold means what it means there; two rows share a
bucket exactly when their band slices are equal (up to a 64-bit hash collision, about one in
2^64 per pair), which is datasketch's rule too: `tests/test_lsh.py` checks the candidate pairs
against datasketch's buckets on the same signatures.
"""

from __future__ import annotations

import numpy as np
from datasketch.lsh import _optimal_param
from numba import njit

PAIR_ALL_UP_TO = 16  # buckets up to this size give every pair; larger ones are chained in row order

_MUL = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) as datasketch's MinHashLSH picks them (equal weights)."""
    return _optimal_param(threshold, num_perm, 0.5, 0.5)


@njit(cache=True, nogil=True)
def _band_keys(sigs, bands, rows, out):
    for i in range(sigs.shape[0]):
        for band in range(bands):
            h = np.uint64(band + 1) * _MUL
            for j in range(rows):
                h ^= np.uint64(sigs[i, band * rows + j])
                h ^= h >> np.uint64(30)  # splitmix64's finalizer: every input bit reaches every output bit
                h *= _M1
                h ^= h >> np.uint64(27)
                h *= _M2
                h ^= h >> np.uint64(31)
            out[i, band] = h


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 (n, bands): band i's key hashes signature columns [i*rows, (i+1)*rows), as datasketch's
    hashranges slice them; equal slices give equal keys, the band index is part of the key."""
    out = np.empty((len(sigs), bands), dtype=np.uint64)
    _band_keys(np.ascontiguousarray(sigs, dtype=np.uint32), bands, rows, out)
    return out


def bucket_pairs(keys: np.ndarray, row_ids: np.ndarray | None = None) -> np.ndarray:
    """Candidate pairs (i < j, int64 (m, 2), unique, sorted) from one band's keys: every pair in a
    bucket of up to PAIR_ALL_UP_TO rows, consecutive rows (in row order) in a larger one."""
    ids = np.arange(len(keys), dtype=np.int64) if row_ids is None else np.asarray(row_ids, dtype=np.int64)
    if len(ids) < 2 or bool((ids[1:] > ids[:-1]).all()):
        order = np.argsort(keys, kind="stable")  # rows already in order: a stable sort keeps it within a bucket
    else:
        order = np.lexsort((ids, keys))
    k, r = keys[order], ids[order]
    if len(k) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    sizes = np.diff(np.r_[starts, len(k)])
    parts = [np.zeros((0, 2), dtype=np.int64)]
    for size in np.unique(sizes[(sizes > 1) & (sizes <= PAIR_ALL_UP_TO)]):
        first = starts[sizes == size]
        a, b = np.triu_indices(int(size), 1)
        parts.append(np.stack([r[first[:, None] + a], r[first[:, None] + b]], axis=-1).reshape(-1, 2))
    big = sizes > PAIR_ALL_UP_TO
    if big.any():
        member = np.repeat(big, sizes)  # rows of a large bucket, in row order within it
        same = member[:-1] & (k[1:] == k[:-1])
        parts.append(np.stack([r[:-1][same], r[1:][same]], axis=1))
    return np.concatenate(parts)


def candidate_pairs(keys: np.ndarray, row_ids: np.ndarray | None = None) -> np.ndarray:
    """Candidate pairs over every band of a (n, bands) key matrix: unique (i, j), i < j, sorted."""
    pairs = np.concatenate([bucket_pairs(keys[:, band], row_ids) for band in range(keys.shape[1])] or [np.zeros((0, 2), np.int64)])
    if not len(pairs):
        return pairs
    pairs = np.sort(pairs, axis=1)
    return np.unique(pairs, axis=0)
