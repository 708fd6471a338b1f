"""Knowledge-distillation targets: the teacher's top-K token distributions. Pure logic.

Per kept row, four Arrow list columns sit beside the answer text:

    kd_token_ids       list<int32>             the answer's tokens (hard targets), length T
    kd_token_logprobs  list<float16>           the teacher's logprob of each of them
    kd_topk_ids        list<list<int32>>       at each position t, the top-K ids, best first
    kd_topk_logprobs   list<list<float16>>     their logprobs

Position t holds the distribution that *predicted* token t (given the prompt and
tokens < t), so `kd_topk_ids[t]` is the support for `kd_token_ids[t]`. The ids
index the teacher's vocabulary: the manifest records which (see tokenizer_id).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

KD_COLUMNS = ("kd_token_ids", "kd_token_logprobs", "kd_topk_ids", "kd_topk_logprobs")

# One position's distribution as the engine reports it: token id -> (logprob, rank).
Position = dict[int, tuple[float, "int | None"]]


def kd_fields(dtype: str = "float16") -> list[pa.Field]:
    lp = pa.float16() if dtype == "float16" else pa.float32()
    return [
        pa.field("kd_token_ids", pa.list_(pa.int32())),
        pa.field("kd_token_logprobs", pa.list_(lp)),
        pa.field("kd_topk_ids", pa.list_(pa.list_(pa.int32()))),
        pa.field("kd_topk_logprobs", pa.list_(pa.list_(lp))),
    ]


def with_kd(schema: pa.Schema, dtype: str = "float16") -> pa.Schema:
    return pa.schema([*schema, *kd_fields(dtype)], metadata=schema.metadata)


class KDError(ValueError):
    """Soft targets that do not line up with their tokens: a bug, never silently stored."""


def targets(token_ids: Sequence[int], positions: Sequence[Position], k: int) -> dict:
    """The four kd_ columns of one answer from the engine's per-position distributions.

    Each position holds the top-k entries (ranks 1..k) and, when it fell outside
    them, the sampled/forced token with its true rank.
    """
    if len(token_ids) != len(positions):
        raise KDError(f"{len(token_ids)} tokens but {len(positions)} distributions")
    topk_ids, topk_lps, token_lps = [], [], []
    for t, (tid, dist) in enumerate(zip(token_ids, positions)):
        if tid not in dist:
            raise KDError(f"position {t}: token {tid} has no logprob")
        ranked = sorted((rank, -lp, i) for i, (lp, rank) in dist.items() if rank is not None and rank <= k)
        topk_ids.append([i for _, _, i in ranked[:k]])
        topk_lps.append([dist[i][0] for _, _, i in ranked[:k]])
        token_lps.append(dist[tid][0])
    return {"kd_token_ids": list(token_ids), "kd_token_logprobs": token_lps, "kd_topk_ids": topk_ids, "kd_topk_logprobs": topk_lps}


def conversation(row: dict, system: str | None) -> list[dict]:
    """The row's prompt turns under `system`, then its `response` as the assistant's answer:
    what teacher forcing scores (a trailing assistant turn in `messages` is the answer itself)."""
    turns = [m for m in row["messages"] if m["role"] != "system"]
    if turns and turns[-1]["role"] == "assistant":
        turns = turns[:-1]
    head = [{"role": "system", "content": system}] if system else []
    return [*head, *turns, {"role": "assistant", "content": row["response"]}]


def merge(per_teacher: Sequence[dict], weights: Sequence[float]) -> dict:
    """One mixture from several teachers' targets for the same tokens.

    At each position p(id) = sum_j w_j * p_j(id) over the union of the teachers'
    top-K ids (p_j = 0 outside teacher j's top-K), renormalized over that union
    and sorted best first. The token logprob is the same mixture's value for the
    answer's own token (renormalized the same way; -inf if no teacher ranked it).
    """
    if not per_teacher:
        raise KDError("no teachers to merge")
    tokens = per_teacher[0]["kd_token_ids"]
    if any(list(p["kd_token_ids"]) != list(tokens) for p in per_teacher):
        raise KDError("teachers scored different tokens; merge needs the same answer tokens from each")
    total = sum(weights)
    ws = [w / total for w in weights]
    out_ids, out_lps, token_lps = [], [], []
    for t, tid in enumerate(tokens):
        mass: dict[int, float] = {}
        for w, p in zip(ws, per_teacher):
            for i, lp in zip(p["kd_topk_ids"][t], p["kd_topk_logprobs"][t]):
                mass[i] = mass.get(i, 0.0) + w * math.exp(lp)
        z = sum(mass.values())
        ranked = sorted(mass.items(), key=lambda kv: (-kv[1], kv[0]))
        out_ids.append([i for i, _ in ranked])
        out_lps.append([math.log(m / z) for _, m in ranked])
        token_lps.append(math.log(mass[tid] / z) if tid in mass else -math.inf)
    return {"kd_token_ids": list(tokens), "kd_token_logprobs": token_lps, "kd_topk_ids": out_ids, "kd_topk_logprobs": out_lps}


def entries(rows: Sequence[dict]) -> int:
    """Stored (token, k) entries: the unit of the bytes-per-entry figure."""
    return sum(len(ids) for r in rows for ids in (r.get("kd_topk_ids") or []))


def _round_half(values: np.ndarray, bits: int) -> np.ndarray:
    """float16 values with only `bits` of their 10 mantissa bits (round to nearest)."""
    drop = 10 - bits
    if drop <= 0:
        return values
    raw = values.astype(np.float16).view(np.uint16).astype(np.uint32)
    finite = np.isfinite(values)
    rounded = ((raw + (1 << (drop - 1))) >> drop << drop).astype(np.uint16).view(np.float16)
    return np.where(finite, rounded, values.astype(np.float16))


def _map_leaves(array: pa.Array, fn):
    """Apply `fn` to the flat values of a (nested) list array, keeping offsets and nulls."""
    if pa.types.is_list(array.type):
        inner = _map_leaves(array.values, fn)
        return pa.ListArray.from_arrays(array.offsets, inner, mask=array.is_null() if array.null_count else None)
    return fn(array)


def round_logprobs(table: pa.Table, bits: int) -> pa.Table:
    """The kd_ logprob columns rounded to `bits` mantissa bits (float16 only; 10 keeps all).

    The teacher computes in bf16 (7 mantissa bits), so logprobs carry about that
    much precision; rounding the rest away lets zstd squeeze the column.
    """
    for name in ("kd_token_logprobs", "kd_topk_logprobs"):
        if name not in table.column_names or table.schema.field(name).type not in (pa.list_(pa.float16()), pa.list_(pa.list_(pa.float16()))):
            continue
        column = table.column(name).combine_chunks()
        rounded = _map_leaves(column, lambda a: pa.array(_round_half(a.to_numpy(zero_copy_only=False), bits), type=pa.float16()))
        table = table.set_column(table.column_names.index(name), table.schema.field(name), rounded)
    return table
