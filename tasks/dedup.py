from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from distillery.dedup import deduplicate
from distillery.recipe import DedupConfig


@task(name="dedup", cache_policy=NONE)
def dedup(rows: list[dict], config: DedupConfig) -> tuple[list[dict], list[dict]]:
    if not config.enabled:
        return [{**r, "dedup_cluster": r["id"]} for r in rows], []
    return deduplicate(rows, config.field, config.ngram, config.num_perm, config.threshold)
