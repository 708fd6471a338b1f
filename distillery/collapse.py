"""The collapse monitor: how repetitive and self-similar a build's texts are, run after run. Pure logic.

Model collapse shows as synthetic data growing more alike from one run to the next. Each build
measures a fixed-seed sample of its kept texts, appends the numbers to a JSONL history, and
compares them with the previous run and with the first one:

- compression_ratio: UTF-8 bytes / gzip bytes (Shaib et al. 2024, "Standardizing the Measurement
  of Text Diversity"): repeated phrasing compresses well, so higher = more repetitive;
- distinct_1..distinct_4 and ngram_diversity, their sum (Shaib et al.'s NGD score);
- self_bleu: mean BLEU-4 of each text against all the others (Zhu et al. 2018, Texygen);
- vendi_ngram: the Vendi score (Friedman & Dieng 2023), the effective number of distinct texts;
- length_mean / length_std in words.

Words are lowercase `\\w+` runs, as in distillery/diversity.py, so the two reports agree. A run of
CJK characters is one `\\w+` "word"; the numbers stay comparable from run to run for the same
language, which is what the monitor needs, but not across languages.
"""

from __future__ import annotations

import bisect
import gzip
import json
import math
import random
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

METRICS = ("rows", "sample", "compression_ratio", "distinct_1", "distinct_2", "distinct_3", "distinct_4",
           "ngram_diversity", "self_bleu", "vendi_ngram", "length_mean", "length_std")
MAX_N = 4  # BLEU-4 and distinct-1..4
VENDI_N = 2  # the Vendi kernel's n-grams: 1..2 (see vendi_score)
VENDI_MAX = 1000  # the Vendi sample cap: its eigendecomposition is O(n^3)
BLOCK = 1 << 22  # cells of one dense block of the Vendi matrix product (32 MiB)
EPSILON = 0.1  # Chen & Cherry's smoothing method 1, as Texygen uses through NLTK
WATCHED = {"distinct_2": -1, "vendi_ngram": -1, "compression_ratio": 1}  # the direction that means collapse
TOLERANCE = 1e-9  # metrics are rounded to 4 decimals: an exact max_drop must not warn through float noise


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _counts(words: list[str], max_n: int) -> list[Counter]:
    """One Counter of n-gram tuples per order 1..max_n."""
    return [Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1)) for n in range(1, max_n + 1)]


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _top_two(counts: list[list[Counter]]) -> list[dict]:
    """Per order, gram -> (highest count, the text holding it, second highest count).
    The most any *other* text holds is then the second count for the text holding the
    highest and the highest for every other text, so BLEU's clipping never loops over references."""
    tops: list[dict] = [{} for _ in range(MAX_N)]
    for i, per_order in enumerate(counts):
        for top, grams in zip(tops, per_order):
            for gram, k in grams.items():
                best, owner, second = top.get(gram, (0, -1, 0))
                if k > best:
                    top[gram] = (k, i, best)
                elif k > second:
                    top[gram] = (best, owner, k)
    return tops


def _closest_length(length: int, others: list[int], tally: Counter) -> int:
    """The reference length closest to the hypothesis's among the other texts, the shorter on a tie (as NLTK)."""
    if tally[length] > 1:
        return length
    at = bisect.bisect_left(others, length)
    below = others[at - 1] if at > 0 else None
    above = others[at + 1] if at + 1 < len(others) else None  # others[at] is the hypothesis itself
    if below is None or (above is not None and above - length < length - below):
        return above
    return below


def _bleu(i: int, per_order: list[Counter], tops: list[dict], reference_length: int, length: int) -> float:
    log_sum, orders = 0.0, 0
    for grams, top in zip(per_order, tops):
        total = sum(grams.values())
        if not total:
            break  # a text shorter than n words: its BLEU uses the orders it has (sacreBLEU's effective order)
        matched = 0
        for gram, k in grams.items():
            best, owner, second = top[gram]
            matched += min(k, second if owner == i else best)
        log_sum += math.log((matched or EPSILON) / total)
        orders += 1
    brevity = 1.0 if length > reference_length else math.exp(1 - reference_length / length)
    return brevity * math.exp(log_sum / orders)


def _self_bleu(counts: list[list[Counter]], lengths: list[int]) -> float | None:
    """Mean BLEU-4 of each text against all the others as references, uniform weights, references'
    counts clipped by the most any other text holds; a zero-match order counts as EPSILON matches
    (Chen & Cherry 2014, method 1); the brevity penalty uses the closest reference length.
    O(total n-grams), so the sample needs no separate cap. Texts without words are left out."""
    kept = [(c, n) for c, n in zip(counts, lengths) if n]
    if len(kept) < 2:
        return None
    counts, lengths = [c for c, _ in kept], [n for _, n in kept]
    tops, others, tally = _top_two(counts), sorted(lengths), Counter(lengths)
    scores = [_bleu(i, c, tops, _closest_length(n, others, tally), n) for i, (c, n) in enumerate(zip(counts, lengths))]
    return sum(scores) / len(scores)


