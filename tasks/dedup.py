from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from distillery.adapters import dedup_index
from distillery.dedup import Deduplicator, dedup_text, deduplicate_rows, index_entries
from distillery.adapters.storage import storage_options
from distillery.recipe import DedupConfig, StorageConfig
from tasks.retry import transient


def _options(storage: StorageConfig | None) -> dict:
    storage = storage or StorageConfig()
    return {"retries": storage.retries, "backoff": storage.retry_backoff_seconds,
            **storage_options(storage.credentials_block, storage.endpoint_url)}


@task(name="dedup", cache_policy=NONE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient)
def dedup(rows: list[dict], config: DedupConfig, storage: StorageConfig | None = None) -> tuple[list[dict], list[dict]]:
    """Exact, then MinHash-LSH near-duplicate removal (against the index too, if set)."""
    if not config.enabled:
        return [{**r, "dedup_cluster": r["id"]} for r in rows], []
    dedup = Deduplicator(config.params())
    if config.index_uri:
        loaded = dedup_index.load_into(dedup, config.index_uri, **_options(storage))
        get_run_logger().info("dedup index %s: %d published rows", config.index_uri, loaded)
    kept, rejected, _ = deduplicate_rows(rows, config.field, config.params(), index=dedup)
    return kept, rejected


@task(name="update-dedup-index", cache_policy=NONE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient)
def update_index_from(store, kept_files: list, config: DedupConfig, storage: StorageConfig | None = None) -> int:
    """`update_index` from a staged build's kept shards: one index part per shard."""
    from distillery.stages.executor import read_rows

    total = None
    for f in kept_files:
        rows = read_rows(store, [f])
        ids, keys, sigs = index_entries([r["id"] for r in rows], [dedup_text(r, config.field) for r in rows], config.params())
        total = dedup_index.append(config.index_uri, config.params(), ids, keys, sigs, **_options(storage))["rows"]
    return total if total is not None else dedup_index.append(config.index_uri, config.params(), [], [], None, **_options(storage))["rows"]
