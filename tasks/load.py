from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from distillery.adapters.storage import read_bytes
from distillery.recipe import SourceConfig
from distillery.sources import ParsedSource, parse_source
from tasks.retry import transient


@task(name="load-seeds", cache_policy=NONE, retries=2, retry_delay_seconds=2, retry_condition_fn=transient)
def load_seeds(source: SourceConfig) -> ParsedSource:
    data = read_bytes(source.uri, what="seed file")
    return parse_source(
        data,
        source.uri,
        fmt=source.format,
        instruction_column=source.instruction_column,
        input_column=source.input_column,
        id_column=source.id_column,
        limit=source.limit,
    )
