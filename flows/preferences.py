"""The `preferences` flow: a DPO-ready dataset of chosen/rejected pairs.

Same stages as `distill` up to the judge (every teacher, n completions each,
dedup, absolute scores), then per prompt the best against the worst with a
minimum margin, confirmed by a pairwise judgement in both orders. Staged shard by
shard like every build (the shared stages are flows/staged.py).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from functools import partial

from prefect import flow, get_run_logger

from distillery.judge import judge_report_from_counts
from distillery.recipe import Recipe, RecipeError
from distillery.report import format_summary
from distillery.schema import PREFERENCE_SCHEMA
from distillery.stages.engine import score_counts
from distillery.stages.executor import totals
from distillery.stages.preferences import Pairs
from distillery.stages.staged import nullable
from flows.build import check_judge
from flows.publish import first_rows, publish_staged
from flows.guards import guard_summary
from flows.staged import _files, _started, answer, judge_spec, survivors
from tasks.report import publish_report
from tasks.stages import shard_rows
from tasks.write import STAGING


@flow(name="preferences", log_prints=True, validate_parameters=True)
def preferences(recipe: Recipe) -> dict:
    """Build chosen/rejected pairs from judged completions and return the summary."""
    per_prompt = sum(t[3].n for t in recipe.teachers())
    if per_prompt < 2 or not recipe.judge.enabled:
        raise RecipeError("preferences need at least 2 completions per prompt (sampling.n or extra_teachers) and judge.enabled")
    return staged_preferences(recipe)


def staged_preferences(recipe: Recipe) -> dict:
    """A preference build shard by shard: the distill stages up to the judge (no score
    filter), then per prompt a chosen/rejected pair or an exclusion (`preferences`), then
    publish. Prompts are the unit of its accounting: rows in = pairs + prompts rejected or
    excluded; completions rejected on the way are listed apart. Runs inside a flow."""
    logger = get_run_logger()
    run, done = _started(recipe)
    if run is None:
        return done
    store, b = run.store, run.b
    generated = answer(recipe, run, run.records["load"])
    judged, counts = survivors(recipe, run, generated)

    config, teacher, prefs = recipe.judge, recipe.teacher, recipe.preferences
    judged_files = [r.files[0] for r in judged]
    stage = Pairs(prefs.min_margin, prefs.pairwise_check, config.rubric, recipe.judge_model, teacher.batch_size,
                  teacher.max_model_len, nullable(PREFERENCE_SCHEMA), completions=partial(shard_rows, store, judged_files),
                  open_engine=run.opener(judge_spec(recipe)))
    judged_digest = hashlib.sha256("".join(f.sha256 for f in judged_files).encode()).hexdigest()
    on_endpoint = prefs.pairwise_check and recipe.judge_endpoint is not None
    final = run.run(stage, _files(run.records["fit"]), "pairwise", [judged_digest],
                    engine=prefs.pairwise_check and not on_endpoint, endpoint=on_endpoint)

    facts = totals(final)["facts"]
    verdicts = {k.removeprefix("pairwise_"): int(v) for k, v in facts.items() if k.startswith("pairwise_")}
    report = judge_report_from_counts(score_counts(totals(run.records["judge"])["facts"]), verdicts)
    check_judge(recipe, report)
    prompts, completions = Counter(), Counter()
    for records in run.records.values():
        for r in records:
            for reason, n in r.rejected_by_reason:
                (prompts if r.stage in ("load", "fit", "preferences") else completions)[reason] += n
    gen = [r for records in generated for r in records]
    tokens = totals(gen)["facts"]
    pairs = sum(r.rows_out for r in final)
    summary = {
        "rows_in": b.rows_in,
        "completions_per_prompt": sum(t[3].n for t in recipe.teachers()),
        "generated": sum(r.rows_out for r in gen),
        "kept": pairs,
        "pairs": pairs,
        "rejected": sum(prompts.values()),
        "rejected_by_reason": dict(sorted(prompts.items())),
        "completions_rejected_by_reason": dict(sorted(completions.items())),
        "prompt_tokens": int(tokens.get("prompt_tokens", 0)),
        "completion_tokens": int(tokens.get("completion_tokens", 0)),
        "judge_score_mean": report["mean"],
        "dedup_clusters": counts.get("clusters", 0),
        "judge_report": report,
        "guards": guard_summary(recipe, run),
    }
    summary["staged_shards"] = {name: {"shards": len(records), "ran": run.ran.get(name, len(records))}
                                for name, records in run.records.items()}
    if summary["rows_in"] != summary["pairs"] + summary["rejected"]:
        raise RuntimeError(f"prompt accounting failed: {summary['rows_in']} in != {summary['pairs']} pairs + {summary['rejected']} excluded")
    sample = [{"seed_id": r["seed_id"], "prompt": r["prompt"][-1]["content"][:300], "chosen": r["chosen"][0]["content"][:300],
               "rejected": r["rejected"][0]["content"][:300], "score_chosen": r["score_chosen"], "score_rejected": r["score_rejected"]}
              for r in first_rows(store, final)]
    manifest = publish_staged(recipe, b, store, run, final, summary, schema=PREFERENCE_SCHEMA)
    store.remove_tree(STAGING)
    publish_report(recipe.name, recipe.output.uri, b.run_id, manifest["summary"], sample)
    logger.info("preference dataset written to %s\n%s", recipe.output.uri, format_summary(manifest["summary"]))
    return {"output": recipe.output.uri, "run_id": b.run_id, "summary": manifest["summary"], "shards": manifest["shards"]}
