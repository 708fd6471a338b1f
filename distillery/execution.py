"""Where a build runs: this process (`local`) or a Ray cluster (`ray`). Pure config.

Nothing here changes what a build makes: the build key, every stage's key and the
published shards are the same on either backend, so `--set execution.backend=ray`
switches a build (and resumes one started locally) without touching anything else.
Rows per shard stay `output.stage_rows`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ExecutionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    backend: Literal["local", "ray"] = Field(
        "local",
        description="'local': every stage in this process (and its worker process), one engine. "
        "'ray': every stage shard as a Ray task on a cluster, engines as warm Ray actors (one per "
        "GPU), dedup shuffled across the cluster. The flow run is the Ray driver; storage must be "
        "reachable from every node (s3:// on a real cluster).",
    )
    ray_address: str | None = Field(
        None,
        description="The Ray cluster: 'auto' (a cluster started on this node with `ray start`), "
        "'ray://head:10001' (Ray Client), or empty for RAY_ADDRESS, else a new local Ray instance.",
    )
    namespace: str = Field(
        "distillery", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
        description="Ray namespace of the named engine actors: builds in one namespace share warm engines.",
    )
    engines: Literal["auto"] | int = Field(
        "auto",
        description="Engines per model: 'auto' is one per GPU in the cluster (GPUs // "
        "teacher.tensor_parallel_size), or one per node on a CPU-only cluster; or a number (>= 1).",
    )
    engine_cpus: float = Field(
        1.0, ge=0, le=256,
        description="CPUs an engine actor reserves (on a CPU-only cluster, the cores it computes on).",
    )
    engine_cpu_binds: list[str] = Field(
        default_factory=list,
        description="CPU-only clusters with several engines on one node: engine i's threads are "
        "bound to cores engine_cpu_binds[i % len] (vLLM's VLLM_CPU_OMP_THREADS_BIND, e.g. "
        "['0-15', '16-31']). Empty: vLLM binds each engine itself, and engines sharing a node "
        "pick the same cores. Ignored on GPUs.",
    )
    inflight_batches: int = Field(
        2, ge=1, le=64,
        description="Shards queued per engine: with 2, an engine's next batch is waiting when it "
        "finishes one. More hides a slow driver or storage; each costs one shard of memory.",
    )
    engine_start_timeout_seconds: float = Field(
        1800, ge=30, le=86400,
        description="How long a shard waits for a (re)starting engine before it fails: it must "
        "outlast an engine start (minutes for a large model).",
    )
    task_cpus: float = Field(
        1.0, ge=0, le=64,
        description="CPUs a CPU stage's shard task (render, signatures, dedup, filter) reserves.",
    )
    dedup_min_rows: int = Field(
        200_000, ge=0,
        description="Below this many rows to dedup, the local deduplicator runs in the driver's "
        "worker instead of the cluster shuffle (same result; less overhead).",
    )
    dedup_partitions: int = Field(
        16, ge=1, le=4096,
        description="Hash partitions of the dedup shuffle: each reducer holds one partition's band keys.",
    )

    @field_validator("engines")
    @classmethod
    def _some_engines(cls, value):
        if value != "auto" and value < 1:
            raise ValueError("execution.engines must be 'auto' or at least 1")
        return value

    def engine_count(self, gpus: float, nodes: int, tensor_parallel_size: int) -> int:
        """How many engines `engines` means on a cluster with `gpus` GPUs and `nodes` nodes."""
        if self.engines != "auto":
            return int(self.engines)
        if gpus >= tensor_parallel_size:
            return max(1, int(gpus // tensor_parallel_size))
        return max(1, nodes)
