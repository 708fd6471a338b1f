"""Benchmark decontamination, Tulu 3's rule. Pure logic (numpy + numba).

Tulu 3 (Lambert et al. 2024, sec. 2.3): an evaluation item is contaminated by a
training row when more than half of the item's tokens lie in 8-grams it shares
with that row. `EvalIndex.match` applies it; the row is what gets rejected.
`EvalIndex.any_hit` is the stricter check for answers (GPT-3's 13-gram overlap):
any shared n-gram is a hit.

Tokens are `tokens(text)`: lower-cased `\\w+` runs after NFKC, each Han or kana
character its own token (Chinese and Japanese have no spaces: a sentence would
be one token otherwise). Hangul, Latin, Cyrillic, Greek split at spaces and
punctuation; Thai or Khmer stay one token per run. Python's `\\w` excludes
combining marks, so Indic words split at vowel signs (alike on both sides).

Eval items shorter than n tokens have no n-gram. Tulu's rule would never flag
them; here an item of `min_short` to n-1 tokens counts as contaminated (coverage
1.0) when the whole item appears as a contiguous token run in a training text,
and one shorter than `min_short` ("Tell me a joke" and the like occur in
ordinary text) is never matched; `short` and `skipped` count both per set.

Speed (bench/decontam.py: 1M rows against 100k items in 13-15 s on one core):
words are hashed to uint64 in one compiled pass over a batch's UTF-8 bytes
(ASCII text skips the regex pass); n-gram hashes roll in O(1) a word; each is
checked against a bit filter and then an open-addressing table of the eval
n-gram hashes. Only rows with a hit walk postings to score items. Coverage is
computed from 64-bit hashes without re-reading text: with ~5M eval n-grams and
~10^8 training n-grams a build, the expected number of chance collisions is
5e6 * 1e8 / 2^64 = 3e-5, and one adds at most n tokens to one item's coverage.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

_CJK = re.compile("[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_NONWORD = re.compile(r"\W+")
_BATCH = 2048  # texts per compiled call: their bytes and scratch stay in cache
_MIN_SHORT = 5
# A one-bit-per-hash filter in front of the table: 2^27 bits (16 MiB) stay in cache where
# the table (~12 bytes per eval n-gram) does not; at 5M n-grams 4% of misses reach the table.
_FILTER_BITS = 27
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it loses no bits


@dataclass(frozen=True)
class ContamHit:
    eval_set: str
    item_id: str
    coverage: float  # share of the eval item's tokens covered (1.0 for an any-hit match)


def _normalize(text: str) -> str:
    """Lower-cased text whose non-word runs are single spaces and whose CJK characters stand alone."""
    if text.isascii():  # NFKC leaves ASCII alone; the common case skips two passes
        return _NONWORD.sub(" ", text.lower())
    text = _CJK.sub(r" \g<0> ", unicodedata.normalize("NFKC", text).lower())
    return _NONWORD.sub(" ", text)


def tokens(text: str) -> list[str]:
    """The words the rule counts: lower-cased `\\w+` runs after NFKC, one token per Han or kana character."""
    return _normalize(text).split()


def _encode(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 of the texts, lower-cased (ASCII) or normalized, in one buffer, and offsets. The
    kernel splits words at ASCII non-word bytes, so ASCII text skips the regex pass."""
    parts = [(t.lower() if t.isascii() else _normalize(t)).encode("utf-8", "replace") for t in (t or "" for t in texts)]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return np.frombuffer(b"".join(parts), dtype=np.uint8), offsets


# ---- compiled kernels ----

