"""When tasks retry: only on I/O (storage) and engine failures, never on bad input."""

from __future__ import annotations

from distillery.errors import DistilleryError


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
