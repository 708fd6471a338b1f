"""The `distill` flow: seeds -> prompts -> teachers -> dedup -> judge -> filter -> shards."""

from __future__ import annotations

import hashlib
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from distillery.adapters.engine import EngineSpec, describe
from distillery.errors import DistilleryError
from distillery.diversity import diversity_report
from distillery.judge import judge_report
from distillery.kd import with_kd
from distillery.recipe import Recipe
from distillery.report import accounting_errors, build_key, format_summary, summarize
from distillery.schema import ROW_SCHEMA
from distillery.sources import ParsedSource
from tasks.dedup import dedup, update_index
from tasks.generate import generate
from tasks.kd import check_shared_tokenizer, kd_section, merged
from tasks.judge import filter_rows, judge
from tasks.load import load_candidates, load_seeds
from tasks.prompts import render_prompts
from tasks.report import publish_report
from tasks.write import check_output, repair_card, write_dataset


# Row lists go to tasks wrapped in `quote`: Prefect otherwise walks every element
# of every parameter looking for upstream futures, which cost 77 s of a 107 s
# run of the non-engine stages at 100k rows (bench/orchestration.py).


class DegenerateJudgeError(DistilleryError):
    """The judge's scores carry no signal and the recipe asked to fail on that."""


@contextmanager
def timed(stages: dict[str, float], name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - start


@contextmanager
def synthesizing(stages: dict[str, float]):
    """Time the synthesis stage, less the engine start that happens inside it (counted as
    `engine_start`, its own stage)."""
    before = stages.get("engine_start", 0.0)
    stages.setdefault("synthesize", 0.0)  # listed before the engine start it holds
    stages.setdefault("engine_start", 0.0)
    with timed(stages, "synthesize"):
        yield
    stages["synthesize"] -= stages.get("engine_start", 0.0) - before


@dataclass
class Build:
    """What the shared stages produce, for the flows to shape into a dataset."""

    run_id: str
    created_at: datetime
    rows_in: int = 0
    generated: list[dict] = field(default_factory=list)
    scored: list[dict] = field(default_factory=list)  # judged (or deduped, if no judge)
    rejected: list[dict] = field(default_factory=list)
    fitting_seeds: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    key: str = ""  # recipe + source: equal keys, equal builds
    source_digest: str = ""
    previous_run: str | None = None  # the published build this one replaces, if any
    published: dict | None = None  # set when this very build is already published


def unchanged(recipe: Recipe, manifest: dict) -> dict:
    """The result of a rerun that found its own build already published."""
    get_run_logger().info(
        "%s already holds this build (run %s, same recipe and source): nothing to do. "
        "Delete its manifest.json or change output.uri to build again.", recipe.output.uri, manifest["run_id"])
    repair_card(recipe, manifest)
    return {"output": recipe.output.uri, "run_id": manifest["run_id"], "summary": manifest["summary"],
            "shards": manifest["shards"], "unchanged": True}


def open_build(recipe: Recipe, *digests: str, stages: dict[str, float] | None = None) -> Build:
    """A new build keyed by the recipe and the digests of every input it read (so a changed
    input is a new build); `b.published` is set when this very build is already published,
    and the rerun is then a no-op. `stages` are timings taken before (e.g. loading). Runs
    inside a flow."""
    b = Build(str(flow_run.get_id() or uuid.uuid4()), datetime.now(timezone.utc))
    b.stages.update(stages or {})
    b.source_digest = hashlib.sha256("\0".join(digests).encode()).hexdigest() if len(digests) > 1 else digests[0]
    b.key = build_key(recipe.model_dump(mode="json"), b.source_digest)
    state = check_output(recipe, b.key)
    if state.status == "complete":
        b.published = state.manifest
        return b
    b.previous_run = state.run_id
    if recipe.kd.top_k and recipe.kd.teacher_weights:  # before any engine starts
        check_shared_tokenizer([model for name, model, _, _ in recipe.teachers() if recipe.kd.teacher_weights.get(name, 0) > 0])
    return b


def start_build(recipe: Recipe) -> tuple[Build, ParsedSource]:
    """Load the seeds and look at the output: `b.published` is set when this very build is
    already there (then nothing else needs to run). Runs inside a flow."""
    stages: dict[str, float] = {}
    with timed(stages, "load"):
        parsed = load_seeds(recipe.source, recipe.storage)
    b = open_build(recipe, parsed.digest, stages=stages)
    b.rows_in = parsed.rows_in
    return b, parsed


def start_synthesis(recipe: Recipe, candidates_uri: str | None, candidates_input: str | None = None
                    ) -> tuple[Build, ParsedSource, ParsedSource]:
    """start_build for a recipe that grows a seed pool: also loads its candidates file (if any),
    and keys the build by both. Returns (build, pool, candidates). Runs inside a flow."""
    stages: dict[str, float] = {}
    with timed(stages, "load"):
        pool = load_seeds(recipe.source, recipe.storage)
        given = load_candidates(candidates_uri, recipe.storage, candidates_input) if candidates_uri else ParsedSource()
    b = open_build(recipe, pool.digest, *([given.digest] if candidates_uri else []), stages=stages)
    return b, pool, given


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
    long_ids = {r["seed_id"] for r in too_long}
    b.fitting_seeds = [s["seed_id"] for s in parsed.seeds if s["seed_id"] not in long_ids]
    with timed(b.stages, "dedup"):
        unique, duplicates = dedup(quote(b.generated), recipe.dedup, recipe.storage)
    b.scored, judge_rejects = unique, []
    if recipe.judge.enabled:
        with timed(b.stages, "judge"):
            b.scored, judge_rejects = judge(quote(unique), recipe.judge, recipe.teacher)
    b.rejected = [*parsed.rejects, *too_long, *duplicates, *judge_rejects]
    return b


def check_judge(recipe: Recipe, report: dict) -> None:
    logger = get_run_logger()
    for warning in report["warnings"]:
        logger.warning("%s", warning)
    if report["warnings"] and recipe.judge.fail_on_degenerate:
        raise DegenerateJudgeError(f"{'; '.join(report['warnings'])} (judge.fail_on_degenerate is set; use a stronger judge or another rubric)")


def engine_info(recipe: Recipe) -> dict:
    return {
        "teacher": describe(EngineSpec.from_teacher(recipe.teacher)),
        "teachers": [{"name": n, "model": m, "system_prompt": s, "sampling": p.model_dump()} for n, m, s, p in recipe.teachers()],
        "judge_model": recipe.judge_model,
    }


def sample_table(rows: list[dict], count: int = 10) -> list[dict]:
    """A few rows for the UI, text shortened."""
    keys = ("seed_id", "teacher", "prompt", "response", "judge_score")
    return [{k: (str(r.get(k))[:300] if r.get(k) is not None else None) for k in keys} for r in rows[:count]]


@flow(name="distill", log_prints=True, validate_parameters=True)
def distill(recipe: Recipe) -> dict:
    """Build a distillation dataset as the recipe describes and return its summary."""
    if not recipe.kd.teacher_weights:  # mixing several teachers' soft targets is not staged yet
        from flows.staged import staged_distill

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
