"""Exact-text keys for many texts at once. Pure logic (numpy, numba, pyarrow arrays, hashlib).

A text's exact key is blake2b-128 of its normalized form: NFKC, case-folded, runs of
whitespace collapsed to one space, trimmed (`normalize`). Row by row in Python that is
~30 us a document; here the texts of a batch arrive as one UTF-8 buffer with offsets
(an Arrow string column's own buffers), and a compiled pass normalizes in place of Python
every text whose characters NFKC maps one by one (ASCII, Latin letters, punctuation,
CJK, fullwidth forms, ...: `_learn` says which), case-folding each from a table and
collapsing whitespace. Only texts with a combining mark, a composing jamo or a
character beyond the BMP take the Python path. The keys are the same bytes either way (`tests/test_exact.py`), so indexes
built before stay valid.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata

import numpy as np
import pyarrow as pa
from numba import njit

KEY_BYTES = 16


def normalize(text: str) -> str:
    """Case-fold, NFKC and collapse whitespace: the text compared for exact dedup."""
    # str.split() with no argument splits on runs of Unicode whitespace, like
    # \s+, at a tenth of the regex's cost.
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def exact_key(text: str) -> bytes:
    return hashlib.blake2b(normalize(text).encode("utf-8", "replace"), digest_size=KEY_BYTES).digest()


_SIMPLE, _SPACE, _OTHER, _UNSEEN = 0, 1, 2, 3  # what a BMP character is to the compiled path
_SLOT = 16  # bytes of case-folded UTF-8 kept per character

# Per BMP code point, learned the first time a text holds it (a corpus uses a few hundred).
_KIND = np.full(0x10000, _UNSEEN, dtype=np.uint8)
_FOLD = np.zeros((0x10000, _SLOT), dtype=np.uint8)
_FOLD_LEN = np.zeros(0x10000, dtype=np.uint8)


@functools.cache
def _second_halves() -> frozenset[int]:
    """Characters that compose with the one before them: second halves of canonical pairs
    (their composites lie in planes 0 and 1), Hangul vowel and trailing jamo."""
    second = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))
    for cp in range(0x20000):
        parts = unicodedata.decomposition(chr(cp)).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            second.add(int(parts[1], 16))
    return frozenset(second)


def _starts_stable(text: str, second: frozenset[int]) -> bool:
    """Does text begin with a starter (combining class 0) that composes with nothing before it?"""
    return not unicodedata.combining(text[0]) and ord(text[0]) not in second


def _learn(cps: np.ndarray) -> None:
    """Fill the table for these code points.

    SIMPLE: the character and its NFKC form both begin with a starter that composes with
    nothing before it (`_starts_stable`), and the form's only whitespace is U+0020. A text of
    such characters and whitespace is then NFKC'd character by character: each form is already
    normal, and where two meet the second starts with a starter that neither composes backwards
    nor reorders; case folding is per character. So the slot holds casefold(NFKC(ch)), whose
    spaces the kernel collapses with the text's (U+02DC becomes space + combining tilde).
    SPACE: whitespace that NFKC keeps whitespace (U+00A0, U+3000). OTHER (combining marks,
    composing jamo, surrogates, a fold over 16 bytes): the text goes to Python."""
    second = _second_halves()
    for cp in cps.tolist():
        kind = _OTHER
        if not 0xD800 <= cp <= 0xDFFF:
            ch = chr(cp)
            nfkc = unicodedata.normalize("NFKC", ch)
            if ch.isspace() and nfkc and all(c.isspace() for c in nfkc) and not unicodedata.combining(ch):
                kind = _SPACE
            elif (nfkc and _starts_stable(ch, second) and _starts_stable(nfkc, second)
                  and all(c == " " or not c.isspace() for c in nfkc)):
                folded = nfkc.casefold().encode("utf-8")
                if len(folded) <= _SLOT:
                    kind = _SIMPLE
                    _FOLD[cp, : len(folded)] = np.frombuffer(folded, dtype=np.uint8)
                    _FOLD_LEN[cp] = len(folded)
        _KIND[cp] = kind


# ASCII: 255 for str.isspace() (these ten bytes), else the byte lower-cased
_ASCII = np.array([255 if chr(c).isspace() else ord(chr(c).lower()) for c in range(128)], dtype=np.uint8)


@njit(cache=True, nogil=True)
def _fast_normalize(buf, offsets, kind, fold, fold_len, out, out_offsets, status, unseen):
    """Per text: status 0 normalized here, its bytes in out[out_offsets[d]:out_offsets[d+1]];
    1 for Python; 2 holds a character the table has not learned (marked in unseen)."""
    pos = 0
    limit = out.shape[0]
    for d in range(offsets.shape[0] - 1):
        start, stop = offsets[d], offsets[d + 1]
        out_offsets[d] = pos
        begin = pos
        pending = False
        state = 0
        if pos + (stop - start) + 1 > limit:  # out of room (texts before grew): Python's turn
            status[d] = 1
            continue
        i = start
        while i < stop:
            c = buf[i]
            if c < 128:
                i += 1
                m = _ASCII[c]
                if m == 255:
                    pending = True
                elif pending:
                    if pos > begin:
                        out[pos] = 32
                        pos += 1
                    pending = False
                    out[pos] = m
                    pos += 1
                else:
                    out[pos] = m
                    pos += 1
                continue
            if c >= 0xF0:  # beyond the BMP
                state = 1
                break
            if c >= 0xE0:
                cp = ((c & 0x0F) << 12) | ((buf[i + 1] & 0x3F) << 6) | (buf[i + 2] & 0x3F)
                i += 3
            else:
                cp = ((c & 0x1F) << 6) | (buf[i + 1] & 0x3F)
                i += 2
            k = kind[cp]
            if k == 1:
                pending = True
                continue
            if k == 3:
                unseen[cp] = True
                state = 2
                continue
            if k != 0 or pos + 1 + fold_len[cp] + (stop - i) > limit:  # room for the rest of the text too
                state = 1
                break
            for j in range(fold_len[cp]):
                b = fold[cp, j]
                if b == 32:  # a compatibility form's space (U+00A8 is space + combining diaeresis)
                    pending = True
                    continue
                if pending and pos > begin:
                    out[pos] = 32
                    pos += 1
                pending = False
                out[pos] = b
                pos += 1
        status[d] = state
        if state != 0:
            pos = begin
    out_offsets[offsets.shape[0] - 1] = pos


def exact_keys(buf: np.ndarray, offsets: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact keys of the texts buf[offsets[d]:offsets[d+1]] (UTF-8), as uint64 (n, 2) (the key's
    16 bytes), and which texts are blank (nothing but whitespace). Rows with valid False get a
    zero key and are not blank."""
    n = offsets.shape[0] - 1
    offsets = offsets.astype(np.int64, copy=False)
    # normalizing rarely lengthens a text (case folds like U+0390, compatibility forms like U+3300);
    # texts that would not fit go to Python
    out = np.empty(int(offsets[-1] - offsets[0]) + 4096 if n else 1, dtype=np.uint8)
    out_offsets = np.empty(n + 1, dtype=np.int64)
    status = np.empty(n, dtype=np.uint8)
    unseen = np.zeros(0x10000, dtype=np.bool_)
    _fast_normalize(buf, offsets, _KIND, _FOLD, _FOLD_LEN, out, out_offsets, status, unseen)
    if unseen.any():  # learn the new characters, then normalize again
        _learn(np.flatnonzero(unseen))
        _fast_normalize(buf, offsets, _KIND, _FOLD, _FOLD_LEN, out, out_offsets, status, unseen)
    view, data, blake = memoryview(out), memoryview(buf), hashlib.blake2b
    bounds = out_offsets.tolist()
    zero = bytes(KEY_BYTES)
    ok = (status == 0) if valid is None else (status == 0) & valid
    digests = [blake(view[bounds[d] : bounds[d + 1]], digest_size=KEY_BYTES).digest() if fast else zero
               for d, fast in enumerate(ok.tolist())]
    blank = ok & (out_offsets[1:] == out_offsets[:-1])
    rest = ~ok if valid is None else ~ok & valid
    starts = offsets.tolist()
    for d in np.flatnonzero(rest).tolist():  # texts the table cannot normalize: Python's own
        text = bytes(data[starts[d] : starts[d + 1]]).decode("utf-8", "replace")
        blank[d] = not text.strip()
        digests[d] = exact_key(text)
    keys = b"".join(digests)
    return np.frombuffer(keys, dtype=np.uint64).reshape(n, 2), blank


