"""Exact keys computed for a whole batch equal `exact_key` text by text, on texts built to
reach every branch: ASCII, Latin-1 and CJK (the compiled path), Unicode whitespace, case
folds that lengthen a character, combining marks, Hangul jamo that compose, compatibility
forms and characters beyond the BMP (the Python path), blanks and nulls."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from distillery.dedup import _buffers, prepare, DedupParams
from distillery.exact import exact_key, exact_keys, keys_from_arrow, keys_to_arrow, keys_to_bytes, normalize

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "self_instruct_seed_tasks.jsonl"
PIECES = [
    "Hello", "WORLD", "straße", "STRASSE", "İstanbul", "ΐ", "Σίσυφος", "ǅ", "naïve", "café", "日本語の文章", "한국어",
    "\u1100\u1161", "e\u0301", "\u0301", "ﬁ", "Ｆｕｌｌ", "①", "㎏", "x²", "\u00a0", "\u3000", "\u2003", "\u2028", "\x85",
    "\x1c", "\x00", "\x7f", "\t", "\n", "\r\n", "  ", "\u200b", "😀", "𝐀𝐁", "—", "“quoted”", "don't", "\u0bbe", "\u0b92\u0bd7", "Ω", "K", "…", "，", "˜", "㌀", "Ⅻ", "ｶ", "¨", "a ˜", "˜ ", "\u0345", "\u02d8\u02d9", "㈀", "ﷺ", "\u0130",
]


def random_texts(rng, n):
    return [" ".join(rng.choice(PIECES, size=rng.integers(0, 8))) if rng.random() < 0.5
            else "".join(rng.choice(PIECES, size=rng.integers(0, 8))) for _ in range(n)]


def keys_of(texts):
    column = pa.array(texts, pa.large_string())
    buf, offsets, valid = _buffers(column)
    return exact_keys(buf, offsets, valid)


def test_batch_keys_equal_the_text_by_text_keys():
    texts = random_texts(np.random.default_rng(0), 4000)
    keys, blank = keys_of(texts)
    assert keys_to_bytes(keys) == [exact_key(t) for t in texts]
    assert blank.tolist() == [not t.strip() for t in texts]
    assert any(blank) and not all(blank)


def test_seed_task_keys_and_case_folding():
    seeds = [json.loads(line) for line in SEEDS.read_text().splitlines()]
    texts = [s["instruction"] + "\n" + s["instances"][0]["output"] for s in seeds]
    texts += [t.upper() for t in texts]
    keys, _ = keys_of(texts)
    assert keys_to_bytes(keys) == [exact_key(t) for t in texts]
    half = len(texts) // 2  # upper-casing changes no key (case folding), except where it is not its own inverse
    same = [a == b for a, b in zip(keys_to_bytes(keys[:half]), keys_to_bytes(keys[half:]))]
    assert same == [normalize(t) == normalize(u) for t, u in zip(texts[:half], texts[half:])] and sum(same) > half * 0.9


def test_nulls_blanks_and_keys_through_arrow():
    texts = ["a b", None, "  \u3000 ", "A  B", ""]
    keys, sigs, invalid, replaced = prepare(texts, DedupParams())
    assert invalid == [None, "missing_field", "empty_field", None, "empty_field"]
    assert keys_to_bytes(keys[[0, 3]]) == [exact_key("a b")] * 2 and replaced == 0
    valid = np.array([why is None for why in invalid])
    column = keys_to_arrow(keys, valid)
    assert column.null_count == 3 and column[0].as_py() == exact_key("a b")
    back = keys_from_arrow(column)
    assert np.array_equal(back[valid], keys[valid]) and not back[~valid].any()


def test_texts_that_grow_past_the_buffer_still_get_their_keys():
    texts = ["㌀" * 3000, "abc", "ΐ" * 5000, "x", "", "Ⅻ" * 2000]  # each normalizes to 2-4x its bytes
    keys, blank = keys_of(texts)
    assert keys_to_bytes(keys) == [exact_key(t) for t in texts] and blank.tolist() == [False] * 4 + [True, False]


def test_every_bmp_character_between_neighbours():
    rng = np.random.default_rng(1)
    chars = [chr(c) for c in range(0x20, 0x10000) if not 0xD800 <= c <= 0xDFFF]
    around = ["a", " ", "", "\u1100", "\u0301", "İ", "\u00a0", "˜", "가", "ß"]
    picks = rng.integers(len(around), size=(len(chars), 2))
    texts = [around[i] + c + around[j] + c for c, (i, j) in zip(chars, picks.tolist())]
    keys, _ = keys_of(texts)
    assert keys_to_bytes(keys) == [exact_key(t) for t in texts]
