import pytest

from distillery.evals.pairwise import (
    CONTROL_KINDS,
    before_after,
    control_accuracy,
    control_plan,
    corrupt,
    lc_win_rate,
    outcome,
    pairwise_markdown,
    reliability,
    win_stats,
)
from distillery.judge import swap_verdict


def _stats(verdicts, **kw):
    return win_stats(verdicts, [10] * len(verdicts), [10] * len(verdicts), **kw)


# ---- outcomes and counts ----

def test_outcome_values():
    assert [outcome(v) for v in ("x", "y", "tie", "inconsistent")] == [1.0, 0.0, 0.5, 0.5]
    assert outcome("A") is None and outcome(None) is None


@pytest.mark.parametrize("judge", [lambda first, second: "A", lambda first, second: "B", lambda first, second: "tie"])
def test_identical_candidate_and_baseline_is_exactly_half(judge):
    # a deterministic judge sees the same pair in both orders: it can only be inconsistent or tie
    answers = [f"answer {i}" for i in range(37)]
    verdicts = [swap_verdict(judge(a, a), judge(a, a)) for a in answers]
    assert set(verdicts) <= {"inconsistent", "tie"}
    lengths = [len(a) for a in answers]
    stats = win_stats(verdicts, lengths, lengths)
    assert stats["win_rate"] == 0.5
    assert stats["ci95"] == [0.5, 0.5]
    assert stats["lc_win_rate"] == 0.5
    assert stats["decisive_win_rate"] is None


def test_counts_and_rates():
    verdicts = ["x"] * 5 + ["y"] * 2 + ["tie"] * 2 + ["inconsistent"]
    s = _stats(verdicts)
    assert (s["n"], s["wins"], s["losses"], s["ties"], s["inconsistent"]) == (10, 5, 2, 2, 1)
    assert s["win_rate"] == 0.65  # (5 + 0.5 * 3) / 10
    assert s["decisive_win_rate"] == round(5 / 7, 4)
    assert s["swap_agreement"] == 0.9
    assert s["position_bias"] is None


def test_empty_and_bad_input():
    s = win_stats([], [], [])
    assert s["n"] == 0 and s["win_rate"] is None and s["ci95"] is None and s["lc_win_rate"] is None
    assert s["swap_agreement"] is None
    with pytest.raises(ValueError):
        win_stats(["x", "A"], [1, 1], [1, 1])
    with pytest.raises(ValueError):
        win_stats(["x"], [1, 2], [1])


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    verdicts = ["x", "y", "tie", "x", "x", "y", "inconsistent", "x", "y", "x"] * 3
    a = _stats(verdicts, seed=1)
    low, high = a["ci95"]
    assert low < a["win_rate"] < high
    assert _stats(verdicts, seed=1)["ci95"] == a["ci95"]
    assert _stats(verdicts, seed=2)["ci95"] != a["ci95"]
    assert 0.0 <= low and high <= 1.0


def test_position_bias_from_raw_orders():
    raw = [("A", "A"), ("A", "B"), ("B", "tie"), (None, "A"), ("garbage", " A ")]
    s = _stats(["inconsistent"] * 5, raw_orders=raw)
    # single-order answers that are A or B: A, A, A, B, B, A, A -> 5 of 7 picked A
    assert s["position_bias"] == round(5 / 7, 4)
    assert _stats(["tie"], raw_orders=[("tie", "tie")])["position_bias"] is None


# ---- length control ----

def test_lc_equals_plain_rate_when_outcomes_ignore_length():
    outcomes, cand, base = [], [], []
    for diff in (-30, -10, 10, 30):
        for o in (1.0, 1.0, 0.0, 0.5):  # the same mix at every length difference
            outcomes.append(o)
            cand.append(100 + diff)
            base.append(100)
    plain = sum(outcomes) / len(outcomes)
    assert lc_win_rate(outcomes, cand, base) == pytest.approx(plain, abs=1e-6)


def test_lc_removes_a_pure_length_advantage():
    # symmetric differences (+-50); the candidate is longer in 40 of 50 prompts and
    # wins 90% when longer, 10% when shorter: the plain rate is high, at equal length 0.5
    outcomes = [1.0] * 36 + [0.0] * 4 + [1.0] + [0.0] * 9
    cand = [150] * 40 + [100] * 10
    base = [100] * 40 + [150] * 10
    plain = win_stats(["x" if o else "y" for o in outcomes], cand, base)
    assert plain["win_rate"] == 0.74
    assert plain["lc_win_rate"] == pytest.approx(0.5, abs=0.01)


def test_lc_when_candidate_wins_exactly_when_longer():
    verdicts = ["x"] * 8 + ["y"] * 2
    cand = [150] * 8 + [100] * 2
    base = [100] * 8 + [150] * 2
    s = win_stats(verdicts, cand, base)
    assert s["win_rate"] == 0.8
    assert s["lc_win_rate"] < s["win_rate"] - 0.1
    # balanced: as often longer as shorter, and winning exactly when longer -> 0.5
    assert lc_win_rate([1.0, 0.0] * 5, [150, 100] * 5, [100, 150] * 5) == pytest.approx(0.5, abs=1e-6)


