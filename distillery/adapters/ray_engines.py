"""Warm engines on a Ray cluster: the project's own engine (adapters.engine) in named actors.

One actor per engine, named `engine-<settings digest>-<i>` in the execution's namespace,
detached (it outlives the flow run, so the next build asking for the same settings finds
it warm) and restarted by Ray when it dies. Shards reach an engine through
`RemoteEngine`, which has the local engine's batch calls (chat, score,
count_prompt_tokens): a call whose engine dies goes to another engine of the pool, or
waits for the restart, until `execution.engine_start_timeout_seconds`.

Ray is imported inside functions: a local build never loads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from distillery.adapters.engine import EngineError, EngineSpec
from distillery.errors import DistilleryError

PREFIX = "engine-"
QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "VLLM_NO_USAGE_STATS": "1", "RAY_DEDUP_LOGS": "1"}


class RayUnavailable(DistilleryError):
    """The Ray cluster cannot be reached or cannot hold the engines asked for."""


def connect(address: str | None, namespace: str) -> None:
    """Join the cluster as its driver (once per process). `address`: 'auto', 'ray://host:10001',
    None for RAY_ADDRESS or, failing that, a new Ray instance on this machine."""
    import ray

    for name, value in QUIET.items():
        os.environ.setdefault(name, value)
    if ray.is_initialized():
        return
    try:
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, namespace=namespace,
                 log_to_driver=True, runtime_env={"env_vars": dict(QUIET)})
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise RayUnavailable(f"execution.ray_address {address!r}: cannot join the Ray cluster ({str(err)[:300]}); "
                             "start it (`ray start --head`, or infra/ray/raycluster.yaml) or fix the address") from None


def spec_digest(spec: EngineSpec) -> str:
    return hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:10]


class EngineActor:
    """The engine inside a Ray actor (made remote in `_actor_class`)."""

    def __init__(self, spec: dict):
        # Ray gives its workers OMP_NUM_THREADS=<num_cpus> (1). vLLM's CPU backend binds its
        # own threads, but torch's other ops then run on one thread instead of the node's
        # cores, which changes float reduction order: sampled tokens drift from a local
        # engine's (21 of 24 demo answers identical, 24 of 24 without it). Before torch loads.
        os.environ.pop("OMP_NUM_THREADS", None)
        from distillery.adapters.engine import Engine

        started = time.perf_counter()
        self.engine = Engine(EngineSpec(**spec))
        self.start_seconds = time.perf_counter() - started

    def info(self) -> dict:
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "model": self.engine.spec.model,
                "start_seconds": round(self.start_seconds, 1)}

    def _alive(self) -> None:
        # A failed batch leaves vLLM in an unknown state: exit, and Ray restarts a fresh engine.
        if self.engine.dead:
            os._exit(1)

    def chat(self, conversations: list, sampling: dict, extra: dict) -> list:
        self._alive()
        return self.engine.chat(conversations, sampling, **extra)

    def score(self, conversations: list, k: int, answer_ids: list | None) -> list:
        self._alive()
        return self.engine.score(conversations, k, answer_ids)

    def count_prompt_tokens(self, conversations: list) -> list[int]:
        self._alive()
        return self.engine.count_prompt_tokens(conversations)


_remote_class = None


def _actor_class():
    global _remote_class
    if _remote_class is None:
        import ray

        _remote_class = ray.remote(EngineActor)
    return _remote_class


@dataclass(frozen=True)
class EnginePool:
    """Names of a model's engines: picklable, so a shard task finds them by name."""

    names: tuple[str, ...]
    namespace: str
    timeout: float

    def __call__(self) -> "RemoteEngine":
        """`open_engine` for an engine stage: the shard being run picks its first engine."""
        return RemoteEngine(self, current_shard)


def start_pool(spec: EngineSpec, execution) -> tuple[EnginePool, float]:
    """The engines for `spec` (started, or found warm) and the seconds spent waiting for them."""
    import ray

    resources = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n["Alive"])
    count = execution.engine_count(resources.get("GPU", 0), nodes, spec.tensor_parallel_size)
    names = tuple(f"{PREFIX}{spec_digest(spec)}-{i}" for i in range(count))
    gpus = spec.tensor_parallel_size if resources.get("GPU", 0) else 0
    binds = execution.engine_cpu_binds if not gpus else []
    actors = []
    for i, name in enumerate(names):
        env = {**QUIET, **({"VLLM_CPU_OMP_THREADS_BIND": binds[i % len(binds)]} if binds else {})}
        where = _placement(name, execution.namespace, gpus, execution.engine_cpus, env)
        actors.append(_actor_class().options(
            name=name, namespace=execution.namespace, get_if_exists=True, lifetime="detached",
            max_restarts=-1, max_task_retries=0, runtime_env={"env_vars": env}, **where,
        ).remote(asdict(spec)))
    started = time.perf_counter()
    pending = [a.info.remote() for a in actors]
    ready, waiting = ray.wait(pending, num_returns=len(pending), timeout=execution.engine_start_timeout_seconds)
    if waiting:
        raise RayUnavailable(f"{len(waiting)} of {count} engines for {spec.model} did not start within "
                             f"execution.engine_start_timeout_seconds ({execution.engine_start_timeout_seconds:.0f} s): "
                             "the cluster may lack the GPUs/CPUs they reserve; see `distillery engines ls` and the Ray logs")
    try:
        ray.get(ready)
    except Exception as err:
        raise EngineError(f"an engine for {spec.model} failed to start on the cluster: {str(err)[:500]}") from None
    return EnginePool(names, execution.namespace, execution.engine_start_timeout_seconds), time.perf_counter() - started


