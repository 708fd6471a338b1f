from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from distillery.adapters.engine import EngineSpec, get_engine
from distillery.generation import batched
from distillery.judge import (
    absolute_messages,
    absolute_regex,
    apply_judgements,
    filter_by_score,
)
from distillery.progress import current as current_progress
from distillery.prompts import over_budget
from distillery.recipe import JudgeConfig, TeacherConfig
from tasks.retry import ENGINE_TAG, engine_died


def judge_params(config: JudgeConfig) -> tuple[dict, dict]:
    """Sampling and structured-output arguments for the configured method. Greedy throughout."""
    if config.method == "logprob":
        return {"n": 1, "temperature": 0.0, "max_tokens": 1, "logprobs": 20}, {"continue_final": True}
    extra = {"regex": absolute_regex(config.aspects)} if config.method == "structured" else {}
    return {"n": 1, "temperature": 0.0, "max_tokens": config.max_tokens}, extra


@task(name="judge", cache_policy=NONE, tags=[ENGINE_TAG], retries=1, retry_condition_fn=engine_died)
def judge(rows: list[dict], config: JudgeConfig, teacher: TeacherConfig) -> tuple[list[dict], list[dict]]:
    """Score rows 1-10 (with a rationale and aspects, unless by logprobs)."""
    model = config.model or teacher.model
    engine = get_engine(EngineSpec.from_teacher(teacher, model=model))
    params, extra = judge_params(config)
    shown = current_progress()  # the CLI's line on a terminal; None under a worker
    if shown is not None:
        shown.begin("judge", len(rows))
    try:
        return _judge_batches(engine, rows, config, teacher, params, extra, model, get_run_logger())
    finally:
        if shown is not None:
            shown.end()


def _judge_batches(engine, rows, config, teacher, params, extra, model, logger) -> tuple[list[dict], list[dict]]:
    scored, rejected = [], []
    for batch in batched(rows, teacher.batch_size):
        convs = [absolute_messages(config.rubric, r["prompt"], r["response"], config.aspects, config.method) for r in batch]
        verdicts = over_budget(engine.count_prompt_tokens(convs), params["max_tokens"], teacher.max_model_len)
        fits = [(r, c) for r, c, why in zip(batch, convs, verdicts) if why is None]
        rejected += [
            {**r, "stage": "judge", "reason": "judge_prompt_too_long", "detail": why}
            for r, why in zip(batch, verdicts) if why is not None
        ]
        outputs = engine.chat([c for _, c in fits], params, **extra)
        scored += apply_judgements([r for r, _ in fits], [o[0] for o in outputs], model, config.aspects, config.method)
        logger.info("judged %d/%d rows (%s)", len(scored) + len(rejected), len(rows), config.method)
    return scored, rejected


@task(name="filter", cache_policy=NONE)
def filter_rows(rows: list[dict], min_score: int) -> tuple[list[dict], list[dict]]:
    return filter_by_score(rows, min_score)
