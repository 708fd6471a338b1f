"""Stage shards and the dedup shuffle as Ray tasks. No Prefect here: Ray workers never
need the Prefect API; the flow run (the Ray driver) wraps each shard in a task run.

A shard task reads its input shard from storage, runs the stage (an engine stage calls
the engine actors through adapters.ray_engines.RemoteEngine), writes the staged files
and commits the completion record create-only, and returns the record: paths and
counts, never rows. Storage must be reachable from every node (s3:// on a cluster).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pyarrow as pa

from distillery.adapters.worker import measured
from distillery.dedup import DedupParams
from distillery.dedup_shuffle import (
    INVALID_SCHEMA, EdgeRows, drops_from_edges, gather, map_bands, map_exact, reduce_bands, reduce_exact, verify, within,
)
from distillery.stages.contract import Record, StagedFile
from distillery.stages.executor import read_table, run_shard

_NO_PAIRS = np.zeros((0, 2), dtype=np.int64)


def _shard_task(store, root: str, stage, shard: int, inputs: list[StagedFile], extra: list[str]) -> tuple[Record, bool, int]:
    """In a Ray worker: one shard of a stage, committed create-only under a fresh attempt id."""
    from distillery.adapters import ray_engines

    ray_engines.current_shard = shard  # an engine stage starts on engine `shard % engines`
    (record, ran), peak = measured(run_shard, (store, root, stage, shard, inputs, extra, uuid.uuid4().hex[:12]))
    return record, ran, peak


def run_shard_on_cluster(store, root: str, stage, shard: int, inputs: list[StagedFile], extra: Sequence[str],
                         cpus: float) -> tuple[Record, bool, int]:
    """Submit one shard and wait for it: (record, ran now, the Ray worker's peak RSS in MiB).
    Ray retries a task whose worker or node died (the commit is create-only, so a retry that
    races the first try cannot publish twice)."""
    import ray

    remote = _remote(_shard_task).options(num_cpus=cpus, max_retries=2, retry_exceptions=False)
    return ray.get(remote.remote(store, root, stage, shard, list(inputs), list(extra)))


@lru_cache(maxsize=None)
def _remote(fn):
    """fn as a Ray remote function, registered with the cluster once per process."""
    import ray

    return ray.remote(fn)


# The dedup shuffle: each map task holds one signature shard, each reduce task one partition.

def _map_exact(store, file: StagedFile, start: int, partitions: int) -> tuple:
    (parts, invalid), peak = measured(lambda: map_exact(read_table(store, file), start, partitions), ())
    return (*parts, invalid, peak)


def _map_bands(store, file: StagedFile, start: int, partitions: int, params: DedupParams, not_fresh: np.ndarray) -> tuple:
    parts, peak = measured(lambda: map_bands(read_table(store, file), start, partitions, params, not_fresh), ())
    return (*parts, peak)


def _reduce(kind: str, *parts: pa.Table) -> tuple[np.ndarray, int]:
    return measured(reduce_exact if kind == "exact" else reduce_bands, (list(parts),))


def _gather(store, file: StagedFile, start: int, positions: np.ndarray) -> tuple[EdgeRows, int]:
    return measured(lambda: gather(read_table(store, file), start, positions), ())


def dedup_on_cluster(store, files: Sequence[StagedFile], params: DedupParams, field: str, partitions: int,
                     cpus: float) -> tuple[list[dict], dict]:
    """`find_duplicates` over signature shards (no cross-run index) as a shuffle on the
    cluster: exact keys, then band keys, hash-partitioned; only edges reach the driver.
    Returns the drop list and counts (with the largest map and reduce task's peak RSS)."""
    import ray

    opts = {"num_cpus": cpus, "max_retries": 2}
    sizes = [f.rows for f in files]
    starts = np.cumsum([0, *sizes[:-1]]).tolist() if files else []
    exact_map = _remote(_map_exact).options(num_returns=partitions + 2, **opts)
    mapped = [exact_map.remote(store, f, s, partitions) for f, s in zip(files, starts)]
    reduce = _remote(_reduce).options(**opts)
    exact_parts = ray.get([reduce.remote("exact", *[m[p] for m in mapped]) for p in range(partitions)])
    exact = np.concatenate([_NO_PAIRS, *(e for e, _ in exact_parts)])
    exact = exact[np.argsort(exact[:, 0], kind="stable")]
    invalid = pa.concat_tables([INVALID_SCHEMA.empty_table(), *ray.get([m[partitions] for m in mapped])])
    peaks = {"map": max(ray.get([m[partitions + 1] for m in mapped]), default=0), "reduce": max((p for _, p in exact_parts), default=0)}
    del mapped
    band_map = _remote(_map_bands).options(num_returns=partitions + 1, **opts)
    banded = [band_map.remote(store, f, s, partitions, params, within(exact[:, 0], s, n)) for f, s, n in zip(files, starts, sizes)]
    band_parts = ray.get([reduce.remote("bands", *[b[p] for b in banded]) for p in range(partitions)])
    peaks = {"map": max(peaks["map"], *ray.get([b[partitions] for b in banded])) if banded else peaks["map"],
             "reduce": max(peaks["reduce"], *(p for _, p in band_parts))}
    del banded
    candidates = np.unique(np.concatenate([_NO_PAIRS, *(c for c, _ in band_parts)]), axis=0)
    on_edge = np.unique(np.concatenate([candidates.ravel(), exact.ravel()]))
    gathered = ray.get([_remote(_gather).options(**opts).remote(store, f, s, within(on_edge, s, n))
                        for f, s, n in zip(files, starts, sizes)])
    rows = EdgeRows.concat([g for g, _ in gathered], params.num_perm)
    near, sims = verify(candidates, rows, params.threshold)
    drops, counts = drops_from_edges(near, sims, exact, rows, invalid, sizes, field)
    return drops, {**counts, "candidate_pairs": int(len(candidates)), "worker_peak_rss_mib": max(peaks.values(), default=0),
                   "map_peak_rss_mib": peaks["map"], "reduce_peak_rss_mib": peaks["reduce"],
                   "gather_peak_rss_mib": max((p for _, p in gathered), default=0), "partitions": partitions}
