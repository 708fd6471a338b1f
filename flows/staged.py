"""A distill build in stages over shards: memory bounded by a shard, resume by shard.

    load -> render -> fit -> generate-<teacher>... -> signatures -> find-duplicates
         -> dedup -> judge -> filter -> publish

Every stage reads staged shards and writes staged shards with a completion record
(distillery/stages/contract.py) under `_temporary/<recipe name>/` in the output folder.
A rerun skips every shard whose record matches its inputs and the stage's settings:
a killed build redoes only unfinished shards, a changed judge setting only the judge.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc
from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.utilities.annotations import quote

from distillery.adapters.engine import EngineSpec, get_engine, prompt_lengths
from distillery.diversity import diversity_report
from distillery.generation import sampling_kwargs
from distillery.judge import judge_report_from_counts
from distillery.kd import round_logprobs, with_kd
from distillery.progress import current as current_progress
from distillery.recipe import Recipe
from distillery.report import accounting_errors, format_summary, summary_from_counts
from distillery.schema import REJECT_SCHEMA, ROW_SCHEMA, rejects_table, to_table
from distillery.stages.contract import Record
from distillery.stages.dedup import ApplyDrops, Signatures, drop_map, drops_digest
from distillery.stages.engine import Filter, Fit, Generate, Judge, score_counts, staged_schema
from distillery.stages.executor import read_rows, read_table, totals
from distillery.stages.prompts import Render
from distillery.stages.publish import Stream
from flows.distill import Build, check_judge, engine_info, open_build, sample_table, timed, unchanged
from tasks.generate import EngineBatches
from tasks.judge import judge_params
from tasks.kd import kd_section
from tasks.report import publish_report
from tasks.stages import duplicates, load, run_stage, shard_drops
from tasks.write import STAGING, dataset_for, make_manifest_for, write_staged
from tasks.dedup import update_index_from

DIVERSITY_SAMPLE = 20_000  # kept rows the diversity report reads (the first, in build order)


def staging_root(recipe: Recipe) -> str:
    return f"{STAGING}/{re.sub(r'[^A-Za-z0-9_.-]+', '-', recipe.name) or 'build'}"


def _files(records: list[Record]) -> list[list]:
    return [[r.files[0]] for r in records]


class Stages:
    """The build's stages as they run: records per stage, shards run now, engine start."""

    def __init__(self, store, root: str, build: Build, stages: int = 0, shards: int = 0):
        self.store, self.root, self.b = store, root, build
        self.records: dict[str, list[Record]] = {}
        self.ran: dict[str, int] = {}
        self.units, self.finished = stages * shards, 0  # stage-shards, for the UI's progress
        self.progress = create_progress_artifact(0.0, description="shards done per stage") if self.units else None

    def _shown(self, name: str, done: int, total: int) -> None:
        if self.progress is not None:
            finished = [f"{stage} {len(records)}/{len(records)}" for stage, records in self.records.items() if stage != "load"]
            update_progress_artifact(self.progress, 100.0 * (self.finished + done) / self.units,
                                     description="shards done per stage: " + ", ".join([*finished, f"{name} {done}/{total}"]))

    def run(self, stage, inputs: list[list], timer: str, extra: list[str] = (), engine: bool = False) -> list[Record]:
        with timed(self.b.stages, timer):
            results = run_stage(self.store, self.root, stage, inputs, extra, engine, partial(self._shown, stage.name))
        self.finished += len(results)
        self.records[stage.name] = [r for r, _ in results]
        self.ran[stage.name] = sum(ran for _, ran in results)
        # Engine start is its own stage: moved out of the stage that paid for it (a skipped
        # shard's record holds an earlier run's).
        opened = sum(dict(r.facts).get("engine_seconds", 0.0) for r, ran in results if ran)
        self.b.stages[timer] -= opened
        self.b.stages["engine_start"] = self.b.stages.get("engine_start", 0.0) + opened
        return self.records[stage.name]


