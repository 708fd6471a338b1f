"""The `distill` flow: seeds -> prompts -> teacher -> dedup -> judge -> filter -> shards."""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from distillery.adapters.engine import EngineSpec, describe
from distillery.recipe import Recipe
from distillery.report import accounting_errors, format_summary, summarize
from tasks.dedup import dedup, update_index
from tasks.generate import generate
from tasks.judge import filter_rows, judge
from tasks.load import load_seeds
from tasks.prompts import render_prompts
from tasks.write import write_dataset


@contextmanager
def _timed(stages: dict[str, float], name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - start


@flow(name="distill", log_prints=True, validate_parameters=True)
def distill(recipe: Recipe) -> dict:
    """Build a distillation dataset as the recipe describes and return its summary."""
    logger = get_run_logger()
    run_id = str(flow_run.get_id() or uuid.uuid4())
    created_at = datetime.now(timezone.utc)
    stages: dict[str, float] = {}

    with _timed(stages, "load"):
        parsed = load_seeds(recipe.source)
    with _timed(stages, "render"):
        prompts = render_prompts(parsed.seeds, recipe.teacher.system_prompt)
    stages["engine_start"] = 0.0  # listed before generation; filled in below
    with _timed(stages, "generate"):
        generated, too_long, engine_seconds = generate(prompts, recipe.teacher, recipe.sampling, run_id)
    stages["engine_start"] = engine_seconds
    stages["generate"] -= engine_seconds
    with _timed(stages, "dedup"):
        unique, duplicates = dedup(generated, recipe.dedup)
    judged, judge_rejects, low = unique, [], []
    if recipe.judge.enabled:
        with _timed(stages, "judge"):
            judged, judge_rejects = judge(unique, recipe.judge, recipe.teacher)
        with _timed(stages, "filter"):
            judged, low = filter_rows(judged, recipe.judge.min_score)

    rejected = [*parsed.rejects, *too_long, *duplicates, *judge_rejects, *low]
    summary = summarize(parsed.rows_in, recipe.sampling.n, len(generated), judged, rejected, stages, generated)
    problems = accounting_errors(summary)
    if problems:  # a bug, never an input problem: refuse to publish a dataset that lost rows
        raise RuntimeError("row accounting failed: " + "; ".join(problems))

    engine = {"teacher": describe(EngineSpec.from_teacher(recipe.teacher)), "judge_model": recipe.judge_model}
    with _timed(stages, "write"):
        manifest = write_dataset(judged, rejected, recipe, summary, run_id, created_at, engine)
    manifest["summary"]["stage_seconds"]["write"] = round(stages["write"], 3)
    if recipe.dedup.enabled and recipe.dedup.update_index:
        total = update_index(judged, recipe.dedup)
        logger.info("dedup index %s now holds %d rows", recipe.dedup.index_uri, total)
    logger.info("dataset written to %s\n%s", recipe.output.uri, format_summary(manifest["summary"]))
    return {"output": recipe.output.uri, "run_id": run_id, "summary": manifest["summary"], "shards": manifest["shards"]}
