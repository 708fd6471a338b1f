"""The collapse monitor on the 175 human-written Self-Instruct seed tasks."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from distillery import collapse
from distillery.collapse import (METRICS, collapse_metrics, compare, dump_history, format_collapse, history_entry,
                                 parse_history, self_bleu, vendi_score)


@pytest.fixture(scope="module")
def seed_texts(seed_records) -> list[str]:
    """The seeds' instructions and their outputs: 175 people's tasks, as diverse as real data gets."""
    texts = [r["instruction"] for r in seed_records]
    texts += [i["output"] for r in seed_records for i in r["instances"] if i["output"].strip()]
    return texts


def templated(texts: list[str]) -> list[str]:
    """A collapsed generator: every text poured into one of three templates, only its first words kept."""
    templates = ("Please write a detailed and helpful answer about {} for the user.",
                 "Here is a detailed and helpful answer about {} for the user.",
                 "Write a short, detailed and helpful answer about {} for the user.")
    return [templates[i % 3].format(" ".join(t.split()[:3])) for i, t in enumerate(texts)]


@pytest.mark.parametrize("kind", ["five_repeated", "templates"])
def test_repetitive_texts_score_as_collapsed(seed_texts, kind):
    repetitive = (seed_texts[:5] * len(seed_texts))[: len(seed_texts)] if kind == "five_repeated" else templated(seed_texts)
    diverse, collapsed = collapse_metrics(seed_texts), collapse_metrics(repetitive)
    assert diverse["sample"] == collapsed["sample"] == min(500, len(seed_texts))
    for metric in ("distinct_2", "ngram_diversity", "vendi_ngram"):
        assert collapsed[metric] < diverse[metric], metric
    for metric in ("compression_ratio", "self_bleu"):
        assert collapsed[metric] > diverse[metric], metric
    assert diverse["vendi_ngram"] > 3 * collapsed["vendi_ngram"]


def test_identical_texts(seed_texts):
    m = collapse_metrics([seed_texts[200]] * 60)
    assert m["vendi_ngram"] == pytest.approx(1.0, abs=1e-4)
    assert m["self_bleu"] == pytest.approx(1.0, abs=1e-9)
    assert m["compression_ratio"] > 20
    assert m["length_std"] == 0.0
    assert m["distinct_1"] < 1 / 50


def test_fixed_seed_sampling(seed_texts):
    texts = seed_texts + ["", "   "]
    first, again = collapse_metrics(texts, sample=100, seed=3), collapse_metrics(texts, sample=100, seed=3)
    assert first == again
    assert first["sample"] == 100 and first["rows"] == len(seed_texts)
    assert collapse_metrics(texts, sample=100, seed=4) != first
    assert collapse_metrics(texts, sample=10_000)["sample"] == len(seed_texts)
    assert list(first) == list(METRICS)


def slow_self_bleu(texts: list[str]) -> float:
    """BLEU-4 of each text against every other, with plain loops: clipping by scanning each reference."""
    words = [w for w in (re.findall(r"\w+", t.lower()) for t in texts) if w]
    scores = []
    for i, hyp in enumerate(words):
        refs = [w for j, w in enumerate(words) if j != i]
        logs = []
        for n in range(1, 5):
            grams = [tuple(hyp[k : k + n]) for k in range(len(hyp) - n + 1)]
            if not grams:
                break
            matched = 0
            for g in set(grams):
                most = max(sum(1 for k in range(len(r) - n + 1) if tuple(r[k : k + n]) == g) for r in refs)
                matched += min(grams.count(g), most)
            logs.append(math.log((matched or 0.1) / len(grams)))
        closest = min((len(r) for r in refs), key=lambda length: (abs(length - len(hyp)), length))
        brevity = 1.0 if len(hyp) > closest else math.exp(1 - closest / len(hyp))
        scores.append(brevity * math.exp(sum(logs) / len(logs)))
    return sum(scores) / len(scores)


def test_self_bleu_equals_the_slow_definition(seed_texts):
    # short texts (fewer than 4 words), a repeated text (ties in the top-2 counts) and a wordless one
    texts = seed_texts[:24] + ["Yes.", "Paris is", "the cat sat", seed_texts[3], seed_texts[3] + " again", "?!"]
    assert self_bleu(texts) == pytest.approx(slow_self_bleu(texts), abs=1e-9)
    outputs = seed_texts[175:205]
    assert self_bleu(outputs) == pytest.approx(slow_self_bleu(outputs), abs=1e-9)
    assert self_bleu(["only one text"]) is None


def dense_vendi(texts: list[str]) -> float:
    """The definition: full 1- and 2-gram count vectors, cosine kernel, entropy of K/n's eigenvalues."""
    vectors = []
    for t in texts:
        w = re.findall(r"\w+", t.lower())
        vectors.append([(g,) for g in w] + [tuple(w[k : k + 2]) for k in range(len(w) - 1)])
    vocab = sorted({g for v in vectors for g in v})
    x = np.array([[v.count(g) for g in vocab] for v in vectors], dtype=float)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    lam = np.linalg.eigvalsh(x @ x.T / len(texts))
    lam = lam[lam > 1e-12]
    return float(np.exp(-(lam * np.log(lam)).sum()))


