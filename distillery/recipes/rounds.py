"""What every synthesis recipe does with its candidates: check each, keep it or reject it
with a reason, and count each round. One verdict type and one round checker for all of
them (Self-Instruct, Evol-Instruct, textbook, doc->query). Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Verdict:
    """Keep a candidate, or reject it with a reason (a short code) and a detail (for people).
    `facts` are what the check measured, for the kept row's lineage (e.g. a BM25 rank)."""

    keep: bool
    reason: str | None = None
    detail: str | None = None
    facts: dict = field(default_factory=dict)


@dataclass
class Rounds:
    """A synthesis recipe's candidates, round by round: kept rows, rejected rows (stage
    'synthesize', with reason and detail) and per-round counts. Every candidate checked
    ends in exactly one of the two lists."""

    kept: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)

    def check(self, number: int, candidates: Sequence[T], verdict: Callable[[T], Verdict],
              kept: Callable[[T, Verdict], dict], rejected: Callable[[T, Verdict], dict], **counts) -> list[bool]:
        """Round `number`: each candidate's verdict, then `kept(c, v)` or `rejected(c, v)` makes
        its row (called before the row is added, so `len(self.kept)` is the count so far).
        `counts` go into the round's record. Returns per candidate whether it was kept."""
        reasons: Counter[str] = Counter()
        before, flags = len(self.kept), []
        for candidate in candidates:
            v = verdict(candidate)
            flags.append(v.keep)
            if v.keep:
                self.kept.append(kept(candidate, v))
            else:
                reasons[v.reason] += 1
                self.rejected.append({**rejected(candidate, v), "stage": "synthesize", "reason": v.reason, "detail": v.detail})
        self.rounds.append({"round": number, **counts, "proposed": len(candidates), "kept": len(self.kept) - before,
                            "rejected_by_reason": dict(sorted(reasons.items()))})
        return flags