def staged_distill(recipe: Recipe) -> dict:
    """Build and publish a distill dataset shard by shard. Runs inside a flow."""
    logger = get_run_logger()
    store, root = dataset_for(recipe), staging_root(recipe)
    timings: dict[str, float] = {}
    with timed(timings, "load"):
        loaded, about = load(recipe, store, root)
    b = open_build(recipe, about["digest"], stages=timings)
    if b.published:
        store.remove_tree(STAGING)  # a build that crashed after publishing left it
        return unchanged(recipe, b.published)
    b.rows_in = about["rows_in"]
    # render, fit, generate per teacher, (signatures), dedup, (judge, filter)
    stages = 2 + len(recipe.teachers()) + recipe.dedup.enabled + 1 + 2 * recipe.judge.enabled
    run = Stages(store, root, b, stages=stages, shards=len(loaded))
    run.records["load"] = loaded
    kd = recipe.kd
    schema = with_kd(ROW_SCHEMA, kd.logprob_dtype) if kd.top_k else ROW_SCHEMA
    staged = staged_schema(schema, pa.field("judge_raw", pa.string()), pa.field("duplicate_of", pa.string()))

    rendered = run.run(Render(recipe.teacher.system_prompt), _files(loaded), "render")
    teachers = recipe.teachers()
    fit = Fit(tuple((n, m, s, p.max_tokens) for n, m, s, p in teachers), recipe.teacher.max_model_len, count=prompt_lengths)
    fitted = run.run(fit, _files(rendered), "render")
    b.stages.setdefault("engine_start", 0.0)
    generated = _generate(recipe, run, fitted, staged)
    per_shard = [[g[i].files[0] for g in generated] for i in range(len(fitted))]

    drops, counts = drop_map([]), {"clusters": 0, "digest": drops_digest([])}
    if recipe.dedup.enabled:
        config = recipe.dedup
        sigs = run.run(Signatures(config.field, config.params()), per_shard, "dedup")
        with timed(b.stages, "dedup"):
            drop_file, counts = duplicates(store, root, sigs, recipe)
        drops = shard_drops(store, drop_file)
    deduped = run.run(ApplyDrops(drops, staged, counts["digest"]), per_shard, "dedup", [counts["digest"]])
    final, report = deduped, None
    if recipe.judge.enabled:
        judged = _judge(recipe, run, deduped, staged)
        final = run.run(Filter(recipe.judge.min_score, staged), _files(judged), "filter")

    summary = _summary(recipe, run, generated, final, counts)
    summary["staged_shards"] = {name: {"shards": len(records), "ran": run.ran.get(name, len(records) if name != "load" else about["shards_written"])}
                                for name, records in run.records.items()}
    if recipe.judge.enabled:
        report = judge_report_from_counts(score_counts(totals(run.records["judge"])["facts"]))
        check_judge(recipe, report)
    summary["judge_report"] = report
    with timed(b.stages, "diversity"):
        summary["diversity"] = diversity_report(_sample_texts(store, final), [], recipe.dedup.threshold, recipe.dedup.ngram)
    problems = accounting_errors(summary)
    if problems:
        raise RuntimeError("row accounting failed: " + "; ".join(problems))
    sample = sample_table(_first_rows(store, final))
    manifest = publish_staged(recipe, b, store, run, final, schema, summary)
    if recipe.dedup.enabled and recipe.dedup.update_index:
        total = update_index_from(store, [r.files[0] for r in final], recipe.dedup, recipe.storage)
        logger.info("dedup index %s now holds %d rows", recipe.dedup.index_uri, total)
    store.remove_tree(STAGING)
    publish_report(recipe.name, recipe.output.uri, b.run_id, manifest["summary"], sample)
    logger.info("dataset written to %s\n%s", recipe.output.uri, format_summary(manifest["summary"]))
    return {"output": recipe.output.uri, "run_id": b.run_id, "summary": manifest["summary"], "shards": manifest["shards"]}


def _generate(recipe: Recipe, run: Stages, fitted: list[Record], staged: pa.Schema) -> list[list[Record]]:
    """Every teacher over every shard; teachers sharing a model run back to back on one engine.
    Batches are cached task runs inside the stage's (untagged) task: they carry the gpu tag."""
    kd, teacher = recipe.kd, recipe.teacher
    prompts = sum(r.rows_out for r in fitted)
    total = prompts * sum(t[3].n for t in recipe.teachers())
    progress = create_progress_artifact(0.0, description=f"teacher completions: 0 of {total}")
    shown = current_progress()
    if shown is not None:
        shown.begin("generate", total, "completions")
    out, done = [], 0
    try:
        for name, model, system, sampling in sorted(recipe.teachers(), key=lambda t: t[1] != teacher.model):
            spec = EngineSpec.from_teacher(teacher, model=model, logprobs_mode=kd.distribution)
            params = sampling_kwargs(sampling.n, sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed)
            if kd.top_k:
                params["kd_top_k"] = kd.top_k
            batches = EngineBatches(name, spec, params, progress, total)
            batches.done = done
            stage = Generate(name, model, system, params, spec.__dict__, teacher.batch_size, staged, complete=batches)
            records = run.run(stage, _files(fitted), "generate")
            out.append(records)
            done += sum(r.rows_out for r in records)
            if shown is not None:
                shown.reach(done)
            update_progress_artifact(progress, 100.0 * done / max(total, 1), description=f"teacher completions: {done} of {total}")
    finally:
        if shown is not None:
            shown.end()
    return out


