"""Exact + MinHash-LSH dedup as map / shuffle / reduce steps, for an executor that
spreads them over workers (Ray). Pure logic: every step takes and returns numpy
arrays or pyarrow tables and holds at most one signature shard or one partition;
only the edges (candidate pairs, exact duplicates), the rows on them and the
invalid rows reach the driver.

    exact:   map_exact (per shard)  -> reduce_exact (per partition) -> exact duplicates
    buckets: map_bands (per shard)  -> reduce_bands (per partition) -> candidate pairs
    verdict: gather (per shard)     -> verify, drops_from_edges (driver)

The result equals `find_duplicates` without a cross-run index, row for row: the
buckets are the ones `Deduplicator` builds (same band ranges, the same band keys from
`distillery.lsh.band_keys`, computed for a whole shard at once), the
pairs come out of each bucket by the same rule, and clusters, representatives and
verdicts are computed as `Deduplicator.finish` does. A row's position is its index
in the whole build (earlier shards' lengths plus its offset).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillery.dedup import DedupParams, DedupResult, dedup_verdict, find_root, join
from distillery.lsh import PAIR_ALL_UP_TO as _PAIR_ALL_UP_TO
from distillery.lsh import band_keys, lsh_params
from distillery.stages.dedup import signature_matrix

EXACT_SCHEMA = pa.schema([pa.field("exact_key", pa.binary(16)), pa.field("position", pa.int64())])
BAND_SCHEMA = pa.schema([pa.field("band", pa.int32()), pa.field("key", pa.binary(8)), pa.field("position", pa.int64())])
INVALID_SCHEMA = pa.schema([pa.field("position", pa.int64()), pa.field("id", pa.string()), pa.field("invalid", pa.string())])
_NO_PAIRS = np.zeros((0, 2), dtype=np.int64)


def bands(params: DedupParams) -> list[tuple[int, int]]:
    """The signature ranges the local LSH hashes into one bucket key each (datasketch's split)."""
    count, rows = lsh_params(params.threshold, params.num_perm)
    return [(i * rows, (i + 1) * rows) for i in range(count)]


def _fixed_bytes(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """A fixed-size binary column without nulls, as an (n, width) uint8 matrix."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    data = np.frombuffer(arr.buffers()[1], dtype=np.uint8) if len(arr) else np.zeros(0, np.uint8)
    return data[arr.offset * width : (arr.offset + len(arr)) * width].reshape(len(arr), width)


def _word(keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each key as a uint64 (the keys are hashes already)."""
    return np.ascontiguousarray(keys[:, :8]).view("<u8")[:, 0]


def _split(table: pa.Table, word: np.ndarray, partitions: int) -> list[pa.Table]:
    # Python's hash() is salted per process: workers must agree on the partition.
    part = (word % np.uint64(partitions)).astype(np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.cumsum(np.bincount(part, minlength=partitions))[:-1]
    # take(), not slice(): a slice would carry (and pickle) the whole shard's buffers.
    return [table.take(pa.array(rows, pa.int64())) for rows in np.split(order, bounds)]


def _valid(table: pa.Table) -> np.ndarray:
    return pc.is_null(table.column("invalid")).to_numpy(zero_copy_only=False).astype(bool)


def map_exact(table: pa.Table, start: int, partitions: int) -> tuple[list[pa.Table], pa.Table]:
    """One signature shard -> per partition (exact_key, position) of its valid rows, and
    its invalid rows (position, id, invalid), which are dropped as they are."""
    positions = start + np.arange(len(table), dtype=np.int64)
    valid = _valid(table)
    keyed = pa.table({"exact_key": table.column("exact_key").filter(pa.array(valid)),
                      "position": pa.array(positions[valid])}, schema=EXACT_SCHEMA)
    invalid = pa.table({"position": pa.array(positions[~valid]), "id": table.column("id").filter(pa.array(~valid)),
                        "invalid": table.column("invalid").filter(pa.array(~valid))}, schema=INVALID_SCHEMA)
    return _split(keyed, _word(_fixed_bytes(keyed.column("exact_key"), 16)), partitions), invalid


def _runs(*keys: np.ndarray) -> np.ndarray:
    """Where a new run of equal keys starts, in arrays sorted by those keys."""
    new = np.zeros(len(keys[0]), dtype=bool)
    new[:1] = True
    for key in keys:
        differs = key[1:] != key[:-1]
        new[1:] |= differs.any(axis=1) if differs.ndim > 1 else differs
    return new


def reduce_exact(parts: Sequence[pa.Table]) -> np.ndarray:
    """One partition's keys from every shard -> (position, first position) for each row
    whose exact key appeared at a smaller position (the first occurrence wins, as
    `Deduplicator` keeps it), sorted by position."""
    if not parts or not sum(len(p) for p in parts):
        return _NO_PAIRS
    table = pa.concat_tables(parts)
    words = np.ascontiguousarray(_fixed_bytes(table.column("exact_key"), 16)).view("<u8")
    positions = table.column("position").to_numpy()
    order = np.lexsort((positions, words[:, 1], words[:, 0]))
    words, positions = words[order], positions[order]
    new = _runs(words)
    first = positions[np.maximum.accumulate(np.where(new, np.arange(len(new)), 0))]
    dup = np.column_stack([positions[~new], first[~new]])
    return dup[np.argsort(dup[:, 0], kind="stable")]


def map_bands(table: pa.Table, start: int, partitions: int, params: DedupParams, not_fresh: np.ndarray) -> list[pa.Table]:
    """One signature shard -> per partition (band, bucket key, position) of the rows the
    local LSH holds: valid rows that are not exact duplicates of an earlier one."""
    positions = start + np.arange(len(table), dtype=np.int64)
    fresh = _valid(table) & ~np.isin(positions, not_fresh)
    count, rows = lsh_params(params.threshold, params.num_perm)
    keys = band_keys(signature_matrix(table, params.num_perm)[fresh], count, rows)  # the local dedup's own keys
    n = len(keys)
    flat = np.ascontiguousarray(keys.T).reshape(-1)  # band by band
    out = pa.table({"band": pa.array(np.repeat(np.arange(count, dtype=np.int32), n)),
                    "key": pa.FixedSizeBinaryArray.from_buffers(pa.binary(8), len(flat), [None, pa.py_buffer(flat.tobytes())]),
                    "position": pa.array(np.tile(positions[fresh], count))}, schema=BAND_SCHEMA)
    return _split(out, _word(_fixed_bytes(out.column("key"), 8)), partitions)


def _bucket_pairs(members: list[int]) -> list[tuple[int, int]]:
    if len(members) <= _PAIR_ALL_UP_TO:
        return [(x, y) for k, x in enumerate(members) for y in members[k + 1 :]]
    return list(zip(members, members[1:]))  # a big bucket chains: union-find joins it all the same


def reduce_bands(parts: Sequence[pa.Table]) -> np.ndarray:
    """One partition's bucket entries from every shard -> its candidate pairs, by
    `Deduplicator.candidates`' rule, unique and sorted."""
    if not parts or not sum(len(p) for p in parts):
        return _NO_PAIRS
    table = pa.concat_tables(parts)
    band = table.column("band").to_numpy()
    key = _word(_fixed_bytes(table.column("key"), 8))
    positions = table.column("position").to_numpy()
    order = np.lexsort((positions, key, band))
    band, key, positions = band[order], key[order], positions[order]
    starts = np.flatnonzero(_runs(band, key))
    ends = np.append(starts[1:], len(positions))
    pairs: list[tuple[int, int]] = []
    for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
        pairs += _bucket_pairs(positions[s:e].tolist())
    return np.unique(np.array(pairs, dtype=np.int64), axis=0) if pairs else _NO_PAIRS


@dataclass
class EdgeRows:
    """The rows on an edge, by position (sorted): what verifying and ranking need."""

    positions: np.ndarray
    signatures: np.ndarray
    ids: list[str]
    scores: list[float | None]

    def at(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.positions, positions)

    @staticmethod
    def concat(parts: Sequence["EdgeRows"], num_perm: int) -> "EdgeRows":
        return EdgeRows(np.concatenate([np.zeros(0, np.int64), *(p.positions for p in parts)]),
                        np.concatenate([np.zeros((0, num_perm), np.uint32), *(p.signatures for p in parts)]),
                        [i for p in parts for i in p.ids], [s for p in parts for s in p.scores])


def gather(table: pa.Table, start: int, positions: np.ndarray) -> EdgeRows:
    """This shard's rows at these (sorted, global) positions."""
    offsets = np.asarray(positions, dtype=np.int64) - start
    rows = table.take(pa.array(offsets))
    num_perm = table.schema.field("signature").type.list_size
    return EdgeRows(offsets + start, signature_matrix(rows, num_perm).astype(np.uint32),
                    rows.column("id").to_pylist(), rows.column("score").to_pylist())


def verify(pairs: np.ndarray, rows: EdgeRows, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs whose estimated Jaccard reaches the threshold, and that estimate."""
    sims = np.empty(len(pairs), dtype=np.float64)
    for s in range(0, len(pairs), 4096):
        left = rows.signatures[rows.at(pairs[s : s + 4096, 0])]
        right = rows.signatures[rows.at(pairs[s : s + 4096, 1])]
        sims[s : s + 4096] = (left == right).mean(axis=1)
    keep = sims >= threshold
    return pairs[keep], sims[keep]


def representatives(near: np.ndarray, exact: np.ndarray, rows: EdgeRows) -> np.ndarray:
    """Per row of `rows`, the position of its cluster's representative: the highest
    score, then the smallest id, then the first in the build, as `Deduplicator.finish` picks it (no index rows here)."""
    index = {p: k for k, p in enumerate(rows.positions.tolist())}
    edges = [*near.tolist(), *exact.tolist()]
    parent = np.arange(len(index))
    for x, y in edges:
        join(parent, index[x], index[y])
    members: dict[int, list[int]] = {}
    for i in {v for edge in edges for v in edge}:
        members.setdefault(find_root(parent, index[i]), []).append(i)
    rep = rows.positions.copy()
    for group in members.values():  # rows that rank equal (same score and id): the first in the build
        best = min(group, key=lambda i: (*_rank(rows, index[i]), i))
        rep[[index[i] for i in group]] = best
    return rep


def _rank(rows: EdgeRows, k: int) -> tuple:
    score = rows.scores[k]
    return (-(score if score is not None else float("-inf")), rows.ids[k])


def _verdicts(near: np.ndarray, sims: np.ndarray, exact: np.ndarray, rows: EdgeRows, invalid: pa.Table) -> DedupResult:
    """A `DedupResult` over just the rows on an edge, then the invalid rows, so that
    `dedup_verdict` words each drop as the local dedup does."""
    rep = representatives(near, exact, rows)
    root = dict(exact.tolist())
    sim_of = {(x, y): s for (x, y), s in zip(near.tolist(), sims.tolist())}
    n, n_invalid = len(rows.positions), len(invalid)
    reason: list[str | None] = [None] * n + invalid.column("invalid").to_pylist()
    similarity = np.ones(n + n_invalid)
    for k, (i, r) in enumerate(zip(rows.positions.tolist(), rep.tolist())):
        if r != i:
            ri, rr = root.get(i, i), root.get(r, r)
            reason[k] = "exact_duplicate" if ri == rr else "near_duplicate"
            if ri != rr:
                similarity[k] = sim_of.get((min(i, r), max(i, r)), _estimate(rows, ri, rr))
    representative = np.concatenate([rows.at(rep), np.arange(n, n + n_invalid)])
    return DedupResult(rows.ids + invalid.column("id").to_pylist(), representative, reason, similarity, 0, 0)


def _estimate(rows: EdgeRows, i: int, j: int) -> float:
    return float((rows.signatures[rows.at(i)] == rows.signatures[rows.at(j)]).mean())


def drops_from_edges(near: np.ndarray, sims: np.ndarray, exact: np.ndarray, rows: EdgeRows,
                     invalid: pa.Table, sizes: Sequence[int], field: str) -> tuple[list[dict], dict]:
    """The rows that go, with their verdicts, in build order; and counts: what
    `find_duplicates(tables, params, field)` returns."""
    result = _verdicts(near, sims, exact, rows, invalid)
    positions = np.concatenate([rows.positions, invalid.column("position").to_numpy()])
    starts = np.cumsum([0, *sizes[:-1]]).tolist()
    drops = []
    for k in np.argsort(positions, kind="stable").tolist():
        if result.reason[k] is not None:
            position = int(positions[k])
            shard = bisect.bisect_right(starts, position) - 1  # empty shards share a start: take the last
            drops.append({"shard": shard, "offset": position - starts[shard], "id": result.ids[k],
                          **dedup_verdict(result, k, field)})
    clusters = len({d["dedup_cluster"] for d in drops if d["reason"] in ("exact_duplicate", "near_duplicate")})
    return drops, {"rows": int(sum(sizes)), "dropped": len(drops), "clusters": clusters}


def within(positions: np.ndarray, start: int, size: int) -> np.ndarray:
    """The sorted positions that fall in one shard: all a shard's task is sent."""
    return positions[np.searchsorted(positions, start) : np.searchsorted(positions, start + size)]


def shuffle_dedup(tables: Iterable[pa.Table], params: DedupParams, field: str,
                  partitions: int = 4) -> tuple[list[dict], dict]:
    """The steps in order, in this process: what an executor runs as tasks."""
    tables = list(tables)
    sizes = [len(t) for t in tables]
    starts = np.cumsum([0, *sizes[:-1]]).tolist() if tables else []
    mapped = [map_exact(t, s, partitions) for t, s in zip(tables, starts)]
    exact = np.concatenate([_NO_PAIRS, *(reduce_exact([m[0][p] for m in mapped]) for p in range(partitions))])
    exact = exact[np.argsort(exact[:, 0], kind="stable")]
    invalid = pa.concat_tables([INVALID_SCHEMA.empty_table(), *(m[1] for m in mapped)])
    band_parts = [map_bands(t, s, partitions, params, within(exact[:, 0], s, len(t))) for t, s in zip(tables, starts)]
    candidates = np.concatenate([_NO_PAIRS, *(reduce_bands([b[p] for b in band_parts]) for p in range(partitions))])
    candidates = np.unique(candidates, axis=0)  # a pair can share buckets in several partitions
    on_edge = np.unique(np.concatenate([candidates.ravel(), exact.ravel()]))
    rows = EdgeRows.concat([gather(t, s, within(on_edge, s, len(t))) for t, s in zip(tables, starts)], params.num_perm)
    near, sims = verify(candidates, rows, params.threshold)
    return drops_from_edges(near, sims, exact, rows, invalid, sizes, field)