def _shared_products(vectors: list[Counter]) -> np.ndarray:
    """Dot products of the count vectors over the grams at least two texts share: a gram in
    one text only adds to that text's own norm. Dense in column blocks of BLOCK cells, so
    memory stays bounded however large the vocabulary."""
    spread = Counter(g for v in vectors for g in v)
    column = {g: j for j, g in enumerate(g for g, df in spread.items() if df > 1)}
    cells = [(i, column[g], k) for i, v in enumerate(vectors) for g, k in v.items() if g in column]
    rows, cols, values = (np.array(x, dtype=float) for x in zip(*cells)) if cells else (np.zeros(0),) * 3
    rows, cols = rows.astype(int), cols.astype(int)
    n, width = len(vectors), max(1, BLOCK // len(vectors))
    products = np.zeros((n, n))
    for start in range(0, len(column), width):
        inside = (cols >= start) & (cols < start + width)
        dense = np.zeros((n, width))
        dense[rows[inside], cols[inside] - start] = values[inside]
        products += dense @ dense.T
    return products


def _vendi(counts: list[list[Counter]]) -> float | None:
    """exp(entropy of the eigenvalues of K/n), K the cosine similarities of the texts' 1- and
    2-gram count vectors (K_ii = 1, so the eigenvalues sum to 1)."""
    vectors = [sum((c[n] for n in range(VENDI_N)), Counter()) for c in counts]
    vectors = [v for v in vectors if v][:VENDI_MAX]
    n = len(vectors)
    if n < 2:
        return None
    norms = np.sqrt([sum(k * k for k in v.values()) for v in vectors])
    kernel = _shared_products(vectors) / np.outer(norms, norms)
    np.fill_diagonal(kernel, 1.0)
    eigenvalues = np.linalg.eigvalsh(kernel / n)
    eigenvalues = eigenvalues[eigenvalues > 1e-12]  # zero and round-off eigenvalues add nothing (0 log 0 = 0)
    return float(np.exp(-np.sum(eigenvalues * np.log(eigenvalues))))


def self_bleu(texts: Sequence[str]) -> float | None:
    """Self-BLEU-4 of all the texts, unrounded (see _self_bleu)."""
    words = [_words(t) for t in texts]
    return _self_bleu([_counts(w, MAX_N) for w in words], [len(w) for w in words])


def vendi_score(texts: Sequence[str]) -> float | None:
    """The Vendi score with the n-gram cosine kernel, unrounded: 1 when all texts are identical,
    up to n when no two share a gram. Unigrams alone would call two orderings of the same words
    identical; grams longer than two are mostly unique to one text in short answers and would
    make everything look orthogonal. Only the first VENDI_MAX texts with words are used (a random
    subsample when they come from collapse_metrics' sample, which is in random order)."""
    return _vendi([_counts(_words(t), VENDI_N) for t in texts])


def compression_ratio(texts: Sequence[str]) -> float | None:
    """UTF-8 bytes / gzip bytes of the texts joined by newlines; mtime=0 makes the gzip bytes, and so the ratio, reproducible."""
    data = "\n".join(texts).encode("utf-8")
    return len(data) / len(gzip.compress(data, compresslevel=9, mtime=0)) if data else None


def collapse_metrics(texts: Sequence[str], sample: int = 500, seed: int = 0) -> dict:
    """The monitor's numbers for one build, on random.Random(seed).sample of its non-empty texts,
    so two runs over the same texts agree. `rows` counts all non-empty texts; every other number
    describes the sample. None where undefined (no texts; self_bleu and vendi_ngram need two texts
    with words). Rounded to 4 decimals. Distinct-n and compression depend on the sample size, so
    runs compare best at the same size."""
    texts = [t for t in texts if t and t.strip()]
    picked = random.Random(seed).sample(texts, min(sample, len(texts)))
    words = [_words(t) for t in picked]
    counts = [_counts(w, MAX_N) for w in words]
    lengths = [len(w) for w in words]
    distinct = []
    for n in range(MAX_N):
        total = sum(sum(c[n].values()) for c in counts)
        distinct.append(len({g for c in counts for g in c[n]}) / total if total else None)
    metrics = {
        "rows": len(texts), "sample": len(picked), "compression_ratio": _round(compression_ratio(picked)),
        **{f"distinct_{n + 1}": _round(d) for n, d in enumerate(distinct)},
        "ngram_diversity": _round(sum(distinct)) if None not in distinct else None,
        "self_bleu": _round(_self_bleu(counts, lengths)), "vendi_ngram": _round(_vendi(counts)),
        "length_mean": _round(np.mean(lengths)) if lengths else None,
        "length_std": _round(np.std(lengths)) if lengths else None,
    }
    return {k: metrics[k] for k in METRICS}


def history_entry(metrics: dict, run_id: str, recipe: str, created_at: str) -> dict:
    return {"run_id": run_id, "recipe": recipe, "created_at": created_at, "metrics": dict(metrics)}


def parse_history(data: bytes | None) -> tuple[list[dict], str | None]:
    """(entries, problem). One bad line makes the whole file untrusted, ([], why): the
    comparison is against the first run, and a history with lines lost cannot say which
    run was first. The caller reports the problem and starts a new history."""
    if not data:
        return [], None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return [], f"the collapse history is not UTF-8 text (byte {e.start}); it is replaced by a new one"
    entries = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            return [], f"line {number} of the collapse history is not JSON ({e.msg}); it is replaced by a new one"
        if not isinstance(entry, dict) or not isinstance(entry.get("metrics"), dict):
            return [], f"line {number} of the collapse history is not an entry with 'metrics'; it is replaced by a new one"
        entries.append(entry)
    return entries, None


def dump_history(entries: list[dict]) -> bytes:
    return b"".join(json.dumps(e, sort_keys=True).encode("utf-8") + b"\n" for e in entries)


def _number(x) -> float | None:
    """A history written by hand or by another version may hold anything: only finite numbers compare."""
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return x if ok else None


def _against(entry: dict, current: dict) -> tuple[dict, dict]:
    """Per metric {before, now, change}, and the unrounded changes the warnings decide on. The
    change is rounded to 6 decimals, enough that its one-decimal percent is not rounded twice."""
    rows, changes = {}, {}
    for m in METRICS:
        before, now = _number(entry["metrics"].get(m)), _number(current.get(m))
        change = (now - before) / before if before and now is not None else None
        shown = None if change is None else round(change, 6)
        rows[m], changes[m] = {"before": before, "now": now, "change": shown}, change
    return rows, changes


def _warnings(changes: dict, rows: dict, max_drop: float, which: str, run_id) -> list[str]:
    found = []
    for m, direction in WATCHED.items():
        change = changes[m]
        if change is not None and direction * change > max_drop + TOLERANCE:
            verb = "fell" if direction < 0 else "rose"
            since = f"the {which} run {run_id}" if run_id else f"the {which} run"
            found.append(f"{m} {verb} from {rows[m]['before']} to {rows[m]['now']} ({rows[m]['change']:+.1%}) since {since}, "
                         f"more than the {max_drop:.0%} allowed: the texts are growing more alike.")
    return found


def compare(history: list[dict], current: dict, max_drop: float = 0.10) -> dict:
    """The change since the previous run (history[-1]) and the first (history[0]). Warns when
    distinct_2 or vendi_ngram fell, or compression_ratio rose, by more than max_drop (relative).
    With one run in the history it is both previous and first, and is warned about once.
    A note when the sample sizes differ, since distinct-n and compression move with size."""
    result = {"previous": {}, "first": {}, "previous_run": None, "first_run": None, "warnings": [], "notes": []}
    if not history:
        return result
    for which, entry in (("previous", history[-1]), ("first", history[0])):
        rows, changes = _against(entry, current)
        result[which], result[f"{which}_run"] = rows, entry.get("run_id")
        if which == "previous" or len(history) > 1:
            result["warnings"] += _warnings(changes, rows, max_drop, which, entry.get("run_id"))
    before, now = result["previous"]["sample"]["before"], current.get("sample")
    if before is not None and before != now:
        result["notes"].append(f"the sample sizes differ ({before} before, {now} now): distinct-n and the "
                               "compression ratio move with the sample size, so part of the change is that.")
    return result


def _cell(x) -> str:
    return "–" if x is None else str(x)


def _percent(x) -> str:
    return "–" if x is None else f"{x:+.1%}"


def format_collapse(metrics: dict, comparison: dict | None) -> list[str]:
    """Markdown lines for the build report: the table, then the warnings and notes."""
    comparison = comparison or {}
    previous, first = comparison.get("previous") or {}, comparison.get("first") or {}
    lines = [f"| metric | this run | previous ({_cell(comparison.get('previous_run'))}) | change "
             f"| first ({_cell(comparison.get('first_run'))}) | change |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for m in METRICS:
        p, f = previous.get(m, {}), first.get(m, {})
        lines.append(f"| {m} | {_cell(metrics.get(m))} | {_cell(p.get('before'))} | {_percent(p.get('change'))} "
                     f"| {_cell(f.get('before'))} | {_percent(f.get('change'))} |")
    lines.append("")
    if not previous:
        lines.append("No earlier run in the collapse history to compare with.")
    lines += [f"- **warning:** {w}" for w in comparison.get("warnings", [])]
    lines += [f"- note: {n}" for n in comparison.get("notes", [])]
    if previous and not comparison.get("warnings"):
        lines.append("No collapse warnings.")
    return lines