def test_vendi_on_hand_examples():
    assert vendi_score(["the cat sat", "the cat sat"]) == pytest.approx(1.0, abs=1e-9)
    assert vendi_score(["the cat sat", "dogs run fast"]) == pytest.approx(2.0, abs=1e-9)
    # two identical and one disjoint: eigenvalues 2/3 and 1/3
    expected = math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert vendi_score(["a b", "a b", "c d"]) == pytest.approx(expected, abs=1e-9)
    assert vendi_score(["one text"]) is None


def test_vendi_equals_the_dense_definition(seed_texts, monkeypatch):
    texts = seed_texts[170:190]
    expected = dense_vendi(texts)
    assert vendi_score(texts) == pytest.approx(expected, abs=1e-9)
    monkeypatch.setattr(collapse, "BLOCK", 7 * len(texts))  # many column blocks: the same product
    assert vendi_score(texts) == pytest.approx(expected, abs=1e-9)
    monkeypatch.setattr(collapse, "VENDI_MAX", 5)
    assert vendi_score(texts) == pytest.approx(dense_vendi(texts[:5]), abs=1e-9)


def test_short_wordless_and_cjk_texts():
    empty = collapse_metrics(["", "  "])
    assert empty["rows"] == 0 and empty["sample"] == 0
    assert all(empty[m] is None for m in METRICS if m not in ("rows", "sample"))
    one = collapse_metrics(["Just one answer here."])
    assert one["self_bleu"] is None and one["vendi_ngram"] is None and one["distinct_1"] == 1.0
    short = collapse_metrics(["Yes.", "No.", "Maybe so."])
    assert short["distinct_4"] is None and short["ngram_diversity"] is None
    assert short["vendi_ngram"] == pytest.approx(3.0, abs=1e-4)  # no shared word: orthogonal
    marks = collapse_metrics(["?!", "..."])
    assert marks["rows"] == 2 and marks["compression_ratio"] is not None and marks["self_bleu"] is None
    cjk = collapse_metrics(["今天天气很好。我们去公园吧。", "今天天气很好。我们去公园吧。", "机器学习 很 有趣"])
    assert cjk["length_mean"] == pytest.approx((2 + 2 + 3) / 3, abs=1e-4)  # a run of CJK is one \w+ word
    assert 1.0 < cjk["vendi_ngram"] < 3.0


def metrics_of(seed_texts, **changed) -> dict:
    return {**collapse_metrics(seed_texts), **changed}


def test_compare_a_stable_run(seed_texts):
    m = collapse_metrics(seed_texts)
    result = compare([history_entry(m, "r1", "self-instruct", "2025-01-01T00:00:00Z")], m)
    assert result["warnings"] == [] and result["notes"] == []
    assert result["previous_run"] == result["first_run"] == "r1"
    assert result["previous"]["distinct_2"] == {"before": m["distinct_2"], "now": m["distinct_2"], "change": 0.0}


@pytest.mark.parametrize("metric,factor,verb", [("distinct_2", 0.85, "fell"), ("vendi_ngram", 0.8, "fell"),
                                                ("compression_ratio", 1.2, "rose")])
def test_compare_warns_against_the_previous_run(seed_texts, metric, factor, verb):
    m = collapse_metrics(seed_texts)
    now = metrics_of(seed_texts, **{metric: round(m[metric] * factor, 4)})
    result = compare([history_entry(m, "r1", "si", "t1")], now)
    assert len(result["warnings"]) == 1  # one run is both previous and first: warned about once
    warning = result["warnings"][0]
    assert warning.startswith(f"{metric} {verb} from {m[metric]} to {now[metric]}")
    assert f"{(factor - 1):+.1%}" in warning and "previous run r1" in warning
    assert compare([history_entry(m, "r1", "si", "t1")], now, max_drop=0.25)["warnings"] == []


