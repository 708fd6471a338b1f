from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from distillery.adapters.storage import read_bytes
from distillery.errors import DistilleryError
from distillery.recipe import SourceConfig
from distillery.sources import ParsedSource, parse_source


def transient(task, task_run, state) -> bool:
    """Retry I/O hiccups, not input errors: those fail the same way every time."""
    try:
        state.result()
    except DistilleryError:
        return False
    except OSError:
        return True
    except Exception:
        return False
    return False


def engine_died(task, task_run, state) -> bool:
    """Retry an engine task once when the engine failed mid-batch: it is reopened on retry."""
    from distillery.adapters.engine import EngineError

    try:
        state.result()
    except EngineError as err:
        return "failed on a batch" in str(err)
    except Exception:
        return False
    return False


# Engine tasks carry this tag: `prefect concurrency-limit create gpu 1` keeps two
# flows from loading two engines on one GPU (`distillery serve` sets it up).
ENGINE_TAG = "gpu"


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
