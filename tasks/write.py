"""Publishing a dataset: stage every shard, commit them into place, manifest last.

The protocol, after Hadoop's output committer and Delta Lake's conditional puts:

1. every shard is streamed to `_temporary/<attempt>/...`, a name of its own for
   this attempt (a crash here leaves only staging files nobody reads);
2. the writer checks that the published dataset is still the one it saw when
   the build started (else another writer got there first: it stops);
3. it unpublishes the dataset it replaces (removes its manifest), moves each
   shard to its fixed name, removes shards the new plan does not have, and
   writes the card, the report and their pictures (`card_files`);
4. it creates `manifest.json` only if none exists (a conditional PUT on S3), so
   two writers cannot both publish; then it removes `_temporary/`.

Readers trust only the manifest: a folder without one is unfinished, and a
rerun finishes it. A rerun of a published build with the same recipe and
source is a no-op (`check_output`).
"""

from __future__ import annotations

import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from distillery.adapters.storage import Dataset, PublishConflict, StorageError, open_dataset, storage_options
from distillery.adapters.worker import in_worker
from distillery.card import PICTURES, card_facts, pictures, schema_facts
from distillery.errors import DistilleryError
from distillery.faults import failpoint
from distillery.kd import round_logprobs
from distillery.recipe import Recipe
from distillery.report import CARD, MANIFEST, REPORT, build_manifest, dataset_card, dumps, package_versions, run_report_markdown
from distillery.schema import ROW_SCHEMA, rejects_table, to_table
from distillery.shards import ShardSpec, plan_shards, write_pieces, write_shard
from distillery.stages.publish import LengthTally, Stream, plan as stream_plan, rows_per_shard as rows_per_stream_shard

STAGING = "_temporary"
MiB = 1024 * 1024


class OutputExists(DistilleryError):
    """The output already holds a different dataset and the recipe said not to replace it."""


@dataclass
class OutputState:
    status: str  # "new": nothing published; "complete": this very build is; "replace": another is
    manifest: dict | None = None

    @property
    def run_id(self) -> str | None:
        return self.manifest.get("run_id") if self.manifest else None


def dataset_for(recipe: Recipe) -> Dataset:
    st = recipe.storage
    return open_dataset(recipe.output.uri, st.retries, st.retry_backoff_seconds, **storage_options(st.credentials_block, st.endpoint_url))


def shard_spec(recipe: Recipe) -> ShardSpec:
    out = recipe.output
    max_bytes = int(out.max_shard_mb * MiB) if out.max_shard_mb else None
    return ShardSpec(out.rows_per_shard, max_bytes, out.row_group_size, out.compression, out.compression_level)


def read_manifest(ds: Dataset) -> dict | None:
    if not ds.exists(MANIFEST):
        return None
    try:
        return json.loads(ds.read(MANIFEST))
    except json.JSONDecodeError:
        return {"run_id": "(unreadable manifest)"}


@task(name="check-output", cache_policy=NONE)
def check_output(recipe: Recipe, key: str) -> OutputState:
    """What the output folder holds now, before any generation is spent."""
    manifest = read_manifest(dataset_for(recipe))
    if manifest is None:
        return OutputState("new")
    if manifest.get("build_key") == key:
        return OutputState("complete", manifest)
    if recipe.output.if_exists == "fail":
        raise OutputExists(
            f"{recipe.output.uri} already holds dataset {manifest.get('name')!r} (run {manifest.get('run_id')}) built from "
            "a different recipe or source; choose another output.uri, or set output.if_exists=replace"
        )
    return OutputState("replace", manifest)


def card_files(manifest: dict, uri: str) -> dict[str, bytes]:
    """The card, the report and their pictures (judge_scores.svg, lengths.svg): all derive from the manifest."""
    files = {CARD: dataset_card(manifest).encode(),
             REPORT: run_report_markdown(manifest["name"], uri, manifest["run_id"], manifest["summary"]).encode()}
    files.update({name: svg.encode() for name, svg in pictures(manifest["summary"]).items()})
    return files


def repair_card(recipe: Recipe, manifest: dict) -> None:
    """Rewrite the card, report or pictures of a published build if they went missing."""
    ds = dataset_for(recipe)
    for path, data in card_files(manifest, ds.uri).items():
        if not ds.exists(path):
            ds.write(path, data)


def _staged(ds: Dataset, staging: str, table: pa.Table, plans, spec: ShardSpec) -> list:
    def stage(plan):
        def fill(fh):
            return write_shard(table, plan, fh, spec, on_row_group=lambda n: failpoint("write.row_group"))
        return ds.stream(f"{staging}/{plan.path}", fill)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(len(plans), cores, 8))
    if workers == 1:
        return [stage(p) for p in plans]
    with ThreadPoolExecutor(max_workers=workers) as pool:  # pyarrow and hashlib release the GIL
        return list(pool.map(stage, plans))


