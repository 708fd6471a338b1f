"""Gopher's repetition limits on an answer (Rae et al. 2021, "Scaling Language Models:
Methods, Analysis & Insights from Training Gopher", appendix A.1.1, table A1). Pure logic.

The measures and bounds follow datatrove's `GopherRepetitionFilter`
(huggingface/datatrove, src/datatrove/pipeline/filters/gopher_repetition_filter.py):
- duplicate lines / paragraphs: the share of lines (paragraphs) that repeat an earlier
  one, and the share of the text's characters in those repeats;
- top n-gram (n = 2, 3, 4): characters of the most frequent n-gram (words joined by
  spaces) times its count, over the text's characters;
- duplicate n-grams (n = 5..10): characters (words joined without spaces) of n-grams
  that repeat an earlier one, a repeated n-gram skipping its n words so overlapping
  repeats are not counted twice, over the text's characters.
Paragraphs are split at two or more newlines, lines at one or more, both after
stripping the text (datatrove splits lines of the unstripped text, so a trailing
newline counts as an empty line there). Words are whitespace-separated, punctuation
attached (datatrove uses a language's word tokenizer, which splits punctuation off).

Two deviations for chat answers, which are short. Measured on 175 human-written seed
outputs and 140 real SmolLM2-135M-Instruct answers (rejected of each):
- a top n-gram that occurs once counts 0. datatrove counts it, and in a short answer
  any 4-gram is a large share of the characters: with it and no length floor, 74/175
  human and 80/140 model answers are rejected; without it, 9 and 26;
- the top-2/3/4-gram limits apply from `min_words` words (default 100). Below that a
  phrase said two or three times is a large share by arithmetic alone: from 50 words
  they rejected 4 human outputs (three anaphoric lists such as "What is your favorite
  ...?" x3, a recipe naming its shake twice) and caught one model answer nothing else
  did. The duplicate 5-10-gram, line and paragraph limits apply at any length: a
  repeated 5-word run is a repeat however short the answer. At the defaults 15/140
  model answers and 0/175 human ones are rejected, every one a loop.
The measures and bounds are datatrove's at commit a649de7 (2026-08).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

# name -> bound; an answer is repetitive when a measure is strictly above its bound
GOPHER_LIMITS: dict[str, float] = {
    "dup_para_frac": 0.30,
    "dup_para_char_frac": 0.20,
    "dup_line_frac": 0.30,
    "dup_line_char_frac": 0.20,
    "top_2gram": 0.20,
    "top_3gram": 0.18,
    "top_4gram": 0.16,
    "dup_5gram": 0.15,
    "dup_6gram": 0.14,
    "dup_7gram": 0.13,
    "dup_8gram": 0.12,
    "dup_9gram": 0.11,
    "dup_10gram": 0.10,
}
MIN_WORDS = 100
_PARAGRAPH = re.compile(r"\n{2,}")
_LINE = re.compile(r"\n+")


@dataclass(frozen=True)
class RepetitionHit:
    limit: str  # which limit, a GOPHER_LIMITS key
    value: float
    bound: float


def duplicates(parts: list[str]) -> tuple[int, int]:
    """(how many parts repeat an earlier one, their characters)."""
    seen: set[str] = set()
    count = chars = 0
    for part in parts:
        if part in seen:
            count += 1
            chars += len(part)
        else:
            seen.add(part)
    return count, chars


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters of the most frequent n-gram (words joined by spaces) times its count; 0 when
    no n-gram repeats (datatrove counts a lone n-gram too, which only matters in short text)."""
    counts = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    return len(gram) * count if count > 1 else 0


def duplicate_ngram_chars(words: list[str], n: int) -> int:
    """Characters in n-grams (words joined without spaces) that repeat an earlier n-gram;
    after a repeat the scan jumps past it, so a long loop is counted once per word."""
    seen: set[str] = set()
    chars = i = 0
    while i < len(words) - n + 1:
        gram = "".join(words[i : i + n])
        if gram in seen:
            chars += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def measures(text: str, min_words: int = MIN_WORDS):
    """(name, value) for each of Gopher's measures, in datatrove's order, lazily: the caller
    stops at the first one past its bound. The top n-gram measures only from min_words words."""
    text = text.strip()
    if not text:
        return
    paragraphs = _PARAGRAPH.split(text)
    count, chars = duplicates(paragraphs)
    yield "dup_para_frac", count / len(paragraphs)
    yield "dup_para_char_frac", chars / len(text)
    lines = _LINE.split(text)
    count, chars = duplicates(lines)
    yield "dup_line_frac", count / len(lines)
    yield "dup_line_char_frac", chars / len(text)
    words = text.split()
    if len(words) >= min_words:
        for n in (2, 3, 4):
            yield f"top_{n}gram", top_ngram_chars(words, n) / len(text)
    for n in range(5, 11):
        yield f"dup_{n}gram", duplicate_ngram_chars(words, n) / len(text)


def repetition(text: str, limits: dict[str, float] = GOPHER_LIMITS, min_words: int = MIN_WORDS) -> RepetitionHit | None:
    """The first of Gopher's limits the text is past (measure > bound), or None. A limit left
    out of `limits` is not checked."""
    for name, value in measures(text or "", min_words):
        bound = limits.get(name)
        if bound is not None and value > bound:
            return RepetitionHit(name, value, bound)
    return None
