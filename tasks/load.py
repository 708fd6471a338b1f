from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from distillery.adapters.storage import read_many, storage_options
from distillery.recipe import SourceConfig, StorageConfig
from distillery.sources import ParsedSource, parse_sources


@task(name="load-seeds", cache_policy=NONE)
def load_seeds(source: SourceConfig, storage: StorageConfig | None = None) -> ParsedSource:
    """Every seed file the URI (or glob) names, parsed; storage retries are inside read_many."""
    storage = storage or StorageConfig()
    files = read_many(
        source.uri, "seed file", storage.retries, storage.retry_backoff_seconds,
        **storage_options(storage.credentials_block, storage.endpoint_url),
    )
    return parse_sources(
        files,
        fmt=source.format,
        instruction_column=source.instruction_column,
        input_column=source.input_column,
        id_column=source.id_column,
        limit=source.limit,
        response_column=source.response_column,
    )


@task(name="load-candidates", cache_policy=NONE)
def load_candidates(uri: str, storage: StorageConfig, input_column: str | None = None) -> ParsedSource:
    """Candidates from elsewhere (an earlier run, another generator) for a synthesis recipe to
    filter as its round 0: an 'instruction' column, and `input_column` when the recipe uses one."""
    files = read_many(uri, "candidates file", storage.retries, storage.retry_backoff_seconds,
                      **storage_options(storage.credentials_block, storage.endpoint_url))
    return parse_sources(files, instruction_column="instruction", input_column=input_column, id_column=None)