def publish(
    ds: Dataset, tables: list[tuple[pa.Table, str, str]], spec: ShardSpec, make_manifest, previous_run: str | None,
    attempt: str, files: dict[str, bytes] | None = None,
) -> dict:
    """Stage, commit, publish. `make_manifest(data_entries, rejected_entries)` builds the manifest."""
    staging = f"{STAGING}/{attempt}"
    written = [_staged(ds, staging, table, plan_shards(table, prefix, split, spec), spec) for table, prefix, split in tables]
    facts = card_facts(tables[0][0], tables[1][0] if len(tables) > 1 else None)
    return commit(ds, staging, written, [prefix for _, prefix, _ in tables], make_manifest, facts, previous_run, attempt, files)


def publish_stream(ds: Dataset, streams: list[Stream], spec: ShardSpec, make_manifest, previous_run: str | None,
                   attempt: str, files: dict[str, bytes] | None = None, clean: bool = True) -> dict:
    """`publish` from staged parts (`stages.publish.Stream`, one per folder), never holding
    more than one part: what a staged build publishes."""
    staging = f"{STAGING}/{attempt}"
    written, facts = write_streams(ds, streams, spec, staging)
    return commit(ds, staging, written, [s.prefix for s in streams], make_manifest, facts, previous_run, attempt, files, clean)


def write_streams(ds: Dataset, streams: list[Stream], spec: ShardSpec, staging: str) -> tuple[list[list], dict]:
    """Step 1 of the protocol for staged parts: every final shard of each stream written
    under `staging`, a part at a time. Returns the shards per stream and the card's facts
    (columns, lengths)."""
    written, tallies = [], []
    for stream in streams:
        plans = stream_plan(stream.rows, rows_per_stream_shard(stream.first_table(), spec), stream.prefix, stream.split)
        tally = LengthTally()
        shards = []
        for plan in plans:
            def fill(fh, plan=plan):  # a retried write reads its parts again, with a fresh tally
                mine = LengthTally()
                shard = write_pieces(mine.passing(stream.pieces(plan)), stream.schema, plan.path, fh, spec,
                                     on_row_group=lambda n: failpoint("write.row_group"))
                return shard, mine

            shard, mine = ds.stream(f"{staging}/{plan.path}", fill)
            shards.append(shard)
            tally.merge(mine)
        written.append(shards)
        tallies.append(tally)
    facts = {"columns": schema_facts(streams[0].schema, streams[1].schema if len(streams) > 1 else None),
             "lengths": tallies[0].histogram()}
    return written, facts


def commit(ds: Dataset, staging: str, written: list[list], prefixes: list[str], make_manifest, facts: dict,
           previous_run: str | None, attempt: str, files: dict[str, bytes] | None, clean: bool = True) -> dict:
    """Steps 2-4 of the protocol (module docstring) for shards staged under `staging`."""
    failpoint("write.staged")
    current = read_manifest(ds)
    current_run = current.get("run_id") if current else None
    if current_run != previous_run:
        ds.remove_tree(staging)
        raise PublishConflict(
            f"{ds.uri}: another writer published run {current_run} while this build ran (it started from "
            f"{previous_run or 'an empty folder'}); nothing of this run was published. Rerun to replace it, or write elsewhere"
        )
    if current is not None:
        ds.remove(MANIFEST)  # unpublish what this build replaces: from here on the folder is unfinished
    paths = set()
    for shard in [s for group in written for s in group]:
        ds.move(f"{staging}/{shard.path}", shard.path)
        paths.add(shard.path)
    for folder in set(prefixes):
        for path in ds.list(folder):
            if path.endswith(".parquet") and path not in paths:  # from an earlier build with more shards
                ds.remove(path)
    files = files or {}
    for folder in {path.split("/")[0] for path in files if "/" in path}:
        for path in ds.list(folder):
            if path not in files:  # from an earlier build (another teacher's tokenizer files)
                ds.remove(path)
    for path, data in files.items():  # files beside the shards (kd/tokenizer.json, ...), in before the manifest
        ds.write(path, data)
    failpoint("write.committed")

    manifest = make_manifest([s.entry() for s in written[0]], [s.entry() for g in written[1:] for s in g])
    manifest = {**manifest, "columns": facts["columns"], "summary": {**manifest["summary"], "lengths": facts["lengths"]}}
    shown = card_files(manifest, ds.uri)
    for path, data in shown.items():
        ds.write(path, data)
    for path in set(PICTURES) - set(shown):  # a picture of the build this one replaces (e.g. it had a judge)
        ds.remove(path)
    try:
        ds.create(MANIFEST, dumps(manifest))
    except PublishConflict:
        theirs = read_manifest(ds) or {}
        if theirs.get("attempt") != attempt:  # not our own PUT answered twice after a dropped connection
            raise
    if clean:
        ds.remove_tree(STAGING)  # ours, and what crashed or losing attempts left behind
    else:
        ds.remove_tree(staging)  # the caller still reads the rest (a staged build's stages)
    return manifest


