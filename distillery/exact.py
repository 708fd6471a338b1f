"""Exact-text keys for many texts at once. Pure logic (numpy, numba, pyarrow arrays, hashlib).

A text's exact key is blake2b-128 of its normalized form: NFKC, case-folded, runs of
whitespace collapsed to one space, trimmed (`normalize`). Row by row in Python that is
~30 us a document; here the texts of a batch arrive as one UTF-8 buffer with offsets
(an Arrow string column's own buffers), and a compiled pass normalizes every ASCII-only
text in place of Python: for ASCII, NFKC is the identity, case folding is lower-casing,
and Python's whitespace is these ten bytes. Only texts with a non-ASCII byte take the
Python path. The keys are the same bytes either way (`tests/test_exact.py`), so indexes
built before stay valid.
"""

from __future__ import annotations

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


@njit(cache=True, nogil=True)
def _ascii_normalize(buf, offsets, out, out_offsets, is_ascii):
    """Per text: is it ASCII; if so its normalized bytes into out[out_offsets[d]:out_offsets[d+1]]."""
    pos = 0
    for d in range(offsets.shape[0] - 1):
        start, stop = offsets[d], offsets[d + 1]
        out_offsets[d] = pos
        ascii_only = True
        for i in range(start, stop):
            if buf[i] >= 128:
                ascii_only = False
                break
        is_ascii[d] = ascii_only
        if not ascii_only:
            continue
        pending = False
        for i in range(start, stop):
            c = buf[i]
            if c == 32 or (c >= 9 and c <= 13) or (c >= 28 and c <= 31):  # str.isspace() in ASCII
                pending = True
                continue
            if pending and pos > out_offsets[d]:
                out[pos] = 32
                pos += 1
            pending = False
            if c >= 65 and c <= 90:
                c += 32
            out[pos] = c
            pos += 1
    out_offsets[offsets.shape[0] - 1] = pos


def exact_keys(buf: np.ndarray, offsets: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact keys of the texts buf[offsets[d]:offsets[d+1]] (UTF-8), as uint64 (n, 2) (the key's
    16 bytes), and which texts are blank (nothing but whitespace). Rows with valid False get a
    zero key and are not blank."""
    n = offsets.shape[0] - 1
    out = np.empty(max(int(offsets[-1] - offsets[0]), 1) if n else 1, dtype=np.uint8)
    out_offsets = np.empty(n + 1, dtype=np.int64)
    is_ascii = np.empty(n, dtype=np.bool_)
    _ascii_normalize(buf, offsets.astype(np.int64, copy=False), out, out_offsets, is_ascii)
    keys = bytearray(n * KEY_BYTES)
    blank = np.zeros(n, dtype=np.bool_)
    view, data = memoryview(out), memoryview(buf)
    blake = hashlib.blake2b
    for d in range(n):
        if valid is not None and not valid[d]:
            continue
        if is_ascii[d]:
            lo, hi = out_offsets[d], out_offsets[d + 1]
            blank[d] = lo == hi
            digest = blake(view[lo:hi], digest_size=KEY_BYTES).digest()
        else:
            text = bytes(data[offsets[d] : offsets[d + 1]]).decode("utf-8", "replace")
            blank[d] = not text.strip()
            digest = exact_key(text)
        keys[d * KEY_BYTES : (d + 1) * KEY_BYTES] = digest
    return np.frombuffer(bytes(keys), dtype=np.uint64).reshape(n, 2), blank


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
