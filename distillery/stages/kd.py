"""Soft targets by teacher forcing, as stages: answers given by the source (`score_targets`),
a teacher's top-K at every token of an answer that exists (`score-<teacher>`), and the
weighted mixture of several teachers' targets (`kd-merge`). Pure: the engine and the other
teachers' shards come in as callables.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from distillery.generation import batched
from distillery.kd import KD_COLUMNS, KDError, conversation, kd_fields, merge
from distillery.schema import content_id
from distillery.stages.contract import ShardOutput

# A teacher's targets for rows scored to be mixed later: the row's id and its four kd_
# columns, at full precision (the mixture is rounded once, when it is published).
TARGETS_SCHEMA = pa.schema([pa.field("id", pa.string()), *kd_fields("float32")])


def given_answer(row: dict, teacher: str, model: str) -> dict:
    """A prompt row with the source's answer (`response`) as the assistant's turn: a row as
    generation would have made it, with finish_reason 'given'."""
    return {**row, "messages": [*row["messages"], {"role": "assistant", "content": row["response"]}],
            "id": content_id(row["messages"], row["response"]), "sample_index": 0, "teacher": teacher,
            "teacher_model": model, "finish_reason": "given", "sampling": '{"scored": true}'}


@dataclass(frozen=True)
class Given:
    """The source's answers as rows; one whose prompt plus answer does not fit the teacher's
    context is rejected (it is scored whole or not at all, never truncated)."""

    teacher: str
    model: str
    system: str | None
    max_model_len: int
    schema: pa.Schema
    count: Callable[[str, list[list[dict]]], list[int]] = field(compare=False, repr=False)
    name: str = "given"
    fanout: int = 1

    def settings(self) -> dict:
        return {"teacher": self.teacher, "model": self.model, "system": self.system, "max_model_len": self.max_model_len}

    def code(self) -> Sequence[Callable]:
        return [Given.run, given_answer, conversation]

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        lengths = self.count(self.model, [conversation(r, self.system) for r in rows])
        kept, rejected = [], []
        for row, n in zip(rows, lengths, strict=True):
            if n > self.max_model_len:
                rejected.append({**row, "stage": "render", "reason": "prompt_too_long",
                                 "detail": f"prompt and answer are {n} tokens; max_model_len is {self.max_model_len}"})
            else:
                kept.append(given_answer(row, self.teacher, self.model))
        return ShardOutput(kept, rejected)


@dataclass(frozen=True)
class Score:
    """One teacher's top-K at every token of each row's answer, by teacher forcing (one
    prompt-logprobs pass, nothing generated). A row that carries its answer's token ids
    (`kd_token_ids`, from generation) is scored on exactly those tokens.

    With `slim`, a shard keeps only the rows' ids and targets (TARGETS_SCHEMA): a teacher
    scored to be mixed with others by `Merge`."""

    teacher: str
    model: str
    system: str | None
    k: int
    engine_settings: dict  # what opens the engine (EngineSpec's fields, logprobs mode included)
    batch_size: int
    schema: pa.Schema
    open_engine: Callable[[], object] = field(compare=False, repr=False)
    slim: bool = False
    fanout: int = 1

    @property
    def name(self) -> str:
        return f"score-{self.teacher}"

    def settings(self) -> dict:
        return {"teacher": self.teacher, "model": self.model, "system": self.system, "k": self.k,
                "engine": self.engine_settings, "slim": self.slim}  # batch_size: it does not change a target

    def code(self) -> Sequence[Callable]:
        return [Score.run, conversation]

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        started = time.perf_counter()
        engine = self.open_engine()
        opened = time.perf_counter() - started
        out = []
        for batch in batched(rows, self.batch_size):
            found = engine.score([conversation(r, self.system) for r in batch], self.k, [r.get("kd_token_ids") for r in batch])
            out += [{"id": r["id"], **t} if self.slim else {**r, **t} for r, t in zip(batch, found, strict=True)]
        return ShardOutput(out, facts={"engine_seconds": opened})


@dataclass(frozen=True)
class Merge:
    """Each row's targets replaced by the weighted mixture of several teachers' (kd.merge).
    `targets(shard)` gives, per teacher in `weights` order, its `Score(slim=True)` rows for
    the same shard, in the same row order."""

    weights: tuple[tuple[str, float], ...]
    schema: pa.Schema
    targets: Callable[[int], list[list[dict]]] = field(compare=False, repr=False)
    name: str = "kd-merge"
    fanout: int = 1

    def settings(self) -> dict:
        return {"weights": [list(w) for w in self.weights]}

    def code(self) -> Sequence[Callable]:
        return [Merge.run, merge]

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        per_teacher = self.targets(shard)
        if any(len(t) != len(rows) for t in per_teacher):
            raise KDError(f"shard {shard}: {len(rows)} rows but the teachers' targets hold {[len(t) for t in per_teacher]}")
        ws = [w for _, w in self.weights]
        out = []
        for i, row in enumerate(rows):
            scored = [teacher[i] for teacher in per_teacher]
            if any(s["id"] != row["id"] for s in scored):
                raise KDError(f"shard {shard} row {i}: the teachers' targets are not for row {row['id']}")
            mixture = merge([{c: s[c] for c in KD_COLUMNS} for s in scored], ws)
            out.append({**row, **mixture})
        return ShardOutput(out)
