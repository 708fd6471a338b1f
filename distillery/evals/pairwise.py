"""Pairwise win rate of candidates against a baseline, MT-Bench / AlpacaEval style. Pure logic.

Per prompt the judge compares the candidate's answer x with the baseline's answer y in
both orders; `distillery.judge.swap_verdict` combines the two into 'x', 'y', 'tie' or
'inconsistent' (MT-Bench: a win only when both orders agree; an inconsistent pair
counts as a tie). On top of the plain win rate:

- a seeded percentile bootstrap over prompts for a 95% interval;
- a length-controlled win rate (AlpacaEval 2, Dubois et al. 2024): the outcome is
  regressed on the normalized length difference, and read off at zero difference;
- control pairs: a real answer against a deliberately broken one (empty, another
  prompt's answer, truncated); a judge that does not prefer the real answer almost
  always makes the whole evaluation unreliable.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import numpy as np

CONTROL_KINDS = ("empty", "other_answer", "truncated")
_OUTCOME = {"x": 1.0, "y": 0.0, "tie": 0.5, "inconsistent": 0.5}
_LC_SLOPE_PENALTY = 1e-3


# ---- control pairs ----

def _rank(item: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\x00{item}".encode()).hexdigest()


def control_plan(ids: list[str], share: float, seed: int) -> dict[str, str]:
    """round(share * len(ids)) ids (at least 1 when share > 0), chosen by a seeded hash so the
    choice does not depend on the input order; kinds cycle through CONTROL_KINDS."""
    unique = sorted(set(ids))
    if share <= 0 or not unique:
        return {}
    k = min(len(unique), max(1, round(share * len(unique))))
    chosen = sorted(unique, key=lambda i: _rank(i, seed))[:k]
    return {i: CONTROL_KINDS[j % len(CONTROL_KINDS)] for j, i in enumerate(chosen)}


def corrupt(answer: str, kind: str, other: str) -> str:
    """'empty' -> "", 'other_answer' -> `other`, 'truncated' -> the first third of the
    answer's words (rounded down, at least one word, and always at least one word fewer
    than the answer: a one-word answer truncates to ""); words are re-joined by single spaces."""
    if kind == "empty":
        return ""
    if kind == "other_answer":
        return other
    if kind == "truncated":
        words = answer.split()
        keep = min(max(1, len(words) // 3), len(words) - 1)
        return " ".join(words[:max(0, keep)])
    raise ValueError(f"unknown control kind {kind!r}; expected one of {CONTROL_KINDS}")


def control_accuracy(verdicts: list[str]) -> float | None:
    """Control pairs ordered (real answer = x, corrupted = y): the share the judge got right."""
    if not verdicts:
        return None
    return round(sum(v == "x" for v in verdicts) / len(verdicts), 4)


def reliability(control_acc: float | None, swap_agreement: float | None,
                min_control: float = 0.8, min_swap: float = 0.6) -> list[str]:
    """Reasons the evaluation is unreliable; empty when it is reliable."""
    reasons = []
    if control_acc is None:
        reasons.append("no control pairs were judged")
    elif control_acc < min_control - 1e-9:
        reasons.append(f"the judge got {control_acc:.0%} of controls right (below {min_control:.0%})")
    if swap_agreement is None:
        reasons.append("no pairs were judged in both orders (swap agreement unknown)")
    elif swap_agreement < min_swap - 1e-9:
        reasons.append(f"swap agreement {swap_agreement:.2f} is below {min_swap}")
    return reasons


# ---- win rates ----

def parse_choice(text: str | None) -> str | None:
    """'A', 'B' or 'tie' from a judge's answer: exact under structured output; from an endpoint that
    cannot hold the format, the first word ("A.", "**B**", "Tie -", "Response A") read the same way."""
    if text is None:
        return None
    words = re.findall(r"[A-Za-z]+", text)
    if words[:1] == ["Response"] or words[:1] == ["response"]:
        words = words[1:]
    first = words[0] if words else ""
    return {"a": "A", "b": "B", "tie": "tie"}.get(first.lower())


def outcome(verdict: str | None) -> float | None:
    """x -> 1, y -> 0, tie and inconsistent -> 0.5 (MT-Bench); anything else -> None."""
    return _OUTCOME.get(verdict)


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def lc_win_rate(outcomes: list[float], cand_lengths: list[int], base_lengths: list[int]) -> float | None:
    """Length-controlled win rate: logistic regression of the (soft) outcome on an intercept
    and f = tanh(d / std(d)), d = len_x - len_y (f = 0 when std is 0), fitted by Newton's
    method with an L2 penalty on the slope only; the prediction at f = 0, sigmoid(intercept).
    When the outcomes are all wins or all losses the intercept grows without bound and the
    result tends to 1 or 0."""
    y = np.asarray(outcomes, dtype=float)
    if y.size == 0:
        return None
    d = np.asarray(cand_lengths, dtype=float) - np.asarray(base_lengths, dtype=float)
    std = d.std()
    f = np.tanh(d / std) if std > 0 else np.zeros_like(d)
    X = np.column_stack([np.ones_like(f), f])
    penalty = np.diag([0.0, _LC_SLOPE_PENALTY])
    w = np.zeros(2)
    for _ in range(200):
        p = _sigmoid(X @ w)
        grad = X.T @ (p - y) + penalty @ w
        hess = (X * (p * (1 - p))[:, None]).T @ X + penalty
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]  # H is singular once p saturates
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(_sigmoid(w[0]))


def _bootstrap_ci(values: np.ndarray, seed: int, n_boot: int) -> list[float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return [_r(low), _r(high)]


def _position_bias(raw_orders: list[tuple[str | None, str | None]] | None) -> float | None:
    """Over single-order answers that are 'A' or 'B': the share that picked the first position."""
    if raw_orders is None:
        return None
    picks = [a.strip() for pair in raw_orders for a in pair if a is not None and a.strip() in ("A", "B")]
    return _r(picks.count("A") / len(picks)) if picks else None


def win_stats(verdicts: list[str], cand_lengths: list[int], base_lengths: list[int], seed: int = 0,
              n_boot: int = 2000, raw_orders: list[tuple[str | None, str | None]] | None = None) -> dict:
    """Win rate of x over y from swap-combined verdicts, with a bootstrap 95% interval, the
    decisive and length-controlled rates, swap agreement and the judge's position bias."""
    if not len(verdicts) == len(cand_lengths) == len(base_lengths):
        raise ValueError("verdicts, cand_lengths and base_lengths must have the same length")
    bad = sorted({v for v in verdicts if outcome(v) is None})
    if bad:
        raise ValueError(f"unknown verdicts {bad}; expected one of {sorted(_OUTCOME)}")
    counts = Counter(verdicts)
    n, wins, losses = len(verdicts), counts["x"], counts["y"]
    values = np.array([outcome(v) for v in verdicts], dtype=float)
    return {
        "n": n,
        "wins": wins,
        "losses": losses,
        "ties": counts["tie"],
        "inconsistent": counts["inconsistent"],
        "win_rate": _r(values.mean()) if n else None,
        "ci95": _bootstrap_ci(values, seed, n_boot) if n else None,
        "decisive_win_rate": _r(wins / (wins + losses)) if wins + losses else None,
        "lc_win_rate": _r(lc_win_rate(values, cand_lengths, base_lengths)),
        "swap_agreement": _r((n - counts["inconsistent"]) / n) if n else None,
        "position_bias": _position_bias(raw_orders),
    }


