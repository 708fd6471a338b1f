"""Teacher generation: one cached task run per batch of rows and teacher.

A batch's completions are cached by content (the batch's conversations, the
teacher, its model and engine settings, the sampling settings, and the code
version), persisted under Prefect's result storage. A crashed or cancelled run,
rerun with the same recipe, recomputes only the batches it had not finished; a
changed recipe recomputes the batches the change touches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timezone

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE
from prefect.exceptions import MissingContextError
from prefect.transactions import CommitMode, transaction
from prefect.utilities.annotations import quote

from distillery.adapters.engine import EngineSpec, get_engine, is_endpoint, prompt_lengths
from distillery.faults import failpoint
from distillery.generation import attach_completions, batched, sampling_kwargs
from distillery.progress import current as current_progress
from distillery.prompts import over_budget, render_messages, user_text
from distillery.stages.contract import code_digest
from distillery.recipe import KDConfig, SamplingConfig, TeacherConfig
from tasks.retry import ENGINE_TAG, engine_died

Teacher = tuple[str, str, "str | None", SamplingConfig]

def code_version() -> str:
    """Hash of the code that shapes a completion (the functions, not their files: a comment
    elsewhere keeps cached batches): a change there invalidates them."""
    from distillery.adapters import engine

    return code_digest([engine.Engine.__init__, engine.Engine.chat, engine.Engine.score, engine.Engine._template,
                        engine._completion, engine._trim_after_eot, engine._cpu_engine_args,
                        attach_completions, render_messages, user_text, _generate_batch, *endpoint_code()])


def endpoint_code() -> list:
    """The endpoint path's functions that shape a completion."""
    from distillery import endpoints

    return [endpoints.request_body, endpoints.completions_from, endpoints.kd_targets]


def _logger():
    try:
        return get_run_logger()
    except MissingContextError:  # called bare (`generate_batch.fn`), outside any run
        return logging.getLogger("distillery")


def batch_cache_key(context, parameters: dict) -> str:
    rows, teacher, spec, params = parameters["rows"], parameters["teacher"], parameters["spec"], parameters["params"]
    rows = rows.unquote() if isinstance(rows, quote) else rows
    content = [[r["seed_id"], r["messages"], r.get("lineage")] for r in rows]  # lineage too: a cached batch must not replay another run's
    engine = spec.identity() if is_endpoint(spec) else spec.__dict__  # an endpoint: its URL and model, not its limits
    blob = json.dumps([content, teacher, engine, params, code_version()], sort_keys=True, default=str)
    return "distillery-generate-" + hashlib.sha256(blob.encode()).hexdigest()


@task(name="check-lengths", cache_policy=NONE)
def check_lengths(rows: list[dict], teachers: list[Teacher], max_model_len: int) -> dict[int, str]:
    """Row positions whose prompt does not fit the context for some teacher, with why."""
    why: dict[int, str] = {}
    for name, model, system, sampling in teachers:
        lengths = prompt_lengths(model, [r["messages"] for r in render_messages(rows, system)])
        for i, reason in enumerate(over_budget(lengths, sampling.max_tokens, max_model_len)):
            if reason is not None:
                why.setdefault(i, f"{reason} (teacher {name})")
    return why


def _generate_batch(rows: list[dict], teacher: str, spec: EngineSpec, params: dict) -> tuple[list[dict], float, list[dict]]:
    """One batch's completions; also the seconds spent opening the engine (0 if open), and
    the rows an endpoint refused (a 4xx other than 429, an answer malformed after retries),
    rejected with the server's reason."""
    started = time.perf_counter()
    engine = get_engine(spec)
    opened = time.perf_counter() - started
    completions = engine.chat([r["messages"] for r in rows], params)
    failed = {i: c[0]["error"] for i, c in enumerate(completions) if c and "error" in c[0]}
    rejected = [{**rows[i], "reason": "endpoint_error", "detail": why} for i, why in failed.items()]
    answered = [(r, c) for i, (r, c) in enumerate(zip(rows, completions)) if i not in failed]
    out = attach_completions([r for r, _ in answered], [c for _, c in answered], teacher, spec.model, params,
                             datetime.now(timezone.utc))
    _logger().info("teacher %s: %d completions for %d prompts%s", teacher, len(out), len(rows),
                   f", {len(rejected)} refused by the endpoint" if rejected else "")
    return out, opened, rejected


