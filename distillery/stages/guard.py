"""The guard stage: what may not go into training, removed after generation, before dedup.

Per row, in this order (the first that applies is the row's reason):
- `contaminated`: its prompt copies an evaluation item (Tulu 3's 8-gram rule), or with
  `answers` its answer shares a 13-gram with one; detail names the set, item and coverage;
- `identity_claim`, `vendor_policy`, `cutoff_claim`: its answer leaks an identity
  (distillery/guards/identity.py); detail is the matched text and its language;
- `repetitive`: its answer is past a Gopher repetition limit; detail names the limit.
Rejected rows go to rejected/ with stage 'guard'. Kept rows carry `guard_flags`: the
'As an AI language model' boilerplate, and with identity action 'flag' the leaks.
Record facts count every reason and flag per teacher, and name the contaminated items.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from distillery.guards.decontam import ContamHit, EvalIndex
from distillery.guards.identity import REJECT_REASONS, IdentityGuard, IdentityHit
from distillery.guards.repetition import GOPHER_LIMITS, repetition
from distillery.stages.contract import ShardOutput

CONTAMINATED, REPETITIVE = "contaminated", "repetitive"


@dataclass(frozen=True)
class Guard:
    schema: pa.Schema
    identity: IdentityGuard | None = None
    identity_action: str = "reject"
    repetition_min_words: int | None = None  # None: no repetition guard
    decontam: dict | None = None  # settings: eval items' digest, ngram, threshold, answers, answer_ngram
    indexes: Callable[[], tuple[EvalIndex, EvalIndex | None]] | None = None  # (prompt index, answer index)
    name: str = "guard"
    fanout: int = 1

    def settings(self) -> dict:
        identity = None if self.identity is None else {
            "name": self.identity.name, "maker": self.identity.maker, "vendors": list(self.identity.vendors),
            "action": self.identity_action}
        return {"identity": identity, "repetition": self.repetition_min_words, "decontam": self.decontam,
                "limits": GOPHER_LIMITS if self.repetition_min_words is not None else None}

    def code(self) -> Sequence[Callable]:
        return [Guard.run, Guard._verdict, identity_verdict, IdentityGuard.check, repetition, EvalIndex.match, EvalIndex.any_hit, contam_detail]

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        prompt_hits: list[ContamHit | None] = [None] * len(rows)
        answer_hits: list[ContamHit | None] = [None] * len(rows)
        if self.decontam is not None and self.indexes is not None:
            prompts, answers = self.indexes()
            prompt_hits = prompts.match([r.get("prompt") or "" for r in rows], self.decontam["threshold"])
            if answers is not None:
                answer_hits = answers.any_hit([r.get("response") or "" for r in rows])
        kept, rejected, facts = [], [], Counter()
        for row, on_prompt, on_answer in zip(rows, prompt_hits, answer_hits):
            reason, detail, flags = self._verdict(row, on_prompt, on_answer)
            teacher = row.get("teacher") or ""
            for flag in flags:
                facts[f"flag:{flag}:{teacher}"] += 1
            if reason is None:
                kept.append({**row, "guard_flags": flags or None})
                continue
            facts[f"reject:{reason}:{teacher}"] += 1
            hit = on_prompt or on_answer
            if reason == CONTAMINATED:
                facts[f"contam:{hit.eval_set}:{hit.item_id}"] = 1
            rejected.append({**row, "stage": self.name, "reason": reason, "detail": detail})
        return ShardOutput(kept, rejected, facts=dict(facts))

    def _verdict(self, row: dict, on_prompt: ContamHit | None, on_answer: ContamHit | None) -> tuple[str | None, str | None, list[str]]:
        """(reject reason or None, its detail, flags of a kept row)."""
        if on_prompt is not None:
            return CONTAMINATED, contam_detail(on_prompt, "prompt", self.decontam["ngram"]), []
        if on_answer is not None:
            return CONTAMINATED, contam_detail(on_answer, "answer", self.decontam["answer_ngram"]), []
        flags: list[str] = []
        answer = row.get("response") or ""
        if self.identity is not None:
            hit, flags = identity_verdict(self.identity, [(row.get("prompt"), answer)], self.identity_action)
            if hit is not None:
                return hit.reason, f"matched {hit.matched!r} ({hit.language})", []
        if self.repetition_min_words is not None:
            hit = repetition(answer, min_words=self.repetition_min_words)
            if hit is not None:
                return REPETITIVE, f"{hit.limit} {hit.value:.3f} > {hit.bound}", []
        return None, None, flags


def identity_verdict(guard: IdentityGuard, turns: list[tuple[str | None, str]], action: str) -> tuple[IdentityHit | None, list[str]]:
    """Over (prompt, answer) turns: the first leak to reject (action 'reject'), else None and
    the reasons to flag on the kept row."""
    flags: list[str] = []
    for prompt, text in turns:
        for hit in guard.check(text, prompt):
            if hit.reason in REJECT_REASONS and action == "reject":
                return hit, []
            if hit.reason not in flags:
                flags.append(hit.reason)
    return None, flags


def contam_detail(hit: ContamHit, where: str, ngram: int) -> str:
    return f"{hit.eval_set} item {hit.item_id}: {hit.coverage:.0%} of its tokens in {ngram}-grams shared with the {where}"


def guard_counts(facts: dict) -> dict:
    """The guard's record facts summed over shards -> {"rejected": {reason: {teacher: n}},
    "flagged": {flag: {teacher: n}}, "contaminated_items": {eval set: n distinct items}}."""
    out: dict = {"rejected": {}, "flagged": {}, "contaminated_items": {}}
    for key, n in facts.items():
        kind, _, rest = key.partition(":")
        if kind in ("reject", "flag"):
            what, _, teacher = rest.partition(":")
            table = out["rejected" if kind == "reject" else "flagged"].setdefault(what, {})
            table[teacher] = table.get(teacher, 0) + int(n)
        elif kind == "contam":
            eval_set = rest.partition(":")[0]
            out["contaminated_items"][eval_set] = out["contaminated_items"].get(eval_set, 0) + 1
    return out