def _placement(name: str, namespace: str, gpus: int, cpus: float, env: dict) -> dict:
    """Where an engine actor goes: SPREAD over the nodes, reserving `gpus` GPUs; with tensor
    parallelism (gpus > 1), into a placement group of its own, one GPU per bundle packed on one
    node, which vLLM's Ray executor fills with its workers (vLLM's documented pattern for an
    engine inside an actor; not run here: no GPU). The group is named after the engine and
    reused, so a warm engine found again reserves nothing new."""
    if gpus <= 1:
        return {"num_cpus": cpus, "num_gpus": gpus, "scheduling_strategy": "SPREAD"}
    from ray.util.placement_group import get_placement_group, placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    try:
        group = get_placement_group(f"{name}-gpus")
    except ValueError:
        group = placement_group([{"GPU": 1, "CPU": max(cpus, 1)}] * gpus, strategy="STRICT_PACK",
                                name=f"{name}-gpus", lifetime="detached")
    env["DISTILLERY_ENGINE_EXECUTOR"] = "ray"
    return {"num_cpus": 0, "num_gpus": 0, "scheduling_strategy": PlacementGroupSchedulingStrategy(
        group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True)}


current_shard = 0  # set by the shard task before the stage runs: which engine it tries first


class RemoteEngine:
    """adapters.engine.Engine's batch calls, answered by a pool's actors."""

    def __init__(self, pool: EnginePool, first: int = 0):
        self.pool, self.first = pool, first

    def chat(self, conversations: list, sampling: dict, **extra) -> list:
        return self._call("chat", conversations, sampling, extra) if conversations else []

    def score(self, conversations: list, k: int, answer_ids: list | None = None) -> list:
        return self._call("score", conversations, k, answer_ids)

    def count_prompt_tokens(self, conversations: list) -> list[int]:
        return self._call("count_prompt_tokens", conversations)

    def _call(self, method: str, *args):
        """The call on the shard's engine; if it died (killed, OOM, node lost), on the next one,
        round the pool, with a growing pause each round, until the pool's timeout."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        names, deadline, attempt = self.pool.names, time.monotonic() + self.pool.timeout, 0
        while True:
            name = names[(self.first + attempt) % len(names)]
            try:
                actor = ray.get_actor(name, namespace=self.pool.namespace)
                return ray.get(getattr(actor, method).remote(*args))
            except (RayActorError, GetTimeoutError, ValueError) as err:  # ValueError: no such actor (stopped)
                if time.monotonic() > deadline:
                    raise EngineError(f"every engine of {names} failed or stayed down for "
                                      f"{self.pool.timeout:.0f} s (last: {name}: {str(err)[:200]}); "
                                      "see `distillery engines ls`") from None
                attempt += 1
                if attempt % len(names) == 0:
                    time.sleep(min(2.0 ** (attempt // len(names)), 30.0))


@dataclass(frozen=True)
class RemoteBatches:
    """Generate's `complete` on a cluster: one engine call per batch, rows as the local
    cached batches make them (`tasks.generate.generate_batch`)."""

    teacher: str
    model: str
    params: dict
    pool: EnginePool

    def __call__(self, rows: list[dict]) -> tuple[list[dict], float]:
        from distillery.generation import attach_completions

        completions = self.pool().chat([r["messages"] for r in rows], self.params)
        return attach_completions(rows, completions, self.teacher, self.model, self.params, datetime.now(timezone.utc)), 0.0


def list_engines(namespace: str | None = None) -> list[dict]:
    """Every engine actor the connected cluster knows, alive or restarting (all namespaces
    unless one is given): name, namespace, state, restarts, pid, node."""
    import ray
    from ray._private import state

    try:
        table = state.actors()
    except Exception:  # a Ray Client driver (ray://) cannot read the actor table: names only
        table = {}
    out = []
    for named in ray.util.list_named_actors(all_namespaces=True):
        name, space = named["name"], named["namespace"]
        if not name.startswith(PREFIX) or (namespace and space != namespace):
            continue
        try:
            actor_id = ray.get_actor(name, namespace=space)._actor_id.hex()
        except ValueError:  # stopped since it was listed
            continue
        except AttributeError:
            actor_id = ""
        row = table.get(actor_id, {})
        out.append({"name": name, "namespace": space, "state": row.get("State", "UNKNOWN"),
                    "restarts": row.get("NumRestarts", 0), "pid": row.get("Pid"),
                    "node": (row.get("Address") or {}).get("NodeID", "")[:12]})
    return sorted(out, key=lambda a: (a["namespace"], a["name"]))


def stop_engines(names: list[str] | None, namespace: str) -> list[str]:
    """Kill engine actors for good (no restart): those named, or every one in `namespace`."""
    import ray

    alive = [a for a in list_engines(namespace) if a["state"] != "DEAD"]
    chosen = [a["name"] for a in alive if names is None or a["name"] in names]
    unknown = sorted(set(names or []) - {a["name"] for a in alive})
    if unknown:
        raise RayUnavailable(f"no engine named {', '.join(unknown)} in namespace {namespace!r}; see `distillery engines ls`")
    from ray.util.placement_group import get_placement_group, remove_placement_group

    for name in chosen:
        ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
        try:
            remove_placement_group(get_placement_group(f"{name}-gpus"))  # a tensor-parallel engine's GPUs
        except ValueError:
            pass
    return chosen