generate_batch = task(
    _generate_batch,
    name="teacher-generate",
    tags=[ENGINE_TAG],
    retries=1,
    retry_condition_fn=engine_died,
    cache_key_fn=batch_cache_key,
    persist_result=True,
)

# An endpoint's batch: no `gpu` slot (the endpoint's own global limit applies, adapters/endpoint.py);
# its client retries requests itself, so a failed batch is not retried as a whole.
endpoint_batch = task(_generate_batch, name="endpoint-generate", cache_key_fn=batch_cache_key, persist_result=True)


def batch_task(spec):
    return endpoint_batch if is_endpoint(spec) else generate_batch


def generate(rows: list[dict], teacher: TeacherConfig, teachers: list[Teacher], kd: KDConfig | None = None) -> tuple[list[dict], list[dict], float]:
    """Completions from every teacher for every row that fits the context; the rest are
    rejected. Runs inside a flow: one task run per batch and teacher. With kd.top_k,
    every completion keeps the teacher's top-K at each token (kd_* fields)."""
    kd = kd or KDConfig()
    too_long = check_lengths(quote(rows), teachers, teacher.max_model_len)
    rejected = [{**r, "stage": "render", "reason": "prompt_too_long", "detail": why} for i, r in enumerate(rows) if (why := too_long.get(i))]
    fits = [r for i, r in enumerate(rows) if i not in too_long]
    total = len(fits) * sum(t[3].n for t in teachers)
    progress = create_progress_artifact(0.0, description=f"teacher completions: 0 of {total}")
    shown = current_progress()  # the CLI's line on a terminal; None under a worker
    if shown is not None:
        shown.begin("generate", total, "completions")
    out, engine_seconds = [], 0.0
    try:
        # Teachers sharing a model run back to back on one engine.
        for name, model, system, sampling in sorted(teachers, key=lambda t: t[1] != teacher.model):
            spec = EngineSpec.from_teacher(teacher, model=model, logprobs_mode=kd.distribution)
            params = sampling_kwargs(sampling.n, sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed)
            if kd.top_k:
                params["kd_top_k"] = kd.top_k
            for batch in batched(render_messages(fits, system), teacher.batch_size):
                state = generate_batch(quote(list(batch)), name, spec, params, return_state=True)
                done, opened, _ = state.result()
                out += done
                if state.name != "Cached":  # a cached batch replays the engine start of the run that made it
                    engine_seconds += opened
                elif shown is not None:
                    shown.reach(len(out))
                update_progress_artifact(progress, 100.0 * len(out) / max(total, 1), description=f"teacher completions: {len(out)} of {total}")
                failpoint("generate.batch")
    finally:
        if shown is not None:
            shown.end()
    return out, rejected, engine_seconds


class EngineBatches:
    """One teacher's batches as cached task runs (`generate_batch`), for the staged generate
    stage: `(rows) -> (completions, engine start seconds)`. A batch generated before, for
    this or any output, comes from the cache and starts no engine; progress moves either way.
    With an endpoint, the third item is the rows it refused (rejected by the stage)."""

    def __init__(self, teacher: str, spec: EngineSpec, params: dict, progress_id=None, total: int = 0):
        self.teacher, self.spec, self.params = teacher, spec, params
        self.progress_id, self.total = progress_id, total
        self.done = 0

    def __call__(self, rows: list[dict]) -> tuple[list[dict], float]:
        # Committed (persisted) as soon as the batch is done: a task run's nested results are
        # otherwise kept until the stage's task run ends, and a kill mid-stage would lose them.
        with transaction(commit_mode=CommitMode.EAGER):
            state = batch_task(self.spec)(quote(rows), self.teacher, self.spec, self.params, return_state=True)
        done, opened, refused = state.result()
        cached = state.name == "Cached"  # its engine start was another run's
        self.done += len(done)
        shown = current_progress()
        if cached and shown is not None:
            shown.advance(len(done))
        if self.progress_id is not None:
            update_progress_artifact(self.progress_id, 100.0 * self.done / max(self.total, 1),
                                     description=f"teacher completions: {self.done} of {self.total}")
        failpoint("generate.batch")
        return done, 0.0 if cached else opened, refused
