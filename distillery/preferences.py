"""Chosen/rejected pairs from judged completions. Pure logic.

Per prompt: the best and the worst completion by judge score; a pair needs
at least `min_margin` points between them. With a pairwise check, the judge
must prefer the chosen one in both orders. Every prompt ends as one pair or
one exclusion with its reason.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from distillery.schema import content_id


def score_of(row: dict) -> float:
    """The finest score a row has: the logprob-expected score if judged so, else the integer one."""
    expected = row.get("judge_score_expected")
    return float(expected if expected is not None else row["judge_score"])


def _rank(row: dict) -> tuple:
    return (score_of(row), row["id"])


def candidate_pairs(rows: Sequence[dict], seed_ids: Sequence[str], min_margin: float) -> tuple[list[tuple[dict, dict]], list[dict]]:
    """(best, worst) per prompt, and one exclusion row for every prompt without a pair."""
    by_seed: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row.get("judge_score") is not None:
            by_seed[row["seed_id"]].append(row)
    pairs, excluded = [], []
    for seed in dict.fromkeys(seed_ids):
        group = by_seed.get(seed, [])
        if len(group) < 2:
            excluded.append(_excluded(seed, group, "too_few_completions", f"{len(group)} scored completion(s); a pair needs 2"))
            continue
        best, worst = max(group, key=_rank), min(group, key=_rank)
        gap = round(score_of(best) - score_of(worst), 4)
        if gap < min_margin or best is worst:
            excluded.append(_excluded(seed, group, "score_tie", f"best-worst score gap {gap} < min_margin {min_margin}"))
            continue
        pairs.append((best, worst))
    return pairs, excluded


def confirm_pairs(pairs: Sequence[tuple[dict, dict]], verdicts: Sequence[str] | None) -> tuple[list[tuple[dict, dict, str]], list[dict]]:
    """Keep pairs the pairwise judge confirms in both orders (verdict 'x': the chosen wins)."""
    if verdicts is None:
        return [(c, r, "not_checked") for c, r in pairs], []
    kept, excluded = [], []
    reasons = {"tie": "pairwise_tie", "inconsistent": "pairwise_inconsistent", "y": "pairwise_disagrees"}
    for (chosen, rejected), verdict in zip(pairs, verdicts, strict=True):
        if verdict == "x":
            kept.append((chosen, rejected, verdict))
        else:
            detail = {"tie": "judge called it a tie in both orders", "inconsistent": "the two orders disagree (position bias)", "y": "the judge preferred the lower-scored response in both orders"}[verdict]
            excluded.append(_excluded(chosen["seed_id"], [chosen, rejected], reasons[verdict], detail))
    return kept, excluded


def _excluded(seed: str, group: Sequence[dict], reason: str, detail: str) -> dict:
    prompt = group[0]["prompt"] if group else None
    return {"seed_id": seed, "stage": "preferences", "reason": reason, "detail": detail, "prompt": prompt,
            "id": content_id("excluded", seed, reason)}


def preference_rows(kept: Sequence[tuple[dict, dict, str]], judge_model: str, run_id: str, created_at: datetime) -> list[dict]:
    """Rows in TRL's conversational preference format: prompt, chosen, rejected as messages.

    The prompt is the conversation the chosen answer was generated from, its system
    message included: DPO should train the student on the context the answers had.
    (With extra teachers of other system prompts, the rejected answer may have had another.)
    """
    out = []
    for chosen, rejected, verdict in kept:
        prompt = chosen["messages"][:-1]
        out.append({
            "id": content_id(prompt, chosen["response"], rejected["response"]),
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen["response"]}],
            "rejected": [{"role": "assistant", "content": rejected["response"]}],
            "seed_id": chosen["seed_id"],
            "score_chosen": score_of(chosen),
            "score_rejected": score_of(rejected),
            "chosen_teacher": chosen["teacher"],
            "rejected_teacher": rejected["teacher"],
            "chosen_id": chosen["id"],
            "rejected_id": rejected["id"],
            "judge_model": judge_model,
            "pairwise_verdict": verdict,
            "run_id": run_id,
            "created_at": created_at,
        })
    return out
