"""Dedup across shards, in three stages that never hold the text of more than a shard.

1. `Signatures` (per shard): each row's exact key and MinHash signature, or why it has none.
2. `find_duplicates` (once per build): reads only signature shards (and the cross-run
   index), runs exact + LSH dedup over the whole build, returns the rows that go.
3. `ApplyDrops` (per shard): rows not on the drop list are kept with their cluster;
   the rest are rejected with the reason and detail the in-memory dedup gives.

The result equals `deduplicate_rows` on all rows at once (tests/test_stages.py checks).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pyarrow as pa

from distillery.dedup import DedupParams, Deduplicator, dedup_text, dedup_verdict, prepare
from distillery.exact import keys_to_arrow
from distillery.stages.contract import ShardOutput


def row_id(row: dict) -> str:
    """A completion's id; a prompt (deduped before generation) goes by its seed's."""
    return row.get("id") or row["seed_id"]


def signature_schema(num_perm: int) -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string()),
        pa.field("exact_key", pa.binary(16)),
        pa.field("signature", pa.list_(pa.uint32(), num_perm)),
        pa.field("invalid", pa.string()),  # missing_field / empty_field: not compared
        pa.field("score", pa.float32()),
    ])


@dataclass(frozen=True)
class Signatures:
    field: str
    params: DedupParams
    name: str = "signatures"
    fanout: int = 1

    @property
    def schema(self) -> pa.Schema:
        return signature_schema(self.params.num_perm)

    def settings(self) -> dict:  # the threshold is the LSH's business: signatures do not change with it
        return {"field": self.field, **{k: v for k, v in self.params.__dict__.items() if k != "threshold"}}

    def code(self) -> Sequence[Callable]:
        return [prepare, dedup_text, Signatures.run]

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        keys, sigs, invalid, replaced = prepare([dedup_text(r, self.field) for r in rows], self.params)
        flat = pa.array(sigs.reshape(-1), pa.uint32())
        table = pa.table({
            "id": pa.array([row_id(r) for r in rows], pa.string()),
            "exact_key": keys_to_arrow(keys, np.array([why is None for why in invalid], dtype=np.bool_)),
            "signature": pa.FixedSizeListArray.from_arrays(flat, self.params.num_perm),
            "invalid": pa.array(invalid, pa.string()),
            "score": pa.array([r.get("judge_score") for r in rows], pa.float32()),
        })
        return ShardOutput(table, facts={"non_utf8_replaced": replaced})


DROP_SCHEMA = pa.schema([
    pa.field("shard", pa.int32()), pa.field("offset", pa.int32()), pa.field("id", pa.string()), pa.field("dedup_cluster", pa.string()), pa.field("duplicate_of", pa.string()),
    pa.field("stage", pa.string()), pa.field("reason", pa.string()), pa.field("detail", pa.string()),
])


def find_duplicates(tables: Iterable[pa.Table], params: DedupParams, field: str,
                    index: Deduplicator | None = None) -> tuple[list[dict], dict]:
    """Every row that goes, with its verdict, from signature shards in build order; and
    counts. `index`, if given, already holds the cross-run index (it is used up)."""
    dedup = index or Deduplicator(params)
    where: list[tuple[int, int]] = []  # (shard, first row's position in the build)
    for shard, table in enumerate(tables):
        where.append((shard, len(dedup) - dedup.n_index))
        dedup.add_prepared(table.column("id").to_pylist(), table.column("exact_key"),
                           signature_matrix(table, params.num_perm), table.column("invalid").to_pylist(),
                           table.column("score").to_pylist())
    result = dedup.finish()
    drops, starts = [], [start for _, start in where]
    for i in result.rows():
        if result.reason[i] is not None:
            position = i - result.n_index
            shard = bisect.bisect_right(starts, position) - 1
            drops.append({"shard": shard, "offset": position - starts[shard], "id": result.ids[i], **dedup_verdict(result, i, field)})
    clusters = len({d["dedup_cluster"] for d in drops if d["reason"] in ("exact_duplicate", "near_duplicate", "seen_in_index")})
    return drops, {"rows": len(result.rows()), "dropped": len(drops), "clusters": clusters}


def drops_digest(drops: Sequence[dict]) -> str:
    blob = "\n".join(f"{d['shard']}\t{d['offset']}\t{d['id']}\t{d['reason']}\t{d['dedup_cluster']}\t{d['detail']}" for d in drops)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class ApplyDrops:
    """Keep a shard's rows not on the drop list (each its own cluster); reject the rest.
    `drops(shard)` maps a row's offset in the shard to its verdict (by position: ids can
    repeat, e.g. n identical samples); in a flow it reads only that shard's part of the list."""

    drops: Callable[[int], dict[int, dict]] = field(hash=False)
    schema: pa.Schema = field(hash=False)
    digest: str = ""
    name: str = "dedup"
    fanout: int = 1

    def settings(self) -> dict:
        return {"drops": self.digest}

    def code(self) -> Sequence[Callable]:
        return [ApplyDrops.run, dedup_verdict]

    def run(self, rows: list[dict], shard: int) -> ShardOutput:
        kept, rejected = [], []
        drops = self.drops(shard)
        for offset, row in enumerate(rows):
            verdict = drops.get(offset)
            if verdict is None:
                kept.append({**row, "dedup_cluster": row_id(row)})
            else:
                rejected.append({**row, **{k: v for k, v in verdict.items() if k not in ("id", "shard", "offset")}})
        return ShardOutput(kept, rejected)


def drop_map(drops: Iterable[dict]) -> Callable[[int], dict[int, dict]]:
    """Drops held in memory, as ApplyDrops asks for them (tests; small builds)."""
    by_shard: dict[int, dict[int, dict]] = {}
    for d in drops:
        by_shard.setdefault(d["shard"], {})[d["offset"]] = d
    return partial(_drops_in, by_shard)


def _drops_in(by_shard: dict[int, dict[int, dict]], shard: int) -> dict[int, dict]:
    return by_shard.get(shard, {})


def signature_matrix(table: pa.Table, num_perm: int) -> np.ndarray:
    sigs = table.column("signature").combine_chunks()
    return sigs.values.to_numpy(zero_copy_only=False).reshape(len(table), num_perm)
