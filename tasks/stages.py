"""Prefect wrappers for staged stages: one task run per stage per group of shards.

Each task run works through its shards one at a time (memory: one shard), skipping
those whose completion record matches, so a retry or a rerun redoes only unfinished
shards. CPU stages, and the load, run in the build's worker process (adapters.worker):
the task run sends the stage and its files there and gets the records back. Engine
stages run here and carry the `gpu` tag, so the concurrency limit still holds.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import pyarrow.compute as pc

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.utilities.annotations import quote

from distillery.adapters import dedup_index
from distillery.adapters.worker import in_worker, peak_rss_mib
from distillery.adapters.storage import Dataset, list_source, storage_options
from distillery.dedup import Deduplicator
from distillery.faults import failpoint
from distillery.recipe import Recipe
from distillery.sources import StreamedSource, stream_sources
from distillery.stages.contract import Record, StagedFile
from distillery.stages.dedup import DROP_SCHEMA, find_duplicates, drops_digest
from distillery.stages.executor import read_rows, read_table, run_shard, source_done, stage_source
from distillery.stages.prompts import SEED_SCHEMA
from distillery.stages.staged import decode_table, encode
from tasks.retry import ENGINE_TAG, engine_died, transient

MAX_TASKS_PER_STAGE = 32  # shards are grouped past this: Prefect's cost is per task run


def groups(shards: list, limit: int = MAX_TASKS_PER_STAGE) -> list[list]:
    size = max(1, math.ceil(len(shards) / limit))
    return [shards[i : i + size] for i in range(0, len(shards), size)]


@task(name="load-seeds", cache_policy=NONE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient)
def load(recipe: Recipe, store: Dataset, root: str) -> tuple[list[Record], dict]:
    """The source, streamed into staged seed shards of `output.stage_rows`; a source whose
    files (names, sizes, ETags or mtimes) and settings are unchanged is not read again.
    Returns the records and {digest, rows_in, shards_written, worker_peak_rss_mib (None when
    the source was not read again)}."""
    st, src = recipe.storage, recipe.source
    files = list_source(src.uri, "seed file", st.retries, st.retry_backoff_seconds,
                        **storage_options(st.credentials_block, st.endpoint_url))
    key = hashlib.sha256(json.dumps([src.model_dump(mode="json"), recipe.output.stage_rows,
                                     [(f.uri, f.size, f.mark) for f in files]], sort_keys=True).encode()).hexdigest()
    done = source_done(store, root, "load", key)
    if done is not None:
        return done[0], {"digest": done[1]["digest"], "rows_in": done[1]["rows_in"], "shards_written": 0,
                         "worker_peak_rss_mib": None}
    (records, about), peak = in_worker(_load_source, store, root, key, files, src, recipe.output.stage_rows)
    get_run_logger().info("load: %d rows in %d shards (worker peak RSS %d MiB)", about["rows_in"], len(records), peak)
    return records, {**about, "worker_peak_rss_mib": peak}


def _load_source(store: Dataset, root: str, key: str, files: list, src, stage_rows: int) -> tuple[list[Record], dict]:
    """In the worker: the source streamed into seed shards (the seen-id set grows with the source)."""
    seen = StreamedSource()
    shards = stream_sources(files, stage_rows, seen, fmt=src.format, instruction_column=src.instruction_column,
                            input_column=src.input_column, id_column=src.id_column, limit=src.limit,
                            response_column=src.response_column)
    records, written = stage_source(store, root, "load", key, shards, SEED_SCHEMA,
                                    about=lambda: {"digest": seen.digest, "rows_in": seen.rows_in})
    return records, {"digest": seen.digest, "rows_in": seen.rows_in, "shards_written": written}


def _run_group(store: Dataset, root: str, stage, shards: list[tuple[int, list[StagedFile]]], extra: list[str]) -> list[tuple[Record, bool]]:
    out = []
    for index, inputs in shards:
        out.append(run_shard(store, root, stage, index, inputs, extra))
        failpoint(f"stage.{stage.name}.shard")
    return out


@task(name="stage", cache_policy=NONE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient)
def stage_shards(store: Dataset, root: str, stage, shards: list[tuple[int, list[StagedFile]]],
                 extra: list[str], in_flow: bool = False) -> tuple[list[tuple[Record, bool]], int | None]:
    """A CPU stage over a group of shards, in the build's worker process; or, `in_flow`, in
    this one (a stage whose batches are task runs of their own: generate). Returns the
    shards' (record, ran) and the worker's peak RSS in MiB (None in this process)."""
    if in_flow:
        return _run_group(store, root, stage, shards, extra), None
    return in_worker(_run_group, store, root, stage, shards, extra)


@task(name="engine-stage", cache_policy=NONE, tags=[ENGINE_TAG], retries=1, retry_condition_fn=engine_died)
def engine_stage_shards(store: Dataset, root: str, stage, shards: list[tuple[int, list[StagedFile]]],
                        extra: list[str]) -> list[tuple[Record, bool]]:
    """An engine stage over a group of shards, in this process: the engine opens once per
    process, not per shard."""
    return _run_group(store, root, stage, shards, extra)


def run_stage(store: Dataset, root: str, stage, inputs: list[list[StagedFile]], extra: list[str] = (),
              engine: bool = False, on_group=None, in_flow: bool = False) -> list[tuple[Record, bool]]:
    """Every shard of a stage, as task runs over groups of shards. `inputs[i]` are shard i's
    input files. Returns (record, ran now) per shard, in shard order; `on_group(done, total,
    peak)` hears of each group finished (peak: the worker's peak RSS in MiB, None in this process)."""
    results: list[tuple[Record, bool]] = []
    for group in groups(list(enumerate(inputs))):
        name = f"{stage.name}-{group[0][0]:05d}" + (f"-{group[-1][0]:05d}" if len(group) > 1 else "")
        args = (store, root, quote(stage), quote(group), list(extra))
        if engine:
            done, peak = engine_stage_shards.with_options(task_run_name=name)(*args), None
        else:
            done, peak = stage_shards.with_options(task_run_name=name)(*args, in_flow=in_flow)
        results += done
        if on_group is not None:
            on_group(len(results), len(inputs), peak)
    return results


@task(name="find-duplicates", cache_policy=NONE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient)
def duplicates(store: Dataset, root: str, signatures: list[Record], recipe: Recipe) -> tuple[StagedFile, dict]:
    """Exact + LSH dedup over every signature shard (never the text) and the cross-run index,
    in a worker process of its own (the LSH is the one part of a build that grows with it),
    or, on the ray backend past `execution.dedup_min_rows` and without an index, as a shuffle
    on the cluster (the same drop list): the drop list, staged with a record keyed by the
    signatures' checksums, wherever it was computed."""
    config, st = recipe.dedup, recipe.storage
    options = {"retries": st.retries, "backoff": st.retry_backoff_seconds, **storage_options(st.credentials_block, st.endpoint_url)}
    index_mark = dedup_index.fingerprint(config.index_uri, **options) if config.index_uri else ""
    key = hashlib.sha256(json.dumps([config.model_dump(mode="json"), index_mark, [r.files[0].sha256 for r in signatures]],
                                    sort_keys=True).encode()).hexdigest()
    folder = f"{root}/duplicates"
    if store.exists(f"{folder}/done.json"):
        done = json.loads(store.read(f"{folder}/done.json"))
        drop_file = StagedFile(**done["file"])
        if done["key"] == key and hashlib.sha256(store.read(drop_file.path)).hexdigest() == drop_file.sha256:
            return drop_file, done["counts"]
    execution, rows = recipe.execution, sum(r.rows_out for r in signatures)
    if execution.backend == "ray" and not config.index_uri and rows >= execution.dedup_min_rows:
        from distillery.adapters.ray_stages import dedup_on_cluster

        drops, counts = dedup_on_cluster(store, [r.files[0] for r in signatures], config.params(), config.field,
                                         execution.dedup_partitions, execution.task_cpus)
        drop_file, counts = _write_drops(store, folder, drops, counts)
        where = f"on the cluster, {execution.dedup_partitions} partitions, largest task's peak RSS"
    else:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as worker:
            drop_file, counts = worker.submit(_find_duplicates, store.uri, options, folder, [r.files[0] for r in signatures],
                                              config.params(), config.field, config.index_uri).result()
        where = "worker peak RSS"
    get_run_logger().info("find-duplicates: %d of %d rows dropped, %d clusters (%s %d MiB)",
                          counts["dropped"], counts["rows"], counts["clusters"], where, counts["worker_peak_rss_mib"])
    store.write(f"{folder}/done.json", json.dumps({"key": key, "file": drop_file.__dict__, "counts": counts}).encode())
    return drop_file, counts


def _find_duplicates(uri: str, options: dict, folder: str, signature_files: list[StagedFile], params, field: str,
                     index_uri: str | None) -> tuple[StagedFile, dict]:
    """In the worker: read signature shards one by one, dedup, write the drop list."""
    from distillery.adapters.storage import open_dataset

    store = open_dataset(uri, **options)
    with tempfile.TemporaryDirectory(prefix="distillery-find-duplicates-") as spill:  # signatures: 512 MB a million rows
        dedup = Deduplicator(params, spill=spill)
        if index_uri:
            dedup_index.load_into(dedup, index_uri, **options)
        drops, counts = find_duplicates((read_table(store, f) for f in signature_files), params, field, dedup)
    return _write_drops(store, folder, drops, {**counts, "worker_peak_rss_mib": peak_rss_mib()})


def _write_drops(store: Dataset, folder: str, drops: list[dict], counts: dict) -> tuple[StagedFile, dict]:
    data, sha = encode(drops, DROP_SCHEMA)
    drop_file = StagedFile(f"{folder}/drops.parquet", sha, len(data), len(drops))
    store.write(drop_file.path, data)
    return drop_file, {**counts, "digest": drops_digest(drops)}


def shard_drops(store: Dataset, drop_file: StagedFile) -> partial:
    """`ApplyDrops.drops`: one shard's verdicts, read from the staged drop list when asked."""
    return partial(_drops_of, store, drop_file)


def _drops_of(store: Dataset, drop_file: StagedFile, shard: int) -> dict[int, dict]:
    table = decode_table(store.read(drop_file.path), drop_file.sha256, drop_file.path)
    mine = table.filter(pc.equal(table.column("shard"), shard))
    return {row["offset"]: row for row in mine.to_pylist()}


def shard_rows(store: Dataset, files: list[StagedFile], shard: int) -> list[dict]:
    """Shard `shard`'s rows, with `files[shard]` its file (partial(shard_rows, store, files)
    is what a stage that reads another stage's shard is given: it travels to the worker)."""
    return read_rows(store, [files[shard]])


def shard_rows_each(store: Dataset, files: list[list[StagedFile]], shard: int) -> list[list[dict]]:
    """The rows of each of `files[shard]` (one file per teacher, say)."""
    return [read_rows(store, [f]) for f in files[shard]]
