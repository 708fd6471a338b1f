"""Publishing a staged build: the final shards cut from the kept shards and every stage's
rejects (in the build's worker process), then the commit, manifest last."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from prefect.utilities.annotations import quote

from distillery.kd import round_logprobs, with_kd
from distillery.recipe import Recipe
from distillery.schema import REJECT_SCHEMA, ROW_SCHEMA, rejects_table, to_table
from distillery.stages.contract import Record
from distillery.stages.executor import read_rows, read_table
from distillery.stages.publish import Stream
from flows.build import Build, engine_info, timed
from tasks.kd import kd_section
from tasks.write import make_manifest_for, write_staged

if TYPE_CHECKING:
    from flows.staged import Stages


def published_schema(recipe: Recipe) -> pa.Schema:
    return with_kd(ROW_SCHEMA, recipe.kd.logprob_dtype) if recipe.kd.top_k else ROW_SCHEMA


def first_rows(store, final: list[Record], count: int = 10) -> list[dict]:
    rows: list[dict] = []
    for r in final:
        if len(rows) >= count:
            break
        rows += read_rows(store, [r.files[0]])[:count]
    return rows[:count]


def publish_staged(recipe: Recipe, b: Build, store, run: Stages, final: list[Record], summary: dict,
                   schema: pa.Schema | None = None) -> dict:
    """The kept rows (of `schema`: by default the recipe's row schema) and every stage's
    rejects, cut from the staged shards into the final ones a part at a time; manifest last."""
    created, kd = b.created_at, bool(recipe.kd.top_k) and schema is None
    schema = schema or published_schema(recipe)

    rejected_files = [r.files[1] for records in run.records.values() for r in records if r.files[1].rows]
    bits = recipe.kd.logprob_bits if kd else None
    streams = [Stream([(partial(kept_part, store, r.files[0], b.run_id, created, schema, bits), r.rows_out) for r in final],
                      "data", "train", schema),
               Stream([(partial(rejected_part, store, f, b.run_id, created), f.rows) for f in rejected_files],
                      "rejected", "rejected", REJECT_SCHEMA)]
    with timed(b.stages, "write"):
        kd_info, files = (None, None)
        if kd:
            kd_info, files = kd_section(recipe, [])
            kd_info["entries"] = sum(_kd_entries(store, r.files[0]) for r in final)
        summary["stage_seconds"] = {k: round(v, 3) for k, v in b.stages.items()}
        make = make_manifest_for(recipe, summary, b.run_id, created, engine_info(recipe), b.key, b.source_digest, kd_info)
        manifest, run.worker_rss["publish"] = write_staged(store, quote(streams), recipe, quote(make), b.previous_run, quote(files))
    manifest["summary"]["stage_seconds"]["write"] = round(b.stages["write"], 3)
    return manifest


def kept_part(store, file, run_id: str, created, schema: pa.Schema, logprob_bits: int | None) -> pa.Table:
    """A staged shard's kept rows as published (`Stream` parts: module-level, so a part travels
    to the worker that writes the shards)."""
    rows = [{**row, "run_id": run_id, "created_at": row.get("created_at") or created} for row in read_rows(store, [file])]
    table = to_table(rows, schema)
    return table if logprob_bits is None else round_logprobs(table, logprob_bits)


def rejected_part(store, file, run_id: str, created) -> pa.Table:
    return rejects_table([{**row, "run_id": run_id, "created_at": created} for row in read_rows(store, [file])])


def _kd_entries(store, file) -> int:
    """kd.entries of a staged shard, counted in Arrow: (token, k) pairs stored."""
    per_token = read_table(store, file).column("kd_topk_ids").combine_chunks().flatten()
    return int(pc.sum(pc.list_value_length(per_token)).as_py() or 0)