def keys_from_bytes(keys) -> np.ndarray:
    """uint64 (n, 2) from 16-byte keys (bytes, or None for a row without one: zeros)."""
    out = np.zeros((len(keys), 2), dtype=np.uint64)
    for i, key in enumerate(keys):
        if key is not None:
            out[i] = np.frombuffer(bytes(key), dtype=np.uint64)
    return out


def keys_to_bytes(keys: np.ndarray) -> list[bytes]:
    flat = np.ascontiguousarray(keys, dtype=np.uint64).tobytes()
    return [flat[i : i + KEY_BYTES] for i in range(0, len(flat), KEY_BYTES)]


def keys_to_arrow(keys: np.ndarray, valid: np.ndarray | None = None) -> pa.FixedSizeBinaryArray:
    """A binary(16) column of uint64 (n, 2) keys; null where valid is False."""
    data = pa.py_buffer(np.ascontiguousarray(keys, dtype=np.uint64).tobytes())
    mask = None if valid is None or valid.all() else pa.array(valid, pa.bool_()).buffers()[1]
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(KEY_BYTES), len(keys), [mask, data])


def keys_from_arrow(column) -> np.ndarray:
    """uint64 (n, 2) from a binary(16) column (nulls: zeros)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_fixed_size_binary(column.type) or column.type.byte_width != KEY_BYTES:
        return keys_from_bytes(column.to_pylist())
    data = column.buffers()[1]
    n = len(column)
    if data is None or not n:
        return np.zeros((n, 2), dtype=np.uint64)
    keys = np.frombuffer(data, dtype=np.uint64)[column.offset * 2 : (column.offset + n) * 2].reshape(n, 2).copy()
    if column.null_count:
        keys[~column.is_valid().to_numpy(zero_copy_only=False)] = 0
    return keys