def test_compare_warns_against_the_first_run(seed_texts):
    m = collapse_metrics(seed_texts)
    first = history_entry({**m, "distinct_2": 0.5}, "r1", "si", "t1")
    previous = history_entry({**m, "distinct_2": 0.46}, "r2", "si", "t2")
    result = compare([first, previous], {**m, "distinct_2": 0.43})  # -6.5% since r2, -14% since r1
    assert result["first_run"] == "r1" and result["previous_run"] == "r2"
    assert len(result["warnings"]) == 1 and "first run r1" in result["warnings"][0]
    assert "-14.0%" in result["warnings"][0] and result["first"]["distinct_2"]["change"] == -0.14


def test_compare_honours_max_drop_at_the_boundary(seed_texts):
    m = collapse_metrics(seed_texts)
    history = [history_entry({**m, "distinct_2": 0.5, "vendi_ngram": 73.0, "compression_ratio": 2.0}, "r1", "si", "t")]
    exactly = {**m, "distinct_2": 0.45, "vendi_ngram": 65.7, "compression_ratio": 2.2}
    assert compare(history, exactly)["warnings"] == []
    beyond = {**m, "distinct_2": 0.4499, "vendi_ngram": 65.69, "compression_ratio": 2.2001}
    assert [w.split()[0] for w in compare(history, beyond)["warnings"]] == ["distinct_2", "vendi_ngram", "compression_ratio"]
    assert compare(history, beyond, max_drop=0.2)["warnings"] == []


def test_compare_with_no_history_or_odd_entries(seed_texts):
    m = collapse_metrics(seed_texts)
    empty = compare([], m)
    assert empty["previous"] == {} and empty["first"] == {} and empty["warnings"] == []
    assert empty["previous_run"] is None and empty["first_run"] is None
    odd = compare([{"metrics": {"distinct_2": "high", "vendi_ngram": 0, "sample": 100}}], m)
    assert odd["warnings"] == [] and odd["previous"]["distinct_2"]["change"] is None
    assert "sample sizes differ (100 before" in odd["notes"][0]


def test_history_round_trip(seed_texts):
    entries = [history_entry(collapse_metrics(seed_texts, seed=s), f"r{s}", "self-instruct", f"2025-01-0{s}") for s in (1, 2)]
    data = dump_history(entries)
    assert data.count(b"\n") == 2 and json.loads(data.splitlines()[0])["run_id"] == "r1"
    assert parse_history(data) == (entries, None)
    assert parse_history(data + b"\n") == (entries, None)
    assert parse_history(None) == ([], None) and parse_history(b"") == ([], None)


@pytest.mark.parametrize("data,why", [
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b'{"run_id": "r1", "metrics": {}}\n{"run_id": "r2", "metr', "line 2 of the collapse history is not JSON"),
    (b'{"run_id": "r1", "metrics": {}}\n[1, 2]\n', "line 2 of the collapse history is not an entry"),
    (b'{"run_id": "r1"}\n', "line 1 of the collapse history is not an entry with 'metrics'"),
])
def test_unreadable_history_is_reported(data, why):
    entries, problem = parse_history(data)
    assert entries == [] and why in problem


def test_format_collapse_shows_the_numbers(seed_texts):
    m = collapse_metrics(seed_texts)
    now = {**m, "distinct_2": round(m["distinct_2"] * 0.8, 4)}
    lines = format_collapse(now, compare([history_entry(m, "r1", "si", "t1")], now))
    row = next(line for line in lines if line.startswith("| distinct_2 |"))
    assert f"| {now['distinct_2']} | {m['distinct_2']} | -20.0% |" in row
    assert "previous (r1)" in lines[0]
    assert any(line.startswith("- **warning:** distinct_2 fell") for line in lines)
    assert len([line for line in lines if line.startswith("| ")]) == len(METRICS) + 2  # the header, the rule, a row per metric
    alone = format_collapse(m, None)
    assert f"| compression_ratio | {m['compression_ratio']} | – |" in "\n".join(alone)
    assert "No earlier run in the collapse history to compare with." in alone
