"""Prompt rendering and length checks: seeds -> chat conversations. Pure logic."""

from __future__ import annotations

from collections.abc import Sequence


def user_text(instruction: str, extra: str = "") -> str:
    """The user turn: the instruction, then its input (if any) after a blank line."""
    return f"{instruction}\n\n{extra}" if extra else instruction


def render_messages(seeds: Sequence[dict], system_prompt: str | None) -> list[dict]:
    """Add `prompt` (user text) and `messages` (chat format) to each seed row."""
    rendered = []
    for seed in seeds:
        prompt = user_text(seed["instruction"], seed.get("input", ""))
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": prompt})
        rendered.append({**seed, "prompt": prompt, "messages": messages})
    return rendered


def over_budget(lengths: Sequence[int], max_tokens: int, max_model_len: int) -> list[str | None]:
    """Per prompt: None if prompt + max_tokens fits the context, else why not."""
    return [
        None if n + max_tokens <= max_model_len
        else f"prompt is {n} tokens; with max_tokens {max_tokens} it exceeds max_model_len {max_model_len}"
        for n in lengths
    ]