def _judge(recipe: Recipe, run: Stages, deduped: list[Record], staged: pa.Schema) -> list[Record]:
    config, teacher = recipe.judge, recipe.teacher
    model = config.model or teacher.model
    params, extra = judge_params(config)
    stage = Judge(model, config.rubric, tuple(config.aspects), config.method, params, extra, teacher.batch_size,
                  teacher.max_model_len, staged, open_engine=partial(get_engine, EngineSpec.from_teacher(teacher, model=model)))
    shown = current_progress()
    if shown is not None:
        shown.begin("judge", sum(r.rows_out for r in deduped))
    try:
        return run.run(stage, _files(deduped), "judge", engine=True)
    finally:
        if shown is not None:
            shown.end()


def _summary(recipe: Recipe, run: Stages, generated: list[list[Record]], final: list[Record], counts: dict) -> dict:
    rejected: Counter = Counter()
    for records in run.records.values():
        for r in records:
            stage = r.stage if r.stage != "fit" else "render"
            for reason, n in r.rejected_by_reason:
                rejected[(_reject_stage(stage), reason)] += n
    gen = [r for records in generated for r in records]
    facts = totals(gen)["facts"]
    filtered = totals(final)["facts"] if recipe.judge.enabled else {}
    mean = round(filtered["score_sum"] / filtered["scored"], 3) if filtered.get("scored") else None
    return summary_from_counts(run.b.rows_in, sum(t[3].n for t in recipe.teachers()), sum(r.rows_out for r in gen),
                               sum(r.rows_out for r in final), rejected, int(facts.get("prompt_tokens", 0)),
                               int(facts.get("completion_tokens", 0)), mean, counts.get("clusters", 0), run.b.stages)


def _reject_stage(stage: str) -> str:
    return "generate" if stage.startswith("generate-") else stage


def _sample_texts(store, final: list[Record], column: str = "response") -> list[str]:
    texts: list[str] = []
    for r in final:
        if len(texts) >= DIVERSITY_SAMPLE:
            break
        texts += [t or "" for t in read_table(store, r.files[0]).column(column).to_pylist()]
    return texts[:DIVERSITY_SAMPLE]


def _first_rows(store, final: list[Record], count: int = 10) -> list[dict]:
    rows: list[dict] = []
    for r in final:
        if len(rows) >= count:
            break
        rows += read_rows(store, [r.files[0]])[:count]
    return rows[:count]


def publish_staged(recipe: Recipe, b: Build, store, run: Stages, final: list[Record], schema: pa.Schema, summary: dict) -> dict:
    """The kept rows and every stage's rejects, cut from the staged shards into the final
    ones a part at a time; manifest last."""
    created = b.created_at

    def kept(file) -> pa.Table:
        table = to_table([{**row, "run_id": b.run_id} for row in read_rows(store, [file])], schema)
        return round_logprobs(table, recipe.kd.logprob_bits) if recipe.kd.top_k else table

    def rejected(file) -> pa.Table:
        return rejects_table([{**row, "run_id": b.run_id, "created_at": created} for row in read_rows(store, [file])])

    rejected_files = [r.files[1] for records in run.records.values() for r in records if r.files[1].rows]
    streams = [Stream([(partial(kept, r.files[0]), r.rows_out) for r in final], "data", "train", schema),
               Stream([(partial(rejected, f), f.rows) for f in rejected_files], "rejected", "rejected", REJECT_SCHEMA)]
    with timed(b.stages, "write"):
        kd_info, files = (None, None)
        if recipe.kd.top_k:
            kd_info, files = kd_section(recipe, [])
            kd_info["entries"] = sum(_kd_entries(store, r.files[0]) for r in final)
        summary["stage_seconds"] = {k: round(v, 3) for k, v in b.stages.items()}
        make = make_manifest_for(recipe, summary, b.run_id, created, engine_info(recipe), b.key, b.source_digest, kd_info)
        manifest = write_staged(store, quote(streams), recipe, quote(make), b.previous_run, quote(files))
    manifest["summary"]["stage_seconds"]["write"] = round(b.stages["write"], 3)
    return manifest


def _kd_entries(store, file) -> int:
    """kd.entries of a staged shard, counted in Arrow: (token, k) pairs stored."""
    per_token = read_table(store, file).column("kd_topk_ids").combine_chunks().flatten()
    return int(pc.sum(pc.list_value_length(per_token)).as_py() or 0)