def test_lc_with_no_length_variation_is_the_plain_rate():
    assert lc_win_rate([1.0, 1.0, 1.0, 0.0], [5] * 4, [5] * 4) == pytest.approx(0.75, abs=1e-6)
    assert lc_win_rate([1.0] * 6, [9, 3, 5, 7, 1, 2], [1] * 6) > 0.999


# ---- controls ----

def test_control_plan_size_kinds_and_determinism():
    ids = [f"p{i:03d}" for i in range(100)]
    plan = control_plan(ids, 0.1, seed=7)
    assert len(plan) == 10 and set(plan) <= set(ids)
    assert sorted(plan.values()) == sorted([CONTROL_KINDS[i % 3] for i in range(10)])
    assert control_plan(list(reversed(ids)), 0.1, seed=7) == plan
    assert control_plan(ids, 0.1, seed=7) == plan
    assert set(control_plan(ids, 0.1, seed=8)) != set(plan)
    assert len(control_plan(ids[:3], 0.01, seed=0)) == 1
    assert control_plan(ids, 0.0, seed=0) == {} and control_plan([], 0.5, seed=0) == {}


def test_corrupt_kinds():
    answer = "one two three four five six seven eight nine"
    assert corrupt(answer, "empty", "other") == ""
    assert corrupt(answer, "other_answer", "the other answer") == "the other answer"
    assert corrupt(answer, "truncated", "") == "one two three"
    assert corrupt("alpha beta", "truncated", "") == "alpha"
    assert corrupt("alpha", "truncated", "") == ""
    with pytest.raises(ValueError):
        corrupt(answer, "shuffled", "")


def test_control_accuracy():
    assert control_accuracy(["x", "x", "y", "tie", "inconsistent"]) == 0.4
    assert control_accuracy([]) is None


@pytest.mark.parametrize("acc,swap,n_reasons", [
    (0.8, 0.6, 0), (0.79, 0.6, 1), (0.8, 0.59, 1), (0.79, 0.59, 2), (1.0, 1.0, 0), (None, 0.9, 1), (0.9, None, 1),
])
def test_reliability_boundaries(acc, swap, n_reasons):
    assert len(reliability(acc, swap)) == n_reasons


def test_reliability_messages():
    assert reliability(0.55, 0.42) == ["the judge got 55% of controls right (below 80%)", "swap agreement 0.42 is below 0.6"]
    assert reliability(None, 0.9) == ["no control pairs were judged"]
    assert reliability(0.8, 0.6) == []
    assert reliability(control_accuracy(["x"] * 4 + ["y"]), 0.6) == []  # 4/5 is exactly the threshold


def test_before_after():
    change = before_after({"win_rate": 0.4, "lc_win_rate": 0.45, "decisive_win_rate": None},
                          {"win_rate": 0.55, "lc_win_rate": 0.5, "decisive_win_rate": 0.6})
    assert change["win_rate"] == {"before": 0.4, "after": 0.55, "change": 0.15}
    assert change["lc_win_rate"]["change"] == 0.05
    assert change["decisive_win_rate"] == {"before": None, "after": 0.6, "change": None}


# ---- report ----

def _result(unreliable):
    stats = win_stats(["x", "y", "tie", "x"], [10, 20, 30, 40], [20, 20, 20, 20], raw_orders=[("A", "B")] * 4)
    return {"candidates": {"student": stats}, "baseline": "base-model", "judge": "judge-7b",
            "controls": {"n": 5, "accuracy": 0.6}, "unreliable": unreliable,
            "change": before_after(stats, stats)}


def test_markdown_first_line_both_ways():
    bad = pairwise_markdown(_result(["the judge got 60% of controls right (below 80%)", "swap agreement 0.42 is below 0.6"]))
    assert bad.splitlines()[0] == ("**UNRELIABLE EVALUATION:** the judge got 60% of controls right (below 80%); "
                                   "swap agreement 0.42 is below 0.6")
    good = pairwise_markdown(_result([]))
    assert good.splitlines()[0] == "Pairwise evaluation: student vs base-model, judged by judge-7b"
    assert "UNRELIABLE" not in good
    assert "| Win rate (95% CI) | 0.6250 [" in good
    assert "| Position bias (share picking A) | 0.5000 |" in good
    assert "wins 2, losses 1, ties 1, inconsistent 0" in good
    assert "| win_rate | 0.6250 | 0.6250 | 0.0000 |" in good


@pytest.mark.parametrize("text, choice", [
    ("A", "A"), ("B", "B"), ("tie", "tie"), (" A.\n", "A"), ("**B**", "B"), ("Tie - both are fine", "tie"),
    ("Response A is better", "A"), ("Both", None), ("", None), (None, None), ("Answer: A", None),
])
def test_parse_choice_reads_the_first_word_only(text, choice):
    from distillery.evals.pairwise import parse_choice

    assert parse_choice(text) == choice
