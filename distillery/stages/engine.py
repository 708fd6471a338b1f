"""The stages that call a model: fit (prompt lengths), generate (one per teacher), judge,
and the score filter. Pure: the model comes in as callables (a token counter, a batch
runner, an engine opener), so these stages run on vLLM in a flow and on a stand-in in
unit tests.

Engine start is reported as the fact `engine_seconds` (generate: the seconds its batches
spent opening the engine; judge: opening it for the shard), so the build counts it as
engine start, not work.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from distillery.generation import attach_completions, batched
from distillery.judge import absolute_messages, apply_judgements, filter_by_score, parse_judgement
from distillery.prompts import over_budget, render_messages
from distillery.stages.contract import ShardOutput
from distillery.stages.prompts import PROMPT_SCHEMA
from distillery.stages.staged import nullable


@dataclass(frozen=True)
class Fit:
    """Reject prompts that do not fit some teacher's context with its max_tokens."""

    teachers: tuple[tuple[str, str, str | None, int], ...]  # (name, model, system prompt, max_tokens)
    max_model_len: int
    count: Callable[[str, list[list[dict]]], list[int]] = field(compare=False, repr=False)
    schema: pa.Schema = field(default=PROMPT_SCHEMA, compare=False)
    name: str = "fit"
    fanout: int = 1

    def settings(self) -> dict:
        return {"teachers": [list(t) for t in self.teachers], "max_model_len": self.max_model_len}

    def code(self) -> Sequence[Callable]:
        return [Fit.run, over_budget, render_messages]

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        why: dict[int, str] = {}
        for name, model, system, max_tokens in self.teachers:
            lengths = self.count(model, [r["messages"] for r in render_messages(rows, system)])
            for i, reason in enumerate(over_budget(lengths, max_tokens, self.max_model_len)):
                if reason is not None:
                    why.setdefault(i, f"{reason} (teacher {name})")
        kept = [r for i, r in enumerate(rows) if i not in why]
        rejected = [{**r, "stage": "render", "reason": "prompt_too_long", "detail": why[i]} for i, r in enumerate(rows) if i in why]
        return ShardOutput(kept, rejected)


@dataclass(frozen=True)
class Generate:
    """One teacher's completions (n per prompt) for a shard of prompts, in engine batches.

    `complete(batch) -> (rows, engine seconds[, refused rows])` runs one batch: in a flow, a task
    run cached by content (tasks/generate.py), so a batch already generated for any output is
    reused. Refused rows (an endpoint's 4xx) are rejected per prompt with the server's reason."""

    teacher: str
    model: str
    system: str | None
    params: dict  # vLLM SamplingParams arguments (+ kd_top_k)
    engine_settings: dict  # what opens the engine (EngineSpec's fields)
    batch_size: int
    schema: pa.Schema
    complete: Callable[[list[dict]], tuple[list[dict], float]] = field(compare=False, repr=False)

    @property
    def name(self) -> str:
        return f"generate-{self.teacher}"

    @property
    def fanout(self) -> int:
        return self.params["n"]

    def settings(self) -> dict:
        return {"teacher": self.teacher, "model": self.model, "system": self.system, "params": self.params,
                "engine": self.engine_settings}  # batch_size left out: it does not change a completion

    def code(self) -> Sequence[Callable]:
        return [Generate.run, attach_completions, render_messages]

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        out, refused, opened = [], [], 0.0
        for batch in batched(render_messages(rows, self.system), self.batch_size):
            done, seconds, *rest = self.complete(list(batch))  # an endpoint's also: the rows it refused
            out += done
            refused += rest[0] if rest else []
            opened += seconds
        return ShardOutput(out, refused, facts={"engine_seconds": opened,
                                       "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in out),
                                       "completion_tokens": sum(r.get("completion_tokens") or 0 for r in out)})