@njit(cache=True, inline="always")
def _mix(h):
    # splitmix64's finalizer: every input bit reaches every output bit.
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@njit(cache=True)
def _word_hashes(buf, start, stop, out):
    """FNV-1a of each word of buf[start:stop] into out; returns the count."""
    nw = 0
    h = np.uint64(0xCBF29CE484222325)
    in_word = False
    for i in range(start, stop):
        c = buf[i]
        # \w in ASCII; every non-ASCII byte left after _normalize belongs to a word
        if (c >= 97 and c <= 122) or (c >= 48 and c <= 57) or c == 95 or c >= 128 or (c >= 65 and c <= 90):
            h = (h ^ np.uint64(c)) * np.uint64(0x100000001B3)
            in_word = True
        elif in_word:
            out[nw] = _mix(h)
            nw += 1
            h = np.uint64(0xCBF29CE484222325)
            in_word = False
    if in_word:
        out[nw] = _mix(h)
        nw += 1
    return nw


@njit(cache=True, inline="always")
def _key(g):
    return _mix(g) | np.uint64(1)  # never 0, the table's empty slot


@njit(cache=True, inline="always")
def _window(words, p, k):
    """Polynomial hash of words[p:p+k] (Horner, odd base, mod 2^64): it rolls in O(1) a step."""
    g = np.uint64(0)
    for j in range(p, p + k):
        g = g * _BASE + words[j]
    return g


@njit(cache=True)
def _item_keys(buf, offsets, n, min_short, out_hash, out_item, lengths):
    """Every eval item's n-gram keys (a short item's: one key of all its words). Returns the count."""
    words = np.empty(buf.shape[0] + 1, np.uint64)
    k = 0
    for d in range(offsets.shape[0] - 1):
        nw = _word_hashes(buf, offsets[d], offsets[d + 1], words)
        lengths[d] = nw
        span = min(n, nw)
        for p in range(nw - span + 1 if nw >= min(n, min_short) else 0):
            out_hash[k], out_item[k] = _key(_window(words, p, span)), d
            k += 1
    return k


@njit(cache=True, inline="always")
def _probe(filter_bits, table_keys, table_ids, h):
    bit = h >> np.uint64(64 - _FILTER_BITS)  # the filter reads high bits, the table low ones
    if not filter_bits[bit >> np.uint64(6)] & (np.uint64(1) << (bit & np.uint64(63))):
        return -1
    mask = np.uint64(table_keys.shape[0] - 1)
    slot = h & mask
    while True:
        key = table_keys[slot]
        if key == h:
            return table_ids[slot]
        if key == 0:
            return -1
        slot = (slot + np.uint64(1)) & mask


@njit(cache=True)
def _row_keys(words, nw, lengths, filter_bits, table_keys, table_ids, out):
    """Ids of the eval keys among the row's windows of each length; returns their count."""
    found = 0
    for k in lengths:
        if nw < k:
            continue
        top = np.uint64(1)
        for _ in range(k - 1):
            top *= _BASE
        g = _window(words, 0, k)
        for p in range(nw - k + 1):
            if p:
                g = (g - words[p - 1] * top) * _BASE + words[p + k - 1]
            key = _probe(filter_bits, table_keys, table_ids, _key(g))
            if key >= 0:
                out[found] = key
                found += 1
    return found


@njit(cache=True)
def _coverage(item, row_keys, n_row, item_start, item_keys, item_len, item_span):
    """Tokens of `item` in its keys that the row holds (row_keys[:n_row] sorted), over its length."""
    covered, reach = 0, 0
    span = item_span[item]
    for p in range(item_start[item + 1] - item_start[item]):
        key = item_keys[item_start[item] + p]
        at = np.searchsorted(row_keys[:n_row], key)
        if at < n_row and row_keys[at] == key and p + span > reach:
            covered += p + span - max(p, reach)
            reach = p + span
    return covered / item_len[item]


