"""A reference knowledge-distillation loss and batch builder for trainers.

torch is imported inside the functions: importing this module is cheap.

Alignment, the one thing to get right
-------------------------------------
A causal LM's logits at sequence index i are its prediction for the token at
index i + 1. `batch_from_rows` lays a row out as

    input_ids = prompt_ids (chat template, generation prompt on) + kd_token_ids

with the response tokens copied verbatim from the row (never re-tokenized), so
for response token t (0-based) of row b, with P = prompt_lens[b]:

    input_ids[b, P + t]  == kd_token_ids[t] == target_ids[b, t]
    positions[b, t]      == P + t - 1        (the logits index that predicts it)
    labels[b, P + t]     == kd_token_ids[t]   (HF-style; -100 elsewhere)

`response_logits(logits, positions)` gathers logits[b, positions[b, t]] into a
[B, T, V] tensor whose slot t lines up with target_ids[:, t], topk_ids[:, t]
and topk_logprobs[:, t]; that is what `kd_loss` takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distillery.errors import DistilleryError

KD_COLUMNS = ("kd_token_ids", "kd_token_logprobs", "kd_topk_ids", "kd_topk_logprobs")
IGNORE_INDEX = -100


class KdBatchError(DistilleryError, ValueError):
    """A row that cannot be turned into KD training inputs; the message names the row."""


def kd_loss(student_logits, topk_ids, topk_logprobs, target_ids, mask=None, alpha: float = 0.5, temperature: float = 1.0):
    """Top-K forward KL to the teacher plus cross-entropy on the hard targets.

    student_logits [B, T, V]: the student's logits that predict response token t
        (see `response_logits`); topk_ids [B, T, K] (long); topk_logprobs
        [B, T, K] the teacher's log-softmax over its full vocabulary at those
        ids; target_ids [B, T] (long); mask [B, T] bool, True where a real
        response token is (None: all).

    KL(p || q) at each position over the K teacher ids, with
        p = softmax(topk_logprobs / temperature)                (teacher, renormalized over the K ids)
        q = log_softmax(student_logits / temperature) gathered at the K ids,
            renormalized over them (minus their logsumexp)
    CE  = -log_softmax(student_logits)[target_ids]              (temperature 1)
    loss = alpha * KL * temperature**2 + (1 - alpha) * CE, each averaged over
    the unmasked positions of the whole batch (a token-level mean).

    Returns (loss, {"kl": float, "ce": float}) where kl is the mean KL before
    the temperature**2 factor. With no unmasked position the loss is a zero
    that still carries a graph.
    """
    import torch

    if student_logits.dim() != 3:
        raise ValueError(f"student_logits must be [B, T, V], got shape {tuple(student_logits.shape)}")
    b, t, _ = student_logits.shape
    if topk_ids.shape[:2] != (b, t) or topk_logprobs.shape != topk_ids.shape or target_ids.shape != (b, t):
        raise ValueError(
            f"shapes disagree: student_logits {tuple(student_logits.shape)}, topk_ids {tuple(topk_ids.shape)}, "
            f"topk_logprobs {tuple(topk_logprobs.shape)}, target_ids {tuple(target_ids.shape)}"
        )
    if mask is None:
        mask = torch.ones(b, t, dtype=torch.bool, device=student_logits.device)
    mask = mask.bool()
    # half-precision logits are upcast; float32/float64 keep their precision
    logits = student_logits.float() if student_logits.dtype in (torch.float16, torch.bfloat16) else student_logits
    topk_ids = topk_ids.long()
    teacher = topk_logprobs.to(logits.dtype)

    # Teacher: renormalized over its K ids. log p via log_softmax keeps -inf entries (p = 0) exact.
    log_p = torch.log_softmax(teacher / temperature, dim=-1)
    p = log_p.exp()
    # Student: full-vocabulary log-probs at the K ids, renormalized over them.
    log_q_full = torch.log_softmax(logits / temperature, dim=-1).gather(-1, topk_ids)
    log_q = log_q_full - torch.logsumexp(log_q_full, dim=-1, keepdim=True)
    # p * (log p - log q), with 0 where p == 0 (0 * -inf would be nan).
    kl_terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    kl = kl_terms.sum(-1)  # [B, T]

    ce = -torch.log_softmax(logits, dim=-1).gather(-1, target_ids.long().clamp_min(0).unsqueeze(-1)).squeeze(-1)

    n = mask.sum()
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    kl_mean = torch.where(mask, kl, zero).sum() / n.clamp_min(1)
    ce_mean = torch.where(mask, ce, zero).sum() / n.clamp_min(1)
    loss = alpha * kl_mean * temperature**2 + (1 - alpha) * ce_mean
    if int(n) == 0:
        loss = logits.sum() * 0.0
    return loss, {"kl": float(kl_mean.detach()), "ce": float(ce_mean.detach())}


def response_logits(logits, positions):
    """logits [B, L, V] and positions [B, T] -> [B, T, V]: slot t holds the logits that predict response token t."""
    import torch

    rows = torch.arange(logits.shape[0], device=logits.device).unsqueeze(1)
    return logits[rows, positions.to(logits.device)]


def _ids(value: Any) -> list[int]:
    return [int(v) for v in value]


def prompt_ids(tokenizer, messages: Sequence[dict]) -> list[int]:
    """The chat-template ids of `messages` with the generation prompt on (the assistant header).

    transformers 5 returns a BatchEncoding from `apply_chat_template(...,
    tokenize=True)` unless `return_dict=False`; both shapes are accepted here.
    """
    conversation = [{"role": m["role"], "content": m["content"]} for m in messages]
    try:
        out = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=False)
    except TypeError:  # an older tokenizer without return_dict
        out = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
    if hasattr(out, "keys"):
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    if out and isinstance(out[0], (list, tuple)):
        if len(out) != 1:
            raise KdBatchError(f"apply_chat_template returned {len(out)} sequences for one conversation")
        out = out[0]
    return _ids(out)


def batch_from_rows(rows: list[dict], tokenizer, max_len: int | None = None) -> dict:
    """KD training tensors for kept rows (dicts as Parquet gives them).

    Each row needs `messages` (the last one the assistant's answer) and the
    four kd_ columns. The answer's text is not used: the response tokens are
    the stored `kd_token_ids`, the ids the teacher's soft targets belong to.

    Returned (B rows, L = longest prompt+response, T = longest response, K):
      input_ids      [B, L] long   prompt ids + kd_token_ids, right-padded with the pad id
      attention_mask [B, L] long   1 on real tokens
      labels         [B, L] long   kd_token_ids at their own indices, -100 elsewhere (HF-style, unshifted)
      prompt_lens    [B]    long   P, the number of prompt ids of each row
      response_lens  [B]    long   the number of response tokens kept (after max_len)
      positions      [B, T] long   P + t - 1: the logits index predicting response token t (0 where padded)
      target_ids     [B, T] long   kd_token_ids (0 where padded)
      token_logprobs [B, T] float32 kd_token_logprobs (0 where padded)
      topk_ids       [B, T, K] long    kd_topk_ids (0 where padded)
      topk_logprobs  [B, T, K] float32 kd_topk_logprobs (0 where padded)
      mask           [B, T] bool   True on real response tokens
      gather         callable: logits [B, L, V] -> [B, T, V], i.e. response_logits(logits, positions)
                     (not a tensor: skip it when moving the batch to a device)

    So `kd_loss(batch["gather"](model(input_ids, attention_mask).logits),
    topk_ids, topk_logprobs, target_ids, mask)`.

    max_len cuts the response (never the prompt) so that P + T <= max_len; a
    row whose prompt alone fills max_len is an error.
    """
    import numpy as np
    import torch

    if not rows:
        raise KdBatchError("batch_from_rows got no rows")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad_id = int(pad_id) if pad_id is not None else 0

    built = []
    k = None
    for i, row in enumerate(rows):
        name = f"row {row.get('id', i)!s}"
        missing = [c for c in KD_COLUMNS if row.get(c) is None]
        if missing:
            raise KdBatchError(f"{name}: {', '.join(missing)} is null; the dataset was built without kd.top_k (rebuild with it set)")
        messages = list(row.get("messages") or [])
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise KdBatchError(f"{name}: messages must end with the assistant's answer after at least one prompt message")
        target = _ids(row["kd_token_ids"])
        n = len(target)
        token_lp = np.asarray(row["kd_token_logprobs"], dtype=np.float32).reshape(-1)
        topk = [np.asarray(v, dtype=np.int64).reshape(-1) for v in row["kd_topk_ids"]]
        topk_lp = [np.asarray(v, dtype=np.float32).reshape(-1) for v in row["kd_topk_logprobs"]]
        if not (len(token_lp) == len(topk) == len(topk_lp) == n):
            raise KdBatchError(
                f"{name}: kd columns disagree in length (kd_token_ids {n}, kd_token_logprobs {len(token_lp)}, "
                f"kd_topk_ids {len(topk)}, kd_topk_logprobs {len(topk_lp)}); the shard is corrupt"
            )
        for a, b_ in zip(topk, topk_lp):
            if k is None:
                k = len(a)
            if len(a) != k or len(b_) != k:
                raise KdBatchError(f"{name}: top-K lists of different sizes ({len(a)}/{len(b_)}, expected {k}); the shard is corrupt")
        prompt = prompt_ids(tokenizer, messages[:-1])
        if max_len is not None:
            if len(prompt) >= max_len:
                raise KdBatchError(f"{name}: the prompt alone is {len(prompt)} tokens, max_len is {max_len}; raise max_len or drop the row")
            n = min(n, max_len - len(prompt))
        built.append((prompt, target[:n], token_lp[:n], topk[:n], topk_lp[:n]))
    k = k or 1

    bsz = len(built)
    seq = max(len(p) + len(t) for p, t, *_ in built)
    tmax = max(1, max(len(t) for _, t, *_ in built))
    input_ids = torch.full((bsz, seq), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((bsz, seq), dtype=torch.long)
    labels = torch.full((bsz, seq), IGNORE_INDEX, dtype=torch.long)
    prompt_lens = torch.zeros(bsz, dtype=torch.long)
    response_lens = torch.zeros(bsz, dtype=torch.long)
    positions = torch.zeros((bsz, tmax), dtype=torch.long)
    target_ids = torch.zeros((bsz, tmax), dtype=torch.long)
    token_logprobs = torch.zeros((bsz, tmax), dtype=torch.float32)
    topk_ids = torch.zeros((bsz, tmax, k), dtype=torch.long)
    topk_logprobs = torch.zeros((bsz, tmax, k), dtype=torch.float32)
    mask = torch.zeros((bsz, tmax), dtype=torch.bool)

    for b, (prompt, target, token_lp, topk, topk_lp) in enumerate(built):
        p, n = len(prompt), len(target)
        ids = torch.tensor(prompt + target, dtype=torch.long)
        input_ids[b, : p + n] = ids
        attention_mask[b, : p + n] = 1
        prompt_lens[b], response_lens[b] = p, n
        if n == 0:
            continue
        labels[b, p : p + n] = ids[p:]
        positions[b, :n] = torch.arange(p - 1, p - 1 + n)  # logits at P + t - 1 predict token P + t
        target_ids[b, :n] = ids[p:]
        token_logprobs[b, :n] = torch.from_numpy(np.ascontiguousarray(token_lp))
        topk_ids[b, :n] = torch.from_numpy(np.stack(topk))
        topk_logprobs[b, :n] = torch.from_numpy(np.stack(topk_lp))
        mask[b, :n] = True

    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "prompt_lens": prompt_lens,
        "response_lens": response_lens,
        "positions": positions,
        "target_ids": target_ids,
        "token_logprobs": token_logprobs,
        "topk_ids": topk_ids,
        "topk_logprobs": topk_logprobs,
        "mask": mask,
        "gather": lambda logits: response_logits(logits, positions),
    }


__all__ = ["IGNORE_INDEX", "KD_COLUMNS", "KdBatchError", "batch_from_rows", "kd_loss", "prompt_ids", "response_logits"]
