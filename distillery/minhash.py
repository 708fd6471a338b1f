"""MinHash signatures in bulk: shingling, hashing and all permutations in one
compiled pass per batch of documents. Pure logic (numpy + numba).

The permutations are datasketch's own (`MinHash(seed=..)._init_permutations`,
`(a * h + b) mod (2**61 - 1) & (2**32 - 1)` with uint64 wrap-around), so a
signature here equals `datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash)`
updated with `shingles(...)`; tests check it.

Text is normalized as bytes: UTF-8, ASCII letters lower-cased. A word is a run
of ASCII letters, digits or '_' or of non-ASCII bytes (so accented and CJK text
stays inside words). Word shingles are `ngram` consecutive words; char
shingles are `ngram` consecutive bytes of the words joined by single spaces.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from numba import njit

MERSENNE = np.uint64((1 << 61) - 1)
MAX_HASH = np.uint64((1 << 32) - 1)
FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
MIX_SEED = np.uint64(0x9E3779B97F4A7C15)
_M64 = (1 << 64) - 1
_WORD = re.compile(rb"[0-9a-z_\x80-\xff]+")


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's permutation parameters (a, b) for this seed, as two uint64 arrays."""
    gen = np.random.RandomState(seed)
    ab = np.array(
        [(gen.randint(1, MERSENNE, dtype=np.uint64), gen.randint(0, MERSENNE, dtype=np.uint64)) for _ in range(num_perm)],
        dtype=np.uint64,
    ).T
    return np.ascontiguousarray(ab[0]), np.ascontiguousarray(ab[1])


# ---- the reference, in plain Python: what the compiled kernel must equal ----

def _fnv1a(data: bytes) -> int:
    h = int(FNV_OFFSET)
    for c in data:
        h = ((h ^ c) * int(FNV_PRIME)) & _M64
    return h


def _fold(h: int) -> int:
    return (h >> 32) ^ (h & 0xFFFFFFFF)


def words(text: str) -> list[bytes]:
    return _WORD.findall(text.encode("utf-8", "replace").lower())


def shingles(text: str, ngram: int, kind: str = "word") -> list[bytes]:
    """The shingles of a text, as bytes (word shingles joined by one space)."""
    ws = words(text)
    if kind == "char":
        joined = b" ".join(ws)
        if len(joined) <= ngram:
            return [joined]
        return [joined[i : i + ngram] for i in range(len(joined) - ngram + 1)]
    if len(ws) <= ngram:
        return [b" ".join(ws)]
    return [b" ".join(ws[i : i + ngram]) for i in range(len(ws) - ngram + 1)]


def word_shingle_hash(shingle: bytes) -> int:
    """32-bit hash of a word shingle: FNV-1a per word, combined in order."""
    h = int(MIX_SEED)
    for w in shingle.split(b" ") if shingle else []:
        h = ((h ^ _fnv1a(w)) * int(FNV_PRIME)) & _M64
    return _fold(h)


def char_shingle_hash(shingle: bytes) -> int:
    return _fold(_fnv1a(shingle))


def shingle_hash(kind: str):
    return char_shingle_hash if kind == "char" else word_shingle_hash


# ---- the compiled kernel ----

@njit(cache=True, inline="always")
def _is_word_byte(c):
    return (c >= 48 and c <= 57) or (c >= 97 and c <= 122) or c == 95 or c >= 128 or (c >= 65 and c <= 90)


@njit(cache=True, inline="always")
def _permute_min(hv, a, b, sig):
    for j in range(a.shape[0]):
        x = a[j] * hv + b[j]
        x = (x & np.uint64(0x1FFFFFFFFFFFFFFF)) + (x >> np.uint64(61))
        if x >= np.uint64(0x1FFFFFFFFFFFFFFF):
            x -= np.uint64(0x1FFFFFFFFFFFFFFF)
        x &= np.uint64(0xFFFFFFFF)
        sig[j] = min(sig[j], x)


@njit(cache=True, nogil=True)
def _doc_words(buf, start, stop, word_hashes, norm):
    """FNV-1a of each word into word_hashes; the normalized text (words joined by
    single spaces) into norm. Returns (word count, normalized length)."""
    nw = 0
    nl = 0
    h = np.uint64(0xCBF29CE484222325)
    in_word = False
    for i in range(start, stop):
        c = buf[i]
        if _is_word_byte(c):
            if c >= 65 and c <= 90:
                c += 32
            if not in_word and nw > 0:
                norm[nl] = 32
                nl += 1
            norm[nl] = c
            nl += 1
            h = (h ^ np.uint64(c)) * np.uint64(0x100000001B3)
            in_word = True
        elif in_word:
            word_hashes[nw] = h
            nw += 1
            h = np.uint64(0xCBF29CE484222325)
            in_word = False
    if in_word:
        word_hashes[nw] = h
        nw += 1
    return nw, nl


@njit(cache=True, nogil=True)
def _signatures(buf, offsets, ngram, char_mode, a, b, out):
    n_docs = offsets.shape[0] - 1
    longest = 1
    for d in range(n_docs):
        longest = max(longest, offsets[d + 1] - offsets[d] + 1)
    word_hashes = np.empty(longest, np.uint64)
    norm = np.empty(longest, np.uint8)
    for d in range(n_docs):
        sig = out[d]
        sig[:] = np.uint64(0xFFFFFFFF)
        nw, nl = _doc_words(buf, offsets[d], offsets[d + 1], word_hashes, norm)
        if char_mode:
            count = max(1, nl - ngram + 1)
            for s in range(count):
                h = np.uint64(0xCBF29CE484222325)
                for k in range(s, min(s + ngram, nl)):
                    h = (h ^ np.uint64(norm[k])) * np.uint64(0x100000001B3)
                _permute_min((h >> np.uint64(32)) ^ (h & np.uint64(0xFFFFFFFF)), a, b, sig)
        else:
            count = max(1, nw - ngram + 1)
            for s in range(count):
                h = np.uint64(0x9E3779B97F4A7C15)
                for k in range(s, min(s + ngram, nw)):
                    h = (h ^ word_hashes[k]) * np.uint64(0x100000001B3)
                _permute_min((h >> np.uint64(32)) ^ (h & np.uint64(0xFFFFFFFF)), a, b, sig)


def encode_batch(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """UTF-8 bytes of all texts in one buffer, their offsets, and how many had
    characters that could not be encoded (lone surrogates) and were replaced."""
    encoded, replaced = [], 0
    for t in texts:
        try:
            encoded.append(t.encode("utf-8"))
        except UnicodeEncodeError:
            encoded.append(t.encode("utf-8", "replace"))
            replaced += 1
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets, replaced


def signature_batch(
    buf: np.ndarray, offsets: np.ndarray, ngram: int, kind: str, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Signatures (uint64, one row per document) for one encoded batch."""
    out = np.empty((offsets.shape[0] - 1, a.shape[0]), dtype=np.uint64)
    _signatures(buf, offsets, ngram, kind == "char", a, b, out)
    return out


def signatures(
    texts: Sequence[str], ngram: int, a: np.ndarray, b: np.ndarray, kind: str = "word", batch: int = 64
) -> np.ndarray:
    """MinHash signatures for many texts. Documents go through the kernel in
    small batches: each batch's bytes and scratch stay in cache."""
    out = np.empty((len(texts), a.shape[0]), dtype=np.uint64)
    for start in range(0, len(texts), batch):
        buf, offsets, _ = encode_batch(texts[start : start + batch])
        out[start : start + batch] = signature_batch(buf, offsets, ngram, kind, a, b)
    return out
