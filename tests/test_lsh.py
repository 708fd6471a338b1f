"""The vectorized LSH gives datasketch's candidate pairs on the same signatures, and its
threshold means datasketch's band/row split."""

from __future__ import annotations

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHashLSH

from distillery.lsh import PAIR_ALL_UP_TO, band_keys, bucket_pairs, candidate_pairs, lsh_params


def planted(n: int, num_perm: int, seed: int, share: float = 0.3, big: int = 0) -> np.ndarray:
    """Random signatures; a share of rows copy another row with some columns changed; `big` rows
    share one band slice (a bucket larger than PAIR_ALL_UP_TO)."""
    rng = np.random.default_rng(seed)
    sigs = rng.integers(0, 2**32, size=(n, num_perm), dtype=np.uint64).astype(np.uint32)
    for i in rng.choice(n, int(share * n), replace=False):
        j = int(rng.integers(n))
        sigs[i] = sigs[j]
        cols = rng.choice(num_perm, int(rng.integers(0, num_perm // 2)), replace=False)
        sigs[i, cols] = rng.integers(0, 2**32, size=len(cols), dtype=np.uint64).astype(np.uint32)
    if big:
        sigs[:big, :8] = sigs[0, :8]
    return sigs


def datasketch_pairs(sigs: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    lsh = MinHashLSH(threshold=threshold, num_perm=sigs.shape[1])
    for i, sig in enumerate(sigs):
        lsh.insert(i, LeanMinHash(seed=1, hashvalues=sig))
    pairs = set()
    for table in lsh.hashtables:
        for key in table.keys():
            members = sorted(table.get(key))
            if len(members) <= PAIR_ALL_UP_TO:
                pairs |= {(x, y) for k, x in enumerate(members) for y in members[k + 1:]}
            else:
                pairs |= set(zip(members, members[1:]))
    return pairs


@pytest.mark.parametrize("threshold, num_perm", [(0.8, 128), (0.5, 64), (0.9, 256)])
def test_candidate_pairs_equal_datasketch_on_the_same_signatures(threshold, num_perm):
    sigs = planted(3000, num_perm, seed=int(threshold * 100) + num_perm, big=40)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert lsh_params(threshold, num_perm) == (lsh.b, lsh.r)
    b, r = lsh_params(threshold, num_perm)
    ours = candidate_pairs(band_keys(sigs, b, r))
    theirs = datasketch_pairs(sigs, threshold)
    assert len(theirs) > 100  # planted copies and the large bucket are found
    assert set(map(tuple, ours.tolist())) == theirs


def test_band_keys_are_equal_exactly_when_band_slices_are():
    sigs = planted(500, 128, seed=3)
    b, r = lsh_params(0.8, 128)
    keys = band_keys(sigs, b, r)
    assert keys.shape == (500, b) and keys.dtype == np.uint64
    slices = sigs[:, : b * r].reshape(500, b, r)
    for band in range(b):
        same_key = keys[:, band][:, None] == keys[:, band][None, :]
        same_slice = (slices[:, band][:, None, :] == slices[:, band][None, :, :]).all(axis=-1)
        assert (same_key == same_slice).all()
    assert len(np.unique(keys[0])) == b  # one slice repeated in every band still gives each band its own key


def test_bucket_pairs_with_row_ids_and_large_buckets():
    keys = np.array([5, 7, 5, 9, 7, 5], dtype=np.uint64)
    assert sorted(bucket_pairs(keys, np.array([10, 11, 12, 13, 14, 15])).tolist()) == [[10, 12], [10, 15], [11, 14], [12, 15]]
    big = np.zeros(PAIR_ALL_UP_TO + 3, dtype=np.uint64)
    chain = bucket_pairs(big)
    assert chain.tolist() == [[i, i + 1] for i in range(PAIR_ALL_UP_TO + 2)]
    assert bucket_pairs(np.array([1], dtype=np.uint64)).shape == (0, 2)
