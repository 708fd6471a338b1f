"""The `distill` flow: seeds -> prompts -> teachers -> dedup -> judge -> filter -> shards.

A build runs in stages over shards (flows/staged.py). The in-memory path here (build_rows,
finish_rows, publish_rows) serves what is not staged yet: a build that mixes several
teachers' soft targets (kd.teacher_weights)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from distillery.diversity import diversity_report
from distillery.judge import judge_report
from distillery.kd import with_kd
from distillery.recipe import Recipe
from distillery.report import accounting_errors, format_summary, summarize
from distillery.schema import ROW_SCHEMA
from distillery.sources import ParsedSource
from flows.build import Build, DegenerateJudgeError, check_judge, engine_info, sample_table, start_build, timed, unchanged
from flows.staged import staged_distill
from tasks.dedup import dedup, update_index
from tasks.generate import generate
from tasks.kd import kd_section, merged
from tasks.judge import filter_rows, judge
from tasks.prompts import render_prompts
from tasks.report import publish_report
from tasks.write import write_dataset

__all__ = ["DegenerateJudgeError", "distill", "build_rows", "finish_rows", "publish_rows"]


# Row lists go to tasks wrapped in `quote`: Prefect otherwise walks every element
# of every parameter looking for upstream futures, which cost 77 s of a 107 s
# run of the non-engine stages at 100k rows (bench/orchestration.py).


def build_rows(recipe: Recipe) -> Build:
    """Load, render, generate with every teacher, dedup, judge. Runs inside a flow."""
    b, parsed = start_build(recipe)
    if b.published:
        return b
    return finish_rows(recipe, b, parsed)


def finish_rows(recipe: Recipe, b: Build, parsed: ParsedSource) -> Build:
    """Render, generate with every teacher, dedup, judge: the stages every recipe shares."""
    b.rows_in = parsed.rows_in
    with timed(b.stages, "render"):
        prompts = render_prompts(quote(parsed.seeds), recipe.teacher.system_prompt)
    b.stages.setdefault("engine_start", 0.0)  # listed before generation; added to below
    with timed(b.stages, "generate"):
        generated, too_long, engine_seconds = generate(prompts, recipe.teacher, recipe.teachers(), recipe.kd)
    # Stamped here, not in the cached batches: a resumed run owns every row it publishes.
    b.generated = [{**r, "run_id": b.run_id} for r in generated]
    if recipe.kd.top_k and recipe.kd.teacher_weights:
        with timed(b.stages, "kd_merge"):
            b.generated = merged(b.generated, recipe)
    b.stages["engine_start"] += engine_seconds
    b.stages["generate"] -= engine_seconds
    with timed(b.stages, "dedup"):
        unique, duplicates = dedup(quote(b.generated), recipe.dedup, recipe.storage)
    b.scored, judge_rejects = unique, []
    if recipe.judge.enabled:
        with timed(b.stages, "judge"):
            b.scored, judge_rejects = judge(quote(unique), recipe.judge, recipe.teacher)
    b.rejected = [*parsed.rejects, *too_long, *duplicates, *judge_rejects]
    return b


@flow(name="distill", log_prints=True, validate_parameters=True)
def distill(recipe: Recipe) -> dict:
    """Build a distillation dataset as the recipe describes and return its summary."""
    if not recipe.kd.teacher_weights:  # mixing several teachers' soft targets is not staged yet
        return staged_distill(recipe)
    b = build_rows(recipe)
    if b.published:
        return unchanged(recipe, b.published)
    return publish_rows(recipe, b)


def publish_rows(recipe: Recipe, b: Build, extra: dict | None = None, diversity_of: str = "response",
                 seed_texts: list[str] | None = None) -> dict:
    """Judge filter, accounting, diversity report, shards, report: the end every recipe shares.

    `extra` goes into the summary (e.g. per-round synthesis counts); the diversity report is
    computed on the kept rows' `diversity_of` field against `seed_texts`.
    """
    logger = get_run_logger()
    kept, low = b.scored, []
    report = None
    if recipe.judge.enabled:
        report = judge_report([r["judge_score"] for r in b.scored])
        check_judge(recipe, report)
        with timed(b.stages, "filter"):
            kept, low = filter_rows(quote(b.scored), recipe.judge.min_score)
    rejected = [*b.rejected, *low]
    per_prompt = sum(t[3].n for t in recipe.teachers())
    summary = summarize(b.rows_in, per_prompt, len(b.generated), kept, rejected, b.stages, b.generated)
    summary["judge_report"] = report
    summary.update(extra or {})
    with timed(b.stages, "diversity"):
        summary["diversity"] = diversity_report([r.get(diversity_of) or "" for r in kept], seed_texts or [],
                                                recipe.dedup.threshold, recipe.dedup.ngram)
    problems = accounting_errors(summary)
    if problems:  # a bug, never an input problem: refuse to publish a dataset that lost rows
        raise RuntimeError("row accounting failed: " + "; ".join(problems))

    with timed(b.stages, "write"):
        schema, kd, files = ROW_SCHEMA, None, None
        if recipe.kd.top_k:
            schema = with_kd(ROW_SCHEMA, recipe.kd.logprob_dtype)
            kd, files = kd_section(recipe, kept)
        manifest = write_dataset(quote(kept), quote(rejected), recipe, summary, b.run_id, b.created_at, engine_info(recipe),
                                 schema=schema, key=b.key, source_digest=b.source_digest, previous_run=b.previous_run,
                                 kd=kd, files=files)
    manifest["summary"]["stage_seconds"]["write"] = round(b.stages["write"], 3)
    if recipe.dedup.enabled and recipe.dedup.update_index:
        total = update_index(quote(kept), recipe.dedup, recipe.storage)
        logger.info("dedup index %s now holds %d rows", recipe.dedup.index_uri, total)
    publish_report(recipe.name, recipe.output.uri, b.run_id, manifest["summary"], sample_table(kept))
    logger.info("dataset written to %s\n%s", recipe.output.uri, format_summary(manifest["summary"]))
    return {"output": recipe.output.uri, "run_id": b.run_id, "summary": manifest["summary"], "shards": manifest["shards"]}