def before_after(before: dict, after: dict) -> dict:
    """The change of each rate between two `win_stats` results (e.g. a student before and after)."""
    out = {}
    for key in ("win_rate", "lc_win_rate", "decisive_win_rate"):
        b, a = before.get(key), after.get(key)
        out[key] = {"before": b, "after": a, "change": _r(a - b) if a is not None and b is not None else None}
    return out


# ---- report ----

def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _candidate_table(name: str, s: dict) -> list[str]:
    ci = s.get("ci95")
    ci_text = f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
    counts = f"n={s['n']}, wins {s['wins']}, losses {s['losses']}, ties {s['ties']}, inconsistent {s['inconsistent']}"
    rows = [
        ("Win rate (95% CI)", _fmt(s.get("win_rate")) + ci_text),
        ("Decisive win rate", _fmt(s.get("decisive_win_rate"))),
        ("Length-controlled win rate", _fmt(s.get("lc_win_rate"))),
        ("Swap agreement", _fmt(s.get("swap_agreement"))),
        ("Position bias (share picking A)", _fmt(s.get("position_bias"))),
        ("Counts", counts),
    ]
    return [f"### {name}", "", "| Metric | Value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]


def _change_table(change: dict) -> list[str]:
    lines = ["### Change", "", "| Metric | Before | After | Change |", "|---|---|---|---|"]
    for key, c in change.items():
        lines.append(f"| {key} | {_fmt(c['before'])} | {_fmt(c['after'])} | {_fmt(c['change'])} |")
    return [*lines, ""]


def pairwise_markdown(result: dict) -> str:
    """Markdown report; the first line says UNRELIABLE EVALUATION when there are reasons to."""
    candidates = result["candidates"]
    if result.get("unreliable"):
        first = "**UNRELIABLE EVALUATION:** " + "; ".join(result["unreliable"])
    else:
        first = f"Pairwise evaluation: {', '.join(candidates)} vs {result['baseline']}, judged by {result['judge']}"
    controls = result.get("controls") or {}
    lines = [first, "", f"Baseline: {result['baseline']}; judge: {result['judge']}; "
             f"control pairs: {controls.get('n', 0)}, control accuracy {_fmt(controls.get('accuracy'))}", ""]
    for name, stats in candidates.items():
        lines += _candidate_table(name, stats)
    if result.get("change"):
        lines += _change_table(result["change"])
    return "\n".join(lines).rstrip() + "\n"
