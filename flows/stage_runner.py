"""A build's stages as they run (`Stages`): the records of every stage, the shards run now,
engine start, and where the shards run: this process and its worker (tasks/stages.py), or
a Ray cluster with the engines in Ray actors (tasks/ray_stages.py)."""

from __future__ import annotations

from functools import partial

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from distillery.adapters.engine import EngineSpec, get_engine, is_endpoint
from distillery.execution import ExecutionConfig
from distillery.stages.contract import Record
from flows.build import Build, timed
from tasks.generate import EngineBatches
from tasks.stages import run_stage


class Stages:
    """The build's stages as they run: records per stage, shards run now, engine start; and
    where they run (`execution`): here, or as Ray tasks with the engines in Ray actors."""

    def __init__(self, store, root: str, build: Build, stages: int = 0, shards: int = 0,
                 execution: ExecutionConfig | None = None):
        self.store, self.root, self.b = store, root, build
        self.execution = execution or ExecutionConfig()
        self.pools: dict[EngineSpec, object] = {}  # Ray engine pools by engine settings
        if self.execution.backend == "ray":
            from distillery.adapters.ray_engines import connect

            connect(self.execution.ray_address, self.execution.namespace)
        self.records: dict[str, list[Record]] = {}
        self.ran: dict[str, int] = {}
        self.worker_rss: dict[str, int] = {}  # the worker's peak RSS (MiB) per stage run there
        self.units, self.finished = stages * shards, 0  # stage-shards, for the UI's progress
        self.progress = create_progress_artifact(0.0, description="shards done per stage") if self.units else None

    def _group_done(self, name: str, done: int, total: int, peak: int | None = None) -> None:
        """A group of shards finished: the worker's peak, then the UI's progress."""
        if peak is not None:
            self.worker_rss[name] = max(peak, self.worker_rss.get(name, 0))
        if self.progress is not None:
            finished = [f"{stage} {len(records)}/{len(records)}" for stage, records in self.records.items() if stage != "load"]
            update_progress_artifact(self.progress, 100.0 * (self.finished + done) / self.units,
                                     description="shards done per stage: " + ", ".join([*finished, f"{name} {done}/{total}"]))

    def run(self, stage, inputs: list[list], timer: str, extra: list[str] = (), engine: bool = False,
            in_flow: bool = False, endpoint: bool = False) -> list[Record]:
        """`run_stage`: an engine stage (`engine`) and a stage whose batches are task runs
        (`in_flow`) run in this process, every other in the build's worker process. A stage
        whose model is an endpoint (`endpoint`) runs in this process on either backend, without
        the gpu tag: the endpoint's own limits hold instead."""
        with timed(self.b.stages, timer):
            if endpoint:
                results = run_stage(self.store, self.root, stage, inputs, extra, False, partial(self._group_done, stage.name), True)
            elif self.execution.backend == "ray":
                results = self._on_cluster(stage, inputs, list(extra), engine or in_flow)
            else:
                results = run_stage(self.store, self.root, stage, inputs, extra, engine, partial(self._group_done, stage.name), in_flow)
        self.finished += len(results)
        self.records[stage.name] = [r for r, _ in results]
        self.ran[stage.name] = sum(ran for _, ran in results)
        # Engine start is its own stage: moved out of the stage that paid for it (a skipped
        # shard's record holds an earlier run's).
        opened = sum(dict(r.facts).get("engine_seconds", 0.0) for r, ran in results if ran)
        self.b.stages[timer] -= opened
        self.b.stages["engine_start"] = self.b.stages.get("engine_start", 0.0) + opened
        return self.records[stage.name]


    def _on_cluster(self, stage, inputs: list[list], extra: list[str], engine: bool) -> list:
        """Every shard of `stage` as a Ray task (tasks/ray_stages.py): an engine stage's shards
        reserve no CPU (they wait on the engine actors), engines x inflight_batches at once."""
        import ray

        from tasks.ray_stages import run_stage_on_cluster

        ex = self.execution
        if engine:
            engines = max((len(p.names) for p in self.pools.values()), default=1)
            cpus, window = 0.0, engines * ex.inflight_batches
        else:
            free = ray.cluster_resources().get("CPU", 1)
            cpus, window = ex.task_cpus, max(2, int(free // ex.task_cpus) if ex.task_cpus else int(free) * 2)
        return run_stage_on_cluster(self.store, self.root, stage, inputs, extra, cpus, window, partial(self._group_done, stage.name))

    def opener(self, spec: EngineSpec):
        """`open_engine` for an engine stage: this process's engine, or the cluster's engines
        for `spec` (started now, or found warm; the wait counts as engine start)."""
        if self.execution.backend != "ray" or is_endpoint(spec):
            return partial(get_engine, spec)
        if spec not in self.pools:
            from distillery.adapters.ray_engines import start_pool

            self.pools[spec], waited = start_pool(spec, self.execution)
            self.b.stages["engine_start"] = self.b.stages.get("engine_start", 0.0) + waited
            get_run_logger().info("engines for %s on the cluster: %s (%.1f s to start or find warm)",
                                  spec.model, ", ".join(self.pools[spec].names), waited)
        return self.pools[spec]

    def batches(self, teacher: str, spec: EngineSpec, params: dict, progress, total: int, done: int):
        """Generate's `complete`: cached task runs on this process's engine, or calls to the cluster's."""
        if self.execution.backend == "ray" and not is_endpoint(spec):
            from distillery.adapters.ray_engines import RemoteBatches

            return RemoteBatches(teacher, spec.model, params, self.opener(spec))
        batches = EngineBatches(teacher, spec, params, progress, total)
        batches.done = done
        return batches