@njit(cache=True, nogil=True)
def _match(buf, offsets, lengths, filter_bits, table_keys, table_ids, post_start, post_item,
           item_start, item_keys, item_len, item_span, threshold, best_item, best_cov):
    """Per text, the eval item with the highest coverage above threshold (-1 when none)."""
    stamp = np.full(item_len.shape[0], -1, np.int64)
    count = np.zeros(item_len.shape[0], np.int64)
    candidates = np.empty(item_len.shape[0], np.int64)
    longest = 1
    for d in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[d + 1] - offsets[d] + 1)
    words = np.empty(longest, np.uint64)
    row_keys = np.empty(longest * lengths.shape[0], np.int64)
    for d in range(offsets.shape[0] - 1):
        best_item[d], best_cov[d] = -1, 0.0
        nw = _word_hashes(buf, offsets[d], offsets[d + 1], words)
        n_row = _row_keys(words, nw, lengths, filter_bits, table_keys, table_ids, row_keys)
        if n_row == 0:
            continue
        row_keys[:n_row].sort()
        n_cand = 0
        for r in range(n_row):
            if r and row_keys[r] == row_keys[r - 1]:
                continue
            for q in range(post_start[row_keys[r]], post_start[row_keys[r] + 1]):
                item = post_item[q]
                if stamp[item] != d:
                    stamp[item], count[item] = d, 0
                    candidates[n_cand] = item
                    n_cand += 1
                count[item] += 1
        for c in range(n_cand):
            item = candidates[c]
            # shared positions that cannot cover enough tokens need no exact count
            if count[item] * item_span[item] <= threshold * item_len[item]:
                continue
            cov = _coverage(item, row_keys, n_row, item_start, item_keys, item_len, item_span)
            if cov > threshold and (cov > best_cov[d] or (cov == best_cov[d] and item < best_item[d])):
                best_item[d], best_cov[d] = item, cov


@njit(cache=True)
def _fill_table(keys, filter_bits, table_keys, table_ids):
    mask = np.uint64(table_keys.shape[0] - 1)
    for i in range(keys.shape[0]):
        bit = keys[i] >> np.uint64(64 - _FILTER_BITS)
        filter_bits[bit >> np.uint64(6)] |= np.uint64(1) << (bit & np.uint64(63))
        slot = keys[i] & mask
        while table_keys[slot] != 0:
            slot = (slot + np.uint64(1)) & mask
        table_keys[slot], table_ids[slot] = keys[i], i


# ---- the index ----

def _csr_starts(groups: np.ndarray, size: int) -> np.ndarray:
    """Start offsets of each group 0..size-1 in an array sorted by group (length size + 1)."""
    starts = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(np.bincount(groups, minlength=size), out=starts[1:])
    return starts


