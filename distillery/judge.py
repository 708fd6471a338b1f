"""LLM-as-judge: prompt rendering, output parsing, score filtering. Pure logic.

The judge answers in a fixed shape, "Score: N" then "Rationale: ...", which the
engine enforces with a regex (structured outputs). Parsing still never
trusts it: a judgement that does not parse keeps score None and the raw text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

JUDGE_SYSTEM = (
    "You are a strict evaluator of AI assistant answers. You reply with a score "
    "from 1 to 10 and a one-sentence rationale, in exactly this format:\n"
    "Score: <1-10>\nRationale: <one sentence>"
)

# Score first: a rationale cut short by max_tokens still leaves a usable score.
JUDGE_REGEX = r"Score: (10|[1-9])\nRationale: [^\n]{8,600}"
_PARSE = re.compile(r"score\s*[:=]\s*(\d{1,2})\b(?:\s*/\s*10)?\s*(?:rationale\s*[:=]\s*(.*))?", re.IGNORECASE | re.DOTALL)


def judge_messages(rubric: str, prompt: str, response: str) -> list[dict]:
    """Rubric first, item last, so engines with prefix caching share the rubric."""
    user = (
        f"{rubric}\n\n"
        f"[Instruction]\n{prompt}\n[End of instruction]\n\n"
        f"[Response]\n{response}\n[End of response]\n\n"
        "Give your score and rationale."
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_judgement(text: str) -> tuple[int | None, str | None]:
    """Return (score 1..10, rationale) or (None, None) when the text has no valid score."""
    match = _PARSE.search(text or "")
    if not match:
        return None, None
    score = int(match.group(1))
    if not 1 <= score <= 10:
        return None, None
    rationale = (match.group(2) or "").strip() or None
    return score, rationale


def apply_judgements(rows: Sequence[dict], texts: Sequence[str], judge_model: str) -> list[dict]:
    out = []
    for row, text in zip(rows, texts, strict=True):
        score, rationale = parse_judgement(text)
        out.append({**row, "judge_model": judge_model, "judge_score": score, "judge_rationale": rationale, "judge_raw": text})
    return out


def filter_by_score(rows: Sequence[dict], min_score: int) -> tuple[list[dict], list[dict]]:
    """Keep rows scoring at least `min_score`; unparsed judgements are rejected too."""
    kept, rejected = [], []
    for row in rows:
        score = row.get("judge_score")
        if score is None:
            rejected.append({**row, "stage": "filter", "reason": "judge_unparsed", "detail": "judge output had no 1-10 score"})
        elif score < min_score:
            rejected.append({**row, "stage": "filter", "reason": "low_score", "detail": f"judge score {score} < min_score {min_score}"})
        else:
            kept.append(row)
    return kept, rejected
