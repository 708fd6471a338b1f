"""Turning engine completions into dataset rows. Pure logic."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime

from distillery.schema import content_id


def batched(rows: Sequence[dict], size: int) -> Iterator[Sequence[dict]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def sampling_kwargs(n: int, temperature: float, top_p: float, max_tokens: int, seed: int | None) -> dict:
    """vLLM SamplingParams keyword arguments (also stored, as JSON, with every row)."""
    return {"n": n, "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "seed": seed}


def attach_completions(
    rows: Sequence[dict],
    completions: Sequence[Sequence[dict]],
    teacher: str,
    teacher_model: str,
    sampling: dict,
    created_at: datetime,
) -> list[dict]:
    """One output row per completion; its id hashes the conversation and the answer."""
    settings = json.dumps(sampling, sort_keys=True)
    out = []
    for row, samples in zip(rows, completions, strict=True):
        for sample in samples:
            messages = [*row["messages"], {"role": "assistant", "content": sample["response"]}]
            out.append({
                **row,
                **{k: v for k, v in sample.items() if k != "top_logprobs"},
                "id": content_id(row["messages"], sample["response"]),
                "teacher": teacher,
                "messages": messages,
                "teacher_model": teacher_model,
                "sampling": settings,
                "created_at": created_at,
            })
    return out