class EvalIndex:
    """n-gram index over evaluation items; picklable; built once per build.

    Holds, per distinct eval n-gram, the items that contain it (postings), and per
    item its n-grams in order, so a row's coverage of an item is exact up to hash
    collisions. Memory: about 40 bytes per eval n-gram plus 16 MiB (~190 MB for 100k
    items of 50 words). Read-only after build: threads may share it."""

    n: int
    sizes: dict[str, int]  # items per eval set, including those too short to index
    short: dict[str, int]  # items per set shorter than n tokens (matched whole, see the module doc)
    skipped: dict[str, int]  # of those, items shorter than min_short tokens (and n): never matched

    @classmethod
    def build(cls, items: Iterable[tuple[str, str, str]], n: int = 8, min_short: int = _MIN_SHORT) -> "EvalIndex":
        """Index (eval_set, item_id, text) triples by their token n-grams."""
        if n < 1 or min_short < 1:
            raise ValueError(f"EvalIndex.build needs n >= 1 and min_short >= 1, got n={n}, min_short={min_short}")
        sets, ids, texts = [], [], []
        for eval_set, item_id, text in items:
            sets.append(str(eval_set))
            ids.append(str(item_id))
            texts.append(text or "")
        self = cls()
        self.n, self.min_short, self.item_ids, self.item_sets = n, min_short, ids, sets
        lengths, hashes, owners = self._hash_items(texts)
        self.item_len = lengths
        self.item_span = np.minimum(lengths, n)
        self.sizes, self.short, self.skipped = {}, {}, {}
        for eval_set, length in zip(sets, lengths.tolist()):
            self.sizes[eval_set] = self.sizes.get(eval_set, 0) + 1
            self.short[eval_set] = self.short.get(eval_set, 0) + (length < n)
            self.skipped[eval_set] = self.skipped.get(eval_set, 0) + (length < min(n, min_short))
        keys, key_of = np.unique(hashes, return_inverse=True)
        self.item_start = _csr_starts(owners, len(texts))
        self.item_keys = key_of.astype(np.int32)  # hashes come item by item, position by position
        self.post_item = owners[np.argsort(key_of, kind="stable")].astype(np.int32)
        self.post_start = _csr_starts(key_of, len(keys))
        # window lengths a row is probed at: n, and each short item's length
        self.lengths = np.unique(np.append(lengths[(lengths >= min_short) & (lengths < n)], n)).astype(np.int64)
        size = 1 << max(1, (len(keys) * 5 // 3).bit_length())  # load factor at most 0.6
        self.table_keys = np.zeros(size, dtype=np.uint64)
        self.table_ids = np.zeros(size, dtype=np.int32)
        self.filter_bits = np.zeros(1 << (_FILTER_BITS - 6), dtype=np.uint64)
        _fill_table(keys, self.filter_bits, self.table_keys, self.table_ids)
        return self

    def _hash_items(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens per item, n-gram hashes, owning item per hash), in item order."""
        lengths = np.zeros(len(texts), dtype=np.int64)
        hashes, owners = [], []
        for start in range(0, len(texts), _BATCH):
            buf, offsets = _encode(texts[start : start + _BATCH])
            cap = len(buf) + 1
            h, item = np.empty(cap, np.uint64), np.empty(cap, np.int64)
            k = _item_keys(buf, offsets, self.n, self.min_short, h, item, lengths[start : start + _BATCH])
            hashes.append(h[:k])
            owners.append(item[:k] + start)
        if not hashes:
            return lengths, np.zeros(0, np.uint64), np.zeros(0, np.int64)
        return lengths, np.concatenate(hashes), np.concatenate(owners)

    def _best(self, texts: Sequence[str], threshold: float) -> tuple[np.ndarray, np.ndarray]:
        best_item = np.full(len(texts), -1, dtype=np.int64)
        best_cov = np.zeros(len(texts), dtype=np.float64)
        for start in range(0, len(texts), _BATCH):
            buf, offsets = _encode(texts[start : start + _BATCH])
            _match(buf, offsets, self.lengths, self.filter_bits, self.table_keys, self.table_ids, self.post_start,
                   self.post_item, self.item_start, self.item_keys, self.item_len, self.item_span, float(threshold),
                   best_item[start : start + _BATCH], best_cov[start : start + _BATCH])
        return best_item, best_cov

    def _hit(self, item: int, coverage: float) -> ContamHit:
        return ContamHit(self.item_sets[item], self.item_ids[item], coverage)

    def match(self, texts: Sequence[str], threshold: float = 0.5) -> list[ContamHit | None]:
        """Per training text, its most-covered eval item when coverage > threshold, else None
        (ties go to the item indexed first)."""
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"EvalIndex.match: threshold must be in [0, 1), got {threshold}")
        best_item, best_cov = self._best(texts, threshold)
        return [None if i < 0 else self._hit(i, c) for i, c in zip(best_item.tolist(), best_cov.tolist())]

    def any_hit(self, texts: Sequence[str]) -> list[ContamHit | None]:
        """Per text, an eval item sharing at least one n-gram (use with an index built at n=13):
        the one it covers most, reported with coverage 1.0."""
        best_item, _ = self._best(texts, -1.0)
        return [None if i < 0 else self._hit(i, 1.0) for i in best_item.tolist()]
