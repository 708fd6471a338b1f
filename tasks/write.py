from __future__ import annotations

from datetime import datetime

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NONE

from distillery.adapters.storage import open_dataset
from distillery.recipe import Recipe
from distillery.report import CARD, MANIFEST, REPORT, build_manifest, dataset_card, dumps, package_versions, run_report_markdown
from distillery.schema import ROW_SCHEMA, rejects_table, to_table
from distillery.shards import encode_shards
from tasks.retry import transient


@task(name="write-shards", cache_policy=NONE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient)
def write_dataset(
    kept: list[dict], rejected: list[dict], recipe: Recipe, summary: dict,
    run_id: str, created_at: datetime, engine: dict, schema: pa.Schema = ROW_SCHEMA,
) -> dict:
    """Shards first, then the card, the manifest last: a folder without a manifest is unfinished."""
    out = recipe.output
    rejected = [{"run_id": run_id, "created_at": created_at, **r} for r in rejected]
    data = encode_shards(to_table(kept, schema), "data", "train", out.rows_per_shard, out.compression)
    rejects = encode_shards(rejects_table(rejected), "rejected", "rejected", out.rows_per_shard, out.compression)
    ds = open_dataset(out.uri)
    if ds.exists(MANIFEST):
        ds.remove(MANIFEST)
    for shard in [*data, *rejects]:
        ds.write(shard.path, shard.data)
    written = {s.path for s in [*data, *rejects]}
    # Shards of an earlier build with more shards would otherwise linger beside ours.
    for path in ds.list("data") + ds.list("rejected"):
        if path.endswith(".parquet") and path not in written:
            ds.remove(path)
    manifest = build_manifest(
        recipe.name, run_id, created_at.isoformat(), recipe.model_dump(mode="json"), engine,
        [s.entry() for s in data], [s.entry() for s in rejects], summary, package_versions(),
    )
    ds.write(CARD, dataset_card(manifest).encode())
    ds.write(REPORT, run_report_markdown(recipe.name, out.uri, run_id, summary).encode())
    ds.write(MANIFEST, dumps(manifest))
    return manifest