class make_manifest_for:
    """The manifest of a build, made once its shards are written: `(data entries, rejected
    entries) -> manifest`, for `publish`. Carries the publish attempt's name."""

    def __init__(self, recipe: Recipe, summary: dict, run_id: str, created_at: datetime, engine: dict,
                 key: str = "", source_digest: str = "", kd: dict | None = None):
        self.recipe, self.summary, self.run_id, self.created_at = recipe, summary, run_id, created_at
        self.engine, self.key, self.source_digest, self.kd = engine, key, source_digest, kd
        self.attempt = f"{run_id[:8]}-{uuid.uuid4().hex[:8]}"

    def __call__(self, data: list[dict], rejects: list[dict]) -> dict:
        recipe, kd = self.recipe, self.kd
        manifest = build_manifest(
            recipe.name, self.run_id, self.created_at.isoformat(), recipe.model_dump(mode="json"), self.engine,
            data, rejects, self.summary, package_versions(), key=self.key, attempt=self.attempt, source_digest=self.source_digest,
        )
        if kd is not None:
            stored = sum(size for e in data for name, size in e.get("column_bytes", {}).items() if name.startswith("kd_topk_"))
            manifest["kd"] = {**kd, "topk_bytes": stored, "bytes_per_entry": round(stored / kd["entries"], 3) if kd["entries"] else None}
        return manifest


@task(name="write-shards", cache_policy=NONE)
def write_dataset(
    kept: list[dict], rejected: list[dict], recipe: Recipe, summary: dict,
    run_id: str, created_at: datetime, engine: dict, schema: pa.Schema = ROW_SCHEMA,
    key: str = "", source_digest: str = "", previous_run: str | None = None,
    kd: dict | None = None, files: dict[str, bytes] | None = None,
) -> dict:
    """Shards first, then the card, the manifest last: a folder without a manifest is unfinished.

    Storage retries happen inside (per operation, with backoff); the task itself
    is not retried, so an outage ends in one clear error.
    """
    rejected = [{"run_id": run_id, "created_at": created_at, **r} for r in rejected]
    table = to_table(kept, schema)
    if kd is not None:
        table = round_logprobs(table, recipe.kd.logprob_bits)
    tables = [(table, "data", "train"), (rejects_table(rejected), "rejected", "rejected")]
    make_manifest = make_manifest_for(recipe, summary, run_id, created_at, engine, key, source_digest, kd)
    attempt = make_manifest.attempt
    try:
        manifest = publish(dataset_for(recipe), tables, shard_spec(recipe), make_manifest, previous_run, attempt, files)
    except PublishConflict:
        raise
    except StorageError as err:
        raise StorageError(f"{err}. Nothing of this build was published (no manifest); rerun the same recipe once "
                           "storage answers: finished generation comes from the cache") from None
    get_run_logger().info("published %s: %d shards, %d rows (attempt %s)", recipe.output.uri, len(manifest["shards"]), manifest["rows"], attempt)
    return manifest


@task(name="write-shards", cache_policy=NONE)
def write_staged(ds: Dataset, streams: list, recipe: Recipe, make_manifest: make_manifest_for,
                 previous_run: str | None, files: dict[str, bytes] | None = None) -> tuple[dict, int]:
    """`write_dataset` for a staged build: the final shards are cut from the staged ones as
    they stream past, in the build's worker process (`write_streams`); then the commit,
    manifest last. Same protocol as `publish_stream`. Returns the manifest and the worker's
    peak RSS in MiB."""
    staging = f"{STAGING}/{make_manifest.attempt}"
    try:
        (written, facts), peak = in_worker(write_streams, ds, streams, shard_spec(recipe), staging)
        get_run_logger().info("wrote %d shards under %s (worker peak RSS %d MiB)", sum(map(len, written)), staging, peak)
        manifest = commit(ds, staging, written, [s.prefix for s in streams], make_manifest, facts, previous_run,
                          make_manifest.attempt, files, clean=False)  # the flow removes _temporary/ once it has read what it needs
    except PublishConflict:
        raise
    except StorageError as err:
        raise StorageError(f"{err}. Nothing of this build was published (no manifest); rerun the same recipe once "
                           "storage answers: finished stages are not redone") from None
    get_run_logger().info("published %s: %d shards, %d rows (attempt %s)", recipe.output.uri, len(manifest["shards"]),
                          manifest["rows"], make_manifest.attempt)
    return manifest, peak
