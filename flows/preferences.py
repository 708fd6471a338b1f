"""The `preferences` flow: a DPO-ready dataset of chosen/rejected pairs.

Same stages as `distill` up to the judge (every teacher, n completions each,
dedup, absolute scores), then per prompt the best against the worst with a
minimum margin, confirmed by a pairwise judgement in both orders.
"""

from __future__ import annotations

from collections import Counter

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from distillery.judge import judge_report
from distillery.preferences import candidate_pairs, confirm_pairs, preference_rows
from distillery.recipe import Recipe
from distillery.report import format_summary
from distillery.schema import PREFERENCE_SCHEMA
from flows.distill import build_rows, check_judge, engine_info, timed, unchanged
from tasks.report import publish_report
from tasks.judge import pairwise
from tasks.write import write_dataset




@flow(name="preferences", log_prints=True, validate_parameters=True)
def preferences(recipe: Recipe) -> dict:
    """Build chosen/rejected pairs from judged completions and return the summary."""
    from distillery.recipe import RecipeError

    per_prompt = sum(t[3].n for t in recipe.teachers())
    if per_prompt < 2 or not recipe.judge.enabled:
        raise RecipeError("preferences need at least 2 completions per prompt (sampling.n or extra_teachers) and judge.enabled")
    logger = get_run_logger()
    b = build_rows(recipe)
    if b.published:
        return unchanged(recipe, b.published)
    pairs, excluded = candidate_pairs(b.scored, b.fitting_seeds, recipe.preferences.min_margin)
    verdicts = None
    if recipe.preferences.pairwise_check:
        with timed(b.stages, "pairwise"):
            verdicts = pairwise(quote(pairs), recipe.judge, recipe.teacher)
    kept, disputed = confirm_pairs(pairs, verdicts)
    rows = preference_rows(kept, recipe.judge_model, b.run_id, b.created_at)
    report = judge_report([r["judge_score"] for r in b.scored], verdicts or [])
    check_judge(recipe, report)

    # Prompts are the unit here: each ends as a pair, an exclusion, or a load/length reject.
    prompt_rejects = [r for r in b.rejected if r["stage"] in ("load", "render")]
    row_rejects = [r for r in b.rejected if r["stage"] not in ("load", "render")]
    rejected = [*prompt_rejects, *excluded, *disputed, *row_rejects]
    by_reason = Counter(r["reason"] for r in [*prompt_rejects, *excluded, *disputed])
    summary = {
        "rows_in": b.rows_in,
        "completions_per_prompt": per_prompt,
        "generated": len(b.generated),
        "kept": len(rows),
        "pairs": len(rows),
        "rejected": sum(by_reason.values()),
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "completions_rejected_by_reason": dict(sorted(Counter(r["reason"] for r in row_rejects).items())),
        "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in b.generated),
        "completion_tokens": sum(r.get("completion_tokens") or 0 for r in b.generated),
        "judge_score_mean": report["mean"],
        "dedup_clusters": len({r["dedup_cluster"] for r in row_rejects if r["reason"] in ("exact_duplicate", "near_duplicate", "seen_in_index")}),
        "judge_report": report,
        "stage_seconds": {k: round(v, 3) for k, v in b.stages.items()},
    }
    if summary["rows_in"] != summary["pairs"] + summary["rejected"]:
        raise RuntimeError(f"prompt accounting failed: {summary['rows_in']} in != {summary['pairs']} pairs + {summary['rejected']} excluded")
    manifest = write_dataset(quote(rows), quote(rejected), recipe, summary, b.run_id, b.created_at, engine_info(recipe), schema=PREFERENCE_SCHEMA,
                             key=b.key, source_digest=b.source_digest, previous_run=b.previous_run)
    sample = [{"seed_id": r["seed_id"], "prompt": r["prompt"][-1]["content"][:300], "chosen": r["chosen"][0]["content"][:300],
               "rejected": r["rejected"][0]["content"][:300], "score_chosen": r["score_chosen"], "score_rejected": r["score_rejected"]} for r in rows[:10]]
    publish_report(recipe.name, recipe.output.uri, b.run_id, manifest["summary"], sample)
    logger.info("preference dataset written to %s\n%s", recipe.output.uri, format_summary(summary))
    return {"output": recipe.output.uri, "run_id": b.run_id, "summary": manifest["summary"], "shards": manifest["shards"]}
