"""Response Similarity Evaluation (RSE; Lee et al., 2025, "Quantification of Large Language
Model Distillation"). Pure logic.

A judge rates, 1-5 on each of three aspects, how closely a candidate's answer mimics a
reference (teacher) answer to the same instruction: similarity, not quality. Two bounds
calibrate the scale: the teacher against a second sample of its own (upper) and the
teacher against its answer to another prompt (lower); a candidate's position is where
it falls between them.
"""

from __future__ import annotations

import random
import re

from distillery.judge import JUDGE_SYSTEM, fence

ASPECTS = {"style": "Style", "logic": "Logical structure", "content": "Content detail"}

_FORMAT = "\n".join(f"{label}: <1-5>" for label in ASPECTS.values())

RSE_RUBRIC = (
    "Rate how closely the CANDIDATE response mimics the REFERENCE response to the same "
    "instruction. Judge similarity, not quality: a better or worse answer that differs from "
    "the reference scores low, a close copy of a flawed reference scores high.\n"
    "Rate each aspect on a scale of 1 to 5:\n"
    "- Style: tone, register, formatting, length and phrasing. 5: near-identical style; "
    "4: very similar; 3: partly similar; 2: mostly different; 1: entirely different.\n"
    "- Logical structure: the order of the steps or arguments and how the answer is organised. "
    "5: near-identical structure; 4: very similar; 3: partly similar; 2: mostly different; "
    "1: entirely different.\n"
    "- Content detail: the facts, examples, numbers and level of detail. 5: near-identical "
    "content; 4: very similar; 3: partly overlapping; 2: little overlap; 1: entirely different.\n"
    "The instruction, the reference and the candidate follow, each in its own marked block.\n"
    f"Reply in exactly this format, nothing else:\n{_FORMAT}"
)


def rse_messages(prompt: str, reference: str, candidate: str) -> list[dict]:
    """Rubric and reply format first, items last: everything before the first fence is the
    same for every item, so engines with prefix caching share it."""
    user = (
        f"{RSE_RUBRIC}\n\n{fence('INSTRUCTION', prompt)}\n\n"
        f"{fence('REFERENCE', reference)}\n\n{fence('CANDIDATE', candidate)}"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def rse_regex() -> str:
    """For structured output: exactly the three lines, each with a digit 1-5. The labels are
    plain words, left unescaped (some structured-output engines reject escaped spaces)."""
    return r"\n".join(f"{label}: [1-5]" for label in ASPECTS.values())


def parse_rse(text: str) -> dict[str, int] | None:
    """{"style": n, "logic": n, "content": n}, or None when any is missing or not 1-5."""
    out = {}
    for key, label in ASPECTS.items():
        match = re.search(rf"{re.escape(label)}\s*[:=]\s*(\d+)\b", text or "", re.IGNORECASE)
        if not match or not 1 <= int(match.group(1)) <= 5:
            return None
        out[key] = int(match.group(1))
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _summarise(items: list[dict | None]) -> dict:
    parsed = [s for s in items if s is not None]
    means = {a: _mean([s[a] for s in parsed]) for a in ASPECTS}
    overall = _mean(list(means.values())) if parsed else None
    return {
        "n": len(items),
        "parsed": len(parsed),
        "parse_failures": len(items) - len(parsed),
        "means": {a: None if m is None else round(m, 3) for a, m in means.items()},
        "overall": None if overall is None else round(overall, 3),
    }


def rse_summary(scores: dict[str, list[dict | None]]) -> dict:
    """Per key ('candidate:<name>', 'upper', 'lower'): counts, aspect means and overall; each
    candidate's `position` = (overall - lower) / (upper - lower) when upper > lower; top
    level `bounds_ok` (upper above lower; None when a bound is missing) and `gap`."""
    out = {key: _summarise(items) for key, items in scores.items()}
    upper = out.get("upper", {}).get("overall")
    lower = out.get("lower", {}).get("overall")
    known = upper is not None and lower is not None
    for key in out:
        if key.startswith("candidate:"):
            overall = out[key]["overall"]
            ok = known and upper > lower and overall is not None
            out[key]["position"] = round((overall - lower) / (upper - lower), 3) if ok else None
    out["bounds_ok"] = upper > lower if known else None
    out["gap"] = round(upper - lower, 3) if known else None
    return out


def _cell(value) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def rse_markdown(summary: dict, judge: str) -> str:
    """A table aspect x (candidates, upper, lower); the first line warns when upper <= lower."""
    cols = [k for k in summary if k.startswith("candidate:")] + [k for k in ("upper", "lower") if k in summary]
    upper = summary.get("upper", {}).get("overall")
    lower = summary.get("lower", {}).get("overall")
    if summary.get("bounds_ok"):
        first = f"Response similarity (RSE) to the teacher, judged by {judge}"
    else:
        first = (f"**UNRELIABLE EVALUATION:** the upper bound (teacher vs its own second sample, overall "
                 f"{_cell(upper)}) is not above the lower bound (teacher vs another prompt's answer, "
                 f"overall {_cell(lower)}); judged by {judge}")
    names = [c.split(":", 1)[1] if c.startswith("candidate:") else c for c in cols]
    lines = [first, "", "| Aspect | " + " | ".join(names) + " |", "|---|" + "---|" * len(cols)]
    rows = [(label, lambda s, a=a: s["means"][a]) for a, label in ASPECTS.items()]
    rows += [("Overall", lambda s: s["overall"]), ("Position", lambda s: s.get("position")),
             ("Parsed / n", lambda s: f"{s['parsed']} / {s['n']}")]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(_cell(get(summary[c])) for c in cols) + " |")
    gap = f"gap upper - lower: {_cell(summary.get('gap'))}"
    return "\n".join([*lines, "", gap]) + "\n"


def other_answer_pairs(ids: list[str], seed: int) -> dict[str, str]:
    """For each id another id whose answer is the lower bound: a seeded derangement (a seeded
    shuffle of the sorted ids, each mapped to the next one around the cycle); {} for one id."""
    order = sorted(set(ids))
    if len(order) < 2:
        return {}
    random.Random(seed).shuffle(order)
    return {a: order[(i + 1) % len(order)] for i, a in enumerate(order)}
