"""The `score_targets` flow: soft targets for answers that already exist.

An SFT dataset of prompts and answers (ours, or a public one) goes through the
teacher with prompt logprobs: at every token of every answer, the teacher's
top-K. Nothing is generated, so a human-written or third-party dataset becomes
a KD dataset at the cost of one forward pass per row.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from distillery.kd import with_kd
from distillery.recipe import Recipe
from distillery.report import accounting_errors, format_summary, summarize
from distillery.schema import ROW_SCHEMA, content_id
from flows.build import engine_info, start_build, timed, unchanged
from tasks.dedup import dedup
from tasks.kd import check_answer_lengths, kd_section, merged, score
from tasks.prompts import render_prompts
from tasks.report import publish_report
from tasks.write import write_dataset


def answer_rows(rows: list[dict], scored: list[dict], recipe: Recipe, run_id: str, created_at) -> list[dict]:
    out = []
    for row, s in zip(rows, scored, strict=True):
        messages = [*row["messages"], {"role": "assistant", "content": row["response"]}]
        out.append({
            **row, **s, "messages": messages, "id": content_id(row["messages"], row["response"]), "sample_index": 0,
            "teacher": recipe.teacher.name, "teacher_model": recipe.teacher.model, "finish_reason": "given",
            "sampling": '{"scored": true}', "run_id": run_id, "created_at": created_at,
        })
    return out


@flow(name="score_targets", log_prints=True, validate_parameters=True)
def score_targets(recipe: Recipe) -> dict:
    """Teacher-forced soft targets for the answers in source.response_column."""
    logger = get_run_logger()
    b, parsed = start_build(recipe)
    if b.published:
        return unchanged(recipe, b.published)

    prompts = render_prompts(quote(parsed.seeds), recipe.teacher.system_prompt)
    # The prompt plus the whole answer must fit the context (the answer is scored, not generated).
    too_long = check_answer_lengths(quote(prompts), recipe.teacher.model, recipe.teacher.system_prompt, recipe.teacher.max_model_len)
    long_rows = [{**r, "stage": "render", "reason": "prompt_too_long", "detail": why}
                 for i, r in enumerate(prompts) if (why := too_long.get(i))]
    fits = [r for i, r in enumerate(prompts) if i not in too_long]
    with timed(b.stages, "score"):
        scored = score(fits, recipe.teacher, recipe.teacher.model, recipe.teacher.system_prompt, recipe.kd.top_k, recipe.kd.distribution)
    b.generated = answer_rows(fits, scored, recipe, b.run_id, b.created_at)
    if recipe.kd.teacher_weights:
        with timed(b.stages, "kd_merge"):
            b.generated = merged(b.generated, recipe)
    with timed(b.stages, "dedup"):
        kept, duplicates = dedup(quote(b.generated), recipe.dedup, recipe.storage)
    rejected = [*parsed.rejects, *long_rows, *duplicates]
    summary = summarize(b.rows_in, 1, len(b.generated), kept, rejected, b.stages, b.generated)
    problems = accounting_errors(summary)
    if problems:
        raise RuntimeError("row accounting failed: " + "; ".join(problems))
    kd, files = kd_section(recipe, kept)
    with timed(b.stages, "write"):
        manifest = write_dataset(quote(kept), quote(rejected), recipe, summary, b.run_id, b.created_at, engine_info(recipe),
                                 schema=with_kd(ROW_SCHEMA, recipe.kd.logprob_dtype), key=b.key, source_digest=b.source_digest,
                                 previous_run=b.previous_run, kd=kd, files=files)
    publish_report(recipe.name, recipe.output.uri, b.run_id, manifest["summary"], [])
    logger.info("soft targets written to %s (%s bytes per (token, k) entry)\n%s", recipe.output.uri,
                manifest["kd"]["bytes_per_entry"], format_summary(manifest["summary"]))
    return {"output": recipe.output.uri, "run_id": b.run_id, "summary": manifest["summary"], "shards": manifest["shards"], "kd": manifest["kd"]}