@dataclass(frozen=True)
class Judge:
    """Scores 1-10 (with rationale and aspects, or by logprobs) for a shard of rows."""

    model: str
    rubric: str
    aspects: tuple[str, ...]
    method: str
    params: dict
    extra: dict  # structured-output arguments (regex) or continue_final
    batch_size: int
    max_model_len: int
    schema: pa.Schema
    open_engine: Callable[[], object] = field(compare=False, repr=False)
    on_batch: Callable[[int], None] | None = field(default=None, compare=False, repr=False)
    name: str = "judge"
    fanout: int = 1

    def settings(self) -> dict:
        return {"model": self.model, "rubric": self.rubric, "aspects": list(self.aspects), "method": self.method,
                "params": self.params, "extra": self.extra, "max_model_len": self.max_model_len}

    def code(self) -> Sequence[Callable]:
        return [Judge.run, absolute_messages, apply_judgements, over_budget, _ask_again_once]

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        started = time.perf_counter()
        engine = self.open_engine()
        opened = time.perf_counter() - started  # engine start, when this shard opened it
        scored, rejected, tokens = [], [], [0, 0]
        for batch in batched(rows, self.batch_size):
            convs = [absolute_messages(self.rubric, r["prompt"], r["response"], self.aspects, self.method) for r in batch]
            verdicts = over_budget(engine.count_prompt_tokens(convs), self.params["max_tokens"], self.max_model_len)
            fits = [(r, c) for r, c, why in zip(batch, convs, verdicts) if why is None]
            rejected += [{**r, "stage": "judge", "reason": "judge_prompt_too_long", "detail": why}
                         for r, why in zip(batch, verdicts) if why is not None]
            outputs = engine.chat([c for _, c in fits], self.params, **self.extra)
            refused = {i: o[0]["error"] for i, o in enumerate(outputs) if o and "error" in o[0]}  # an endpoint's 4xx
            rejected += [{**fits[i][0], "stage": "judge", "reason": "endpoint_error", "detail": why} for i, why in refused.items()]
            answered = [(r, o[0]) for i, ((r, _), o) in enumerate(zip(fits, outputs)) if i not in refused]
            if self.method == "structured" and not getattr(engine, "holds_format", True):
                answered = _ask_again_once(engine, [(r, c) for i, (r, c) in enumerate(fits) if i not in refused], answered,
                                           self.params, self.aspects)
            tokens[0] += sum(o.get("prompt_tokens") or 0 for _, o in answered)
            tokens[1] += sum(o.get("completion_tokens") or 0 for _, o in answered)
            scored += apply_judgements([r for r, _ in answered], [o for _, o in answered], self.model, self.aspects, self.method)
            if self.on_batch:
                self.on_batch(len(batch))
        scores = Counter(r["judge_score"] for r in scored)
        return ShardOutput(scored, rejected, facts={"engine_seconds": opened, "prompt_tokens": tokens[0], "completion_tokens": tokens[1],
                                                    **{f"score_{k if k is not None else 'none'}": n for k, n in scores.items()}})


def _ask_again_once(engine, fits: list[tuple[dict, list]], answered: list[tuple[dict, dict]], params: dict,
                    aspects: tuple[str, ...]) -> list[tuple[dict, dict]]:
    """A judge that cannot be held to the format (an endpoint without structured outputs):
    judgements that do not parse are asked for once more; the second answer stands."""
    again = [i for i, (_, o) in enumerate(answered) if parse_judgement(o["response"], aspects)[0] is None]
    if not again:
        return answered
    second = engine.chat([fits[i][1] for i in again], params)
    out = list(answered)
    for i, o in zip(again, second):
        if o and "error" not in o[0]:
            out[i] = (answered[i][0], o[0])
    return out


def score_counts(facts: dict) -> Counter:
    """A judge stage's score counts (facts score_1..score_10, score_none) -> {score or None: rows}."""
    return Counter({(None if k == "score_none" else int(k[6:])): int(v) for k, v in facts.items() if k.startswith("score_")})


@dataclass(frozen=True)
class Filter:
    """Keep rows the judge scored at least `min_score`; reject the rest with their score."""

    min_score: int
    schema: pa.Schema
    name: str = "filter"
    fanout: int = 1

    def settings(self) -> dict:
        return {"min_score": self.min_score}

    def code(self) -> Sequence[Callable]:
        return [filter_by_score]

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        kept, rejected = filter_by_score(rows, self.min_score)
        scores = [r["judge_score"] for r in kept if r.get("judge_score") is not None]
        return ShardOutput(kept, rejected, facts={"score_sum": float(sum(scores)), "scored": len(scores)})


def staged_schema(schema: pa.Schema, *extra: pa.Field) -> pa.Schema:
    """A staged row schema: the published one, nullable, with the in-memory `prompt` key kept
    as `prompt_text` (schema.STORED_AS) and extra fields (dedup's duplicate_of) added."""
    fields = list(nullable(schema))
    return pa.schema(fields + [f for f in extra if f.name not in schema.names], metadata=schema.metadata)
