"""The guards in a staged build: the guard stage after generation, the collapse monitor
before publishing. Runs inside a flow."""

from __future__ import annotations

from functools import partial

import pyarrow as pa
from prefect import get_run_logger

from distillery.collapse import collapse_metrics, compare, history_entry
from distillery.errors import DistilleryError
from distillery.recipe import Recipe
from distillery.stages.contract import StagedFile
from distillery.stages.executor import totals
from distillery.stages.guard import Guard, guard_counts
from flows.stage_runner import Stages
from tasks.guard import collapse_event, eval_indexes, read_history, stage_eval_items, write_history


class CollapseError(DistilleryError):
    """The collapse monitor warned and guards.fail_on_collapse is set."""


def guard_stage(recipe: Recipe, run: Stages, schema: pa.Schema) -> Guard | None:
    """The recipe's guard stage, or None when every guard is off."""
    guards = recipe.guards
    if not guards.any_row_guard():
        return None
    decontam, indexes = None, None
    if guards.decontam.eval_sets:
        config = guards.decontam
        items = stage_eval_items(run.store, run.root, run.b.eval_items)
        answer_ngram = config.answer_ngram if config.answers else None
        decontam = {"items": items.sha256, "ngram": config.ngram, "threshold": config.threshold, "answer_ngram": answer_ngram}
        indexes = partial(eval_indexes, run.store, items, config.ngram, answer_ngram)
    return Guard(schema, guards.identity.guard() if guards.identity.enabled else None, guards.identity.action,
                 guards.repetition.min_words if guards.repetition.enabled else None, decontam, indexes)


def run_guard(recipe: Recipe, run: Stages, per_shard: list[list[StagedFile]], schema: pa.Schema) -> list[list[StagedFile]]:
    """Every shard's rows (each teacher's file) through the guard stage: its shards in their place."""
    stage = guard_stage(recipe, run, schema)
    if stage is None:
        return per_shard
    return [[r.files[0]] for r in run.run(stage, per_shard, "guard")]


def guard_summary(recipe: Recipe, run: Stages) -> dict | None:
    """Rejects and flags per reason and teacher, and per eval set the contaminated items and
    their share (a warning past guards.decontam.warn_share)."""
    if "guard" not in run.records:
        return None
    counts = guard_counts(totals(run.records["guard"])["facts"])
    sizes: dict[str, int] = {}
    for eval_set, _, _ in run.b.eval_items:
        sizes[eval_set] = sizes.get(eval_set, 0) + 1
    overlap, warnings = {}, []
    for eval_set, n in sizes.items():
        hit = counts["contaminated_items"].get(eval_set, 0)
        overlap[eval_set] = {"items": n, "contaminated": hit, "share": round(hit / n, 4)}
        if hit / n > recipe.guards.decontam.warn_share:
            warnings.append(f"eval set {eval_set!r}: {hit} of its {n} items ({hit / n:.1%}) are copied by training prompts, "
                            f"over guards.decontam.warn_share {recipe.guards.decontam.warn_share:.0%}")
    for line in warnings:
        get_run_logger().warning("%s", line)
    return {"rejected": counts["rejected"], "flagged": counts["flagged"], "eval_overlap": overlap, "warnings": warnings}


def collapse_monitor(recipe: Recipe, run: Stages, texts: list[str]) -> dict:
    """This build's collapse metrics on a fixed-seed sample of its kept texts, compared with
    the history (the previous and the first run). Warnings become a Prefect event; with
    guards.fail_on_collapse they fail the build, before anything is published. The history
    is appended to after publishing (`record_collapse`)."""
    metrics = collapse_metrics(texts, sample=recipe.guards.collapse_sample)
    uri = recipe.collapse_history
    history, problem = read_history(recipe, uri) if uri else ([], None)
    if problem:
        get_run_logger().warning("%s", problem)
    comparison = compare(history, metrics, recipe.guards.collapse_max_drop)
    out = {"metrics": metrics, "comparison": comparison, "history": uri, "history_problem": problem}
    if comparison["warnings"]:
        collapse_event(recipe, run.b.run_id, comparison["warnings"], metrics, comparison)
        if recipe.guards.fail_on_collapse:
            raise CollapseError("collapse monitor: " + "; ".join(comparison["warnings"])
                                + " (guards.fail_on_collapse is set: nothing was published)")
    return out


def record_collapse(recipe: Recipe, run: Stages, collapse: dict) -> None:
    """Append this build's metrics to the history (after publishing: a failed build is no run).
    Read again here, not kept from `collapse_monitor`: another build may have appended since."""
    uri = recipe.collapse_history
    if not uri:
        return
    history, _ = read_history(recipe, uri)
    entry = history_entry(collapse["metrics"], run.b.run_id, recipe.name, run.b.created_at.isoformat())
    write_history(recipe, uri, [*history, entry])
