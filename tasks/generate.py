from __future__ import annotations

import time
from datetime import datetime, timezone

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from distillery.adapters.engine import EngineSpec, get_engine
from distillery.generation import attach_completions, batched, sampling_kwargs
from distillery.prompts import over_budget
from distillery.recipe import SamplingConfig, TeacherConfig


@task(name="teacher-generate", cache_policy=NONE)
def generate(
    rows: list[dict], teacher: TeacherConfig, sampling: SamplingConfig, run_id: str
) -> tuple[list[dict], list[dict], float]:
    """Teacher completions for every row that fits the context; the rest are rejected.

    Also returns the seconds spent opening the engine (0 when this process had it).
    """
    started = time.perf_counter()
    engine = get_engine(EngineSpec.from_teacher(teacher))
    engine_seconds = time.perf_counter() - started
    params = sampling_kwargs(sampling.n, sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed)
    logger = get_run_logger()
    logger.info("teacher engine ready (%s) after %.1fs", engine.model_path, engine_seconds)
    out, rejected = [], []
    for batch in batched(rows, teacher.batch_size):
        lengths = engine.count_prompt_tokens([r["messages"] for r in batch])
        verdicts = over_budget(lengths, sampling.max_tokens, teacher.max_model_len)
        fits = [r for r, why in zip(batch, verdicts) if why is None]
        rejected += [
            {**r, "stage": "render", "reason": "prompt_too_long", "detail": why}
            for r, why in zip(batch, verdicts) if why is not None
        ]
        completions = engine.chat([r["messages"] for r in fits], params)
        out += attach_completions(fits, completions, teacher.model, params, run_id, datetime.now(timezone.utc))
        logger.info("generated %d completions for %d prompts (%d/%d rows done)", sum(map(len, completions)), len(fits), len(out), len(rows) * sampling.n)
    return out, rejected, engine_seconds
