from __future__ import annotations

import time
from datetime import datetime, timezone

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE

from distillery.adapters.engine import EngineSpec, get_engine, prompt_lengths
from distillery.generation import attach_completions, batched, sampling_kwargs
from distillery.prompts import over_budget, render_messages
from distillery.recipe import SamplingConfig, TeacherConfig
from tasks.load import ENGINE_TAG, engine_died

Teacher = tuple[str, str, "str | None", SamplingConfig]


def _too_long(rows: list[dict], teachers: list[Teacher], max_model_len: int) -> dict[int, str]:
    """Row positions whose prompt does not fit the context for some teacher, with why."""
    why: dict[int, str] = {}
    for name, model, system, sampling in teachers:
        lengths = prompt_lengths(model, [r["messages"] for r in render_messages(rows, system)])
        for i, reason in enumerate(over_budget(lengths, sampling.max_tokens, max_model_len)):
            if reason is not None:
                why.setdefault(i, f"{reason} (teacher {name})")
    return why


@task(name="teacher-generate", cache_policy=NONE, tags=[ENGINE_TAG], retries=1, retry_condition_fn=engine_died)
def generate(
    rows: list[dict], teacher: TeacherConfig, teachers: list[Teacher], run_id: str
) -> tuple[list[dict], list[dict], float]:
    """Completions from every teacher for every row that fits the context; the rest are rejected.

    Also returns the seconds spent opening engines (0 when this process had them).
    """
    logger = get_run_logger()
    too_long = _too_long(rows, teachers, teacher.max_model_len)
    rejected = [{**r, "stage": "render", "reason": "prompt_too_long", "detail": why} for i, r in enumerate(rows) if (why := too_long.get(i))]
    fits = [r for i, r in enumerate(rows) if i not in too_long]
    out, engine_seconds = [], 0.0
    total = len(fits) * sum(t[3].n for t in teachers)
    progress = create_progress_artifact(0.0, description=f"teacher completions: 0 of {total}")
    # Teachers sharing a model run back to back on one engine.
    for name, model, system, sampling in sorted(teachers, key=lambda t: t[1] != teacher.model):
        started = time.perf_counter()
        engine = get_engine(EngineSpec.from_teacher(teacher, model=model))
        engine_seconds += time.perf_counter() - started
        params = sampling_kwargs(sampling.n, sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed)
        for batch in batched(render_messages(fits, system), teacher.batch_size):
            completions = engine.chat([r["messages"] for r in batch], params)
            out += attach_completions(batch, completions, name, model, params, run_id, datetime.now(timezone.utc))
            logger.info("teacher %s: %d completions (%d rows so far)", name, sum(map(len, completions)), len(out))
            update_progress_artifact(progress, 100.0 * len(out) / max(total, 1), description=f"teacher completions: {len(out)} of {total}")
    return out, rejected, engine_seconds
