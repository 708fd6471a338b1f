"""The steps every build shares, in-memory or staged: open a build (its key, and whether
this very build is already published), time its stages, and describe it (engine info, a
sample for the UI, the judge's warnings). Runs inside a flow."""

from __future__ import annotations

import hashlib
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from prefect import get_run_logger
from prefect.runtime import flow_run

from distillery.adapters.engine import describe, spec_for
from distillery.errors import DistilleryError
from distillery.recipe import Recipe
from distillery.report import build_key
from distillery.sources import ParsedSource
from distillery.guards.evalsets import items_digest
from tasks.guard import read_eval_sets
from tasks.kd import check_shared_tokenizer
from tasks.load import load_candidates, load_seeds
from tasks.write import check_output, repair_card


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
    stages: dict[str, float] = field(default_factory=dict)
    key: str = ""  # recipe + source: equal keys, equal builds
    source_digest: str = ""
    previous_run: str | None = None  # the published build this one replaces, if any
    published: dict | None = None  # set when this very build is already published
    eval_items: list = field(default_factory=list)  # guards.decontam's (set, id, text), read before generation


def unchanged(recipe: Recipe, manifest: dict) -> dict:
    """The result of a rerun that found its own build already published."""
    get_run_logger().info(
        "%s already holds this build (run %s, same recipe and source): nothing to do. "
        "Delete its manifest.json or change output.uri to build again.", recipe.output.uri, manifest["run_id"])
    repair_card(recipe, manifest)
    return {"output": recipe.output.uri, "run_id": manifest["run_id"], "summary": manifest["summary"],
            "shards": manifest["shards"], "unchanged": True}


def check_kd_teachers(recipe: Recipe) -> None:
    """Teachers whose soft targets are mixed must share a tokenizer: refused before any
    engine starts or anything is written (TokenizersDiffer)."""
    if recipe.kd.top_k and recipe.kd.teacher_weights:
        check_shared_tokenizer([model for name, model, _, _ in recipe.teachers() if recipe.kd.teacher_weights.get(name, 0) > 0])


def open_build(recipe: Recipe, *digests: str, stages: dict[str, float] | None = None, checked: bool = False,
               eval_items: list | None = None) -> Build:
    """A new build keyed by the recipe and the digests of every input it read (so a changed
    input is a new build); `b.published` is set when this very build is already published,
    and the rerun is then a no-op. `stages` are timings taken before (e.g. loading);
    `checked`: check_kd_teachers has run already; `eval_items`: guards.decontam's eval sets,
    when already read (else they are read here). Runs inside a flow."""
    b = Build(str(flow_run.get_id() or uuid.uuid4()), datetime.now(timezone.utc))
    b.stages.update(stages or {})
    if recipe.guards.decontam.eval_sets:  # part of what the build is: a changed eval set is a new build
        b.eval_items = read_eval_sets(recipe) if eval_items is None else eval_items
        digests = (*digests, items_digest(b.eval_items))
    b.source_digest = hashlib.sha256("\0".join(digests).encode()).hexdigest() if len(digests) > 1 else digests[0]
    b.key = build_key(recipe.model_dump(mode="json", exclude={"execution"}), b.source_digest)  # where it ran changes nothing
    state = check_output(recipe, b.key)
    if state.status == "complete":
        b.published = state.manifest
        return b
    b.previous_run = state.run_id
    if not checked:
        check_kd_teachers(recipe)
    return b


def start_synthesis(recipe: Recipe, candidates_uri: str | None, candidates_input: str | None = None
                    ) -> tuple[Build, ParsedSource, ParsedSource]:
    """Load a recipe's seed pool and its candidates file (if any), and open the build keyed by
    both: `b.published` is set when this very build is already there. Returns (build, pool, candidates). Runs inside a flow."""
    stages: dict[str, float] = {}
    with timed(stages, "load"):
        pool = load_seeds(recipe.source, recipe.storage)
        given = load_candidates(candidates_uri, recipe.storage, candidates_input) if candidates_uri else ParsedSource()
    b = open_build(recipe, pool.digest, *([given.digest] if candidates_uri else []), stages=stages)
    return b, pool, given


def check_judge(recipe: Recipe, report: dict) -> None:
    logger = get_run_logger()
    for warning in report["warnings"]:
        logger.warning("%s", warning)
    if report["warnings"] and recipe.judge.fail_on_degenerate:
        raise DegenerateJudgeError(f"{'; '.join(report['warnings'])} (judge.fail_on_degenerate is set; use a stronger judge or another rubric)")


def engine_info(recipe: Recipe) -> dict:
    return {
        "teacher": describe(spec_for(recipe.teacher, recipe.teacher.model, recipe.teacher.endpoint)),
        "teachers": [{"name": n, "model": m, "system_prompt": s, "sampling": p.model_dump()} for n, m, s, p in recipe.teachers()],
        "judge_model": recipe.judge_model,
    }


def sample_table(rows: list[dict], count: int = 10) -> list[dict]:
    """A few rows for the UI, text shortened."""
    keys = ("seed_id", "teacher", "prompt", "response", "judge_score")
    return [{k: (str(r.get(k))[:300] if r.get(k) is not None else None) for k in keys} for r in rows[:count]]
