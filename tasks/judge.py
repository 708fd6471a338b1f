from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from distillery.adapters.engine import EngineSpec, get_engine
from distillery.generation import batched
from distillery.judge import JUDGE_REGEX, apply_judgements, filter_by_score, judge_messages
from distillery.prompts import over_budget
from distillery.recipe import JudgeConfig, TeacherConfig


@task(name="judge", cache_policy=NONE)
def judge(rows: list[dict], config: JudgeConfig, teacher: TeacherConfig) -> tuple[list[dict], list[dict]]:
    """Score rows 1-10 with a rationale. Greedy decoding; the format is enforced by regex."""
    model = config.model or teacher.model
    engine = get_engine(EngineSpec.from_teacher(teacher, model=model))
    params = {"n": 1, "temperature": 0.0, "max_tokens": config.max_tokens}
    logger = get_run_logger()
    scored, rejected = [], []
    for batch in batched(rows, teacher.batch_size):
        convs = [judge_messages(config.rubric, r["prompt"], r["response"]) for r in batch]
        verdicts = over_budget(engine.count_prompt_tokens(convs), config.max_tokens, teacher.max_model_len)
        fits = [(r, c) for r, c, why in zip(batch, convs, verdicts) if why is None]
        rejected += [
            {**r, "stage": "judge", "reason": "judge_prompt_too_long", "detail": why}
            for r, why in zip(batch, verdicts) if why is not None
        ]
        outputs = engine.chat([c for _, c in fits], params, regex=JUDGE_REGEX)
        scored += apply_judgements([r for r, _ in fits], [o[0]["response"] for o in outputs], model)
        logger.info("judged %d/%d rows", len(scored) + len(rejected), len(rows))
    return scored, rejected


@task(name="filter", cache_policy=NONE)
def filter_rows(rows: list[dict], min_score: int) -> tuple[list[dict], list[dict]]:
    return filter_by_score(rows, min_score)
