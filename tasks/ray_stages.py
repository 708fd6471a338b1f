"""Prefect wrappers for stages on a Ray cluster: one task run per shard and stage.

The flow run is the Ray driver. Each task run submits its shard as a Ray task
(adapters.ray_stages) and waits for it; it returns the shard's record (paths and
counts), never rows. Up to `window` shards of a stage are in flight at once (engines x
execution.inflight_batches for an engine stage), so every engine always has its next
shard waiting. A shard whose record matches is skipped inside the Ray task, so a
retried task run or a rerun of the flow commits only missing shards.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from prefect.utilities.annotations import quote

from distillery.adapters.ray_stages import run_shard_on_cluster
from distillery.errors import DistilleryError
from distillery.stages.contract import Record, StagedFile
from tasks.retry import engine_died, transient


def cluster_failure(task, task_run, state) -> bool:
    """Retry what a cluster throws at a shard (a worker, node or engine lost, storage I/O);
    never a problem with the input or the recipe."""
    if transient(task, task_run, state) or engine_died(task, task_run, state):
        return True
    try:
        state.result()
    except DistilleryError:
        return False
    except Exception as err:
        from ray.exceptions import RayError

        return isinstance(err, RayError)
    return False


@task(name="ray-shard", cache_policy=NONE, retries=2, retry_delay_seconds=5, retry_condition_fn=cluster_failure)
def ray_shard(store, root: str, stage, shard: int, inputs: list[StagedFile], extra: list[str],
              cpus: float) -> tuple[Record, bool, int]:
    """One shard of a stage on the cluster: (its record, ran now, the Ray worker's peak RSS MiB)."""
    return run_shard_on_cluster(store, root, stage, shard, inputs, extra, cpus)


def run_stage_on_cluster(store, root: str, stage, inputs: list[list[StagedFile]], extra: list[str], cpus: float,
                         window: int, on_group=None) -> list[tuple[Record, bool]]:
    """Every shard of a stage as task runs, at most `window` at once. Returns (record, ran
    now) per shard in shard order; `on_group(done, total, peak)` hears of each shard."""
    results: dict[int, tuple[Record, bool]] = {}
    pending: dict = {}

    def collect(future) -> None:
        record, ran, peak = future.result()
        results[pending.pop(future)] = (record, ran)
        if on_group is not None:
            on_group(len(results), len(inputs), peak)

    for shard, files in enumerate(inputs):
        while len(pending) >= max(1, window):
            collect(next(as_completed(list(pending))))
        future = ray_shard.with_options(task_run_name=f"{stage.name}-{shard:05d}").submit(
            store, root, quote(stage), shard, quote(files), list(extra), cpus)
        pending[future] = shard
    while pending:
        collect(next(as_completed(list(pending))))
    return [results[i] for i in range(len(inputs))]
