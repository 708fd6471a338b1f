"""A distill build in stages over shards: memory bounded by a shard, resume by shard.

    load -> render -> fit -> generate-<teacher>... -> guard -> signatures -> find-duplicates
         -> dedup -> judge -> filter -> publish

Every stage reads staged shards and writes staged shards with a completion record
(distillery/stages/contract.py) under `_temporary/<recipe name>/` in the output folder.
A rerun skips every shard whose record matches its inputs and the stage's settings:
a killed build redoes only unfinished shards, a changed judge setting only the judge.

The synthesis recipes (Self-Instruct, Evol-Instruct, WRAP, textbook, doc->query) make
their seeds first (their teacher batches are cached task runs), stage them as
`synthesize`, and go through the same stages from render on (`staged_synthesis`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from functools import partial

import pyarrow as pa
from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from distillery.adapters.engine import EngineSpec, describe, get_engine, is_endpoint, prompt_lengths, spec_for
from distillery.diversity import diversity_report
from distillery.endpoints import cost_usd
from distillery.generation import sampling_kwargs
from distillery.judge import judge_report_from_counts
from distillery.progress import current as current_progress
from distillery.recipe import Recipe
from distillery.report import accounting_errors, format_summary, summary_from_counts
from distillery.schema import STORED_AS
from distillery.stages.contract import Record
from distillery.stages.dedup import ApplyDrops, Signatures, drop_map, drops_digest
from distillery.stages.engine import Filter, Fit, Generate, Judge, score_counts, staged_schema
from distillery.stages.executor import read_table, stage_source, totals
from distillery.stages.kd import TARGETS_SCHEMA, Given, Merge, Score
from distillery.stages.prompts import SEED_SCHEMA, Render
from flows.stage_runner import Stages
from flows.build import Build, check_judge, check_kd_teachers, open_build, sample_table, timed, unchanged
from flows.guards import collapse_monitor, guard_summary, record_collapse, run_guard
from flows.publish import first_rows, publish_staged, published_schema
from tasks.judge import judge_params
from tasks.report import publish_report
from tasks.stages import duplicates, load, shard_drops, shard_rows_each
from tasks.write import STAGING, dataset_for
from tasks.dedup import update_index_from
from tasks.guard import read_eval_sets

DIVERSITY_SAMPLE = 20_000  # kept rows the diversity report reads (the first, in build order)


def staging_root(recipe: Recipe) -> str:
    return f"{STAGING}/{re.sub(r'[^A-Za-z0-9_.-]+', '-', recipe.name) or 'build'}"


def _files(records: list[Record]) -> list[list]:
    return [[r.files[0]] for r in records]


def _started(recipe: Recipe, stages: int | None = None, check: bool = True) -> tuple[Stages | None, dict | None]:
    """The source loaded into staged seed shards and the build opened: (its stages, None),
    or (None, the result) when this very build is already published. `stages` counts the
    stages after load for the progress artifact (by default a distill build's)."""
    store, root = dataset_for(recipe), staging_root(recipe)
    check_kd_teachers(recipe)  # before the load stage writes to the output
    if check:
        check_endpoints(recipe)
    items = read_eval_sets(recipe) if recipe.guards.decontam.eval_sets else None  # a bad eval file stops it here
    timings: dict[str, float] = {}
    with timed(timings, "load"):
        loaded, about = load(recipe, store, root)
    b = open_build(recipe, about["digest"], stages=timings, checked=True, eval_items=items)
    if b.published:
        store.remove_tree(STAGING)  # a build that crashed after publishing left it
        return None, unchanged(recipe, b.published)
    b.rows_in = about["rows_in"]
    run = Stages(store, root, b, stages=_stage_count(recipe, answered=False) if stages is None else stages, shards=len(loaded),
                 execution=recipe.execution)
    run.records["load"], run.ran["load"] = loaded, about["shards_written"]
    if about["worker_peak_rss_mib"] is not None:
        run.worker_rss["load"] = about["worker_peak_rss_mib"]
    return run, None


def staged_distill(recipe: Recipe, responses: str | None = None) -> dict:
    """Build and publish a distill dataset shard by shard; with `responses` (an OpenAI batch
    output file), the teachers' answers come from that file (flows/batch_files.py), not
    from live requests. Runs inside a flow."""
    run, done = _started(recipe, check=responses is None or recipe.judge.enabled)
    if run is None:
        return done
    generated = answer(recipe, run, run.records["load"], responses)
    return finish(recipe, run, generated, mixed=mixed(recipe, run, generated))


def mixed(recipe: Recipe, run: Stages, generated: list[list[Record]]) -> list[Record] | None:
    """Every teacher's generated rows with their soft targets mixed (`mix`), when the recipe
    mixes teachers (kd.teacher_weights); else None."""
    if not (recipe.kd.top_k and recipe.kd.teacher_weights):
        return None
    return mix(recipe, run, [[g[i].files[0] for g in generated] for i in range(len(generated[0]))])


def staged_score_targets(recipe: Recipe) -> dict:
    """Soft targets for the source's own answers, shard by shard: load -> render -> given
    (prompt plus answer must fit) -> score-<teacher> (or every weighted teacher, then
    kd-merge) -> dedup -> publish. No judge. Runs inside a flow."""
    recipe = recipe.model_copy(update={"judge": recipe.judge.model_copy(update={"enabled": False})})
    run, done = _started(recipe, stages=4 + len(recipe.kd.teacher_weights) + recipe.dedup.enabled)
    if run is None:
        return done
    teacher, kd = recipe.teacher, recipe.kd
    rendered = run.run(Render(teacher.system_prompt), _files(run.records["load"]), "render")
    given = run.run(Given(teacher.name, teacher.model, teacher.system_prompt, teacher.max_model_len, staged_row_schema(recipe),
                          count=prompt_lengths), _files(rendered), "render")
    if kd.teacher_weights:
        scored = mix(recipe, run, _files(given))
    else:
        spec = EngineSpec.from_teacher(teacher, logprobs_mode=kd.distribution)
        stage = Score(teacher.name, teacher.model, teacher.system_prompt, kd.top_k, spec.__dict__, teacher.batch_size,
                      staged_row_schema(recipe), open_engine=run.opener(spec))
        scored = run.run(stage, _files(given), "score", engine=True)
    return finish(recipe, run, [given], mixed=scored, per_prompt=1, tokens=(0, 0))


def mix(recipe: Recipe, run: Stages, rows: list[list]) -> list[Record]:
    """Every weighted teacher's targets for the rows of each shard (`rows[i]`: shard i's
    files), each teacher a `score-<name>` stage on its own engine, then their mixture
    (`kd-merge`): the rows with kd_* replaced by it."""
    kd, teacher, store = recipe.kd, recipe.teacher, run.store
    teachers = {name: (model, system) for name, model, system, _ in recipe.teachers()}
    names = [n for n in teachers if kd.teacher_weights.get(n, 0) > 0]
    scored = []
    for name in names:
        model, system = teachers[name]
        spec = EngineSpec.from_teacher(teacher, model=model, logprobs_mode="raw_logprobs")
        stage = Score(name, model, system, kd.top_k, spec.__dict__, teacher.batch_size, TARGETS_SCHEMA,
                      open_engine=run.opener(spec), slim=True)
        scored.append(run.run(stage, rows, "kd_merge", engine=True))
    files = [[s[i].files[0] for s in scored] for i in range(len(rows))]
    digest = hashlib.sha256("".join(f.sha256 for shard in files for f in shard).encode()).hexdigest()
    stage = Merge(tuple((n, kd.teacher_weights[n]) for n in names), staged_row_schema(recipe),
                  targets=partial(shard_rows_each, store, files))
    return run.run(stage, rows, "kd_merge", [digest])


def staged_synthesis(recipe: Recipe, b: Build, rows: list[dict], rejected: list[dict], extra: dict | None = None,
                     diversity_of: str = "response", seed_texts: Sequence[str] = (), answered: bool = False,
                     tokens: tuple[int, int] = (0, 0), after_judge=None) -> dict:
    """What a synthesis recipe made, through the shared stages shard by shard, then published.

    `rows` are seeds (instruction, input, lineage) to answer, or with `answered` finished
    rows (doc->query's pairs) that go straight to dedup; `rejected` are the candidates
    rejected on the way (stage 'load' or 'synthesize'). They are staged as the
    'synthesize' stage (and 'load', for records rejected there), keyed by their content,
    so a rerun that synthesizes the same rows skips every finished shard after them.
    `tokens` are the teacher's (prompt, completion) tokens of answered rows;
    `after_judge` is a stage run between the judge and the score filter (evol's refusals)."""
    store, root = dataset_for(recipe), staging_root(recipe)
    b.rows_in = len(rows) + len(rejected)
    schema = staged_row_schema(recipe) if answered else SEED_SCHEMA
    run = Stages(store, root, b, stages=_stage_count(recipe, answered) + 1 + (after_judge is not None),
                 shards=max(1, -(-len(rows) // recipe.output.stage_rows)), execution=recipe.execution)
    seeds = _stage_synthesized(run, recipe, rows, rejected, schema)
    generated = [seeds] if answered else answer(recipe, run, seeds)
    return finish(recipe, run, generated, extra, diversity_of, seed_texts, tokens if answered else None, after_judge,
                  mixed=None if answered else mixed(recipe, run, generated))


def _stage_synthesized(run: Stages, recipe: Recipe, rows: list[dict], rejected: list[dict], schema: pa.Schema) -> list[Record]:
    """Synthesized rows as staged shards of `output.stage_rows` (stage 'synthesize'), the
    rejects with them; rejects of stage 'load' (unusable source records) as stage 'load'."""
    stray = {r.get("stage") for r in rejected} - {"load", "synthesize"}
    if stray:
        raise ValueError(f"synthesis rejects must be at stage 'load' or 'synthesize', not {sorted(stray)}")
    content = json.dumps([rows, rejected], sort_keys=True, default=str).encode()
    key = hashlib.sha256(f"{run.b.key}\0{hashlib.sha256(content).hexdigest()}".encode()).hexdigest()
    at_load = [r for r in rejected if r["stage"] == "load"]
    at_synthesis = [r for r in rejected if r["stage"] == "synthesize"]
    size = recipe.output.stage_rows
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)] or [[]]
    with timed(run.b.stages, "synthesize"):
        if at_load:
            run.records["load"], run.ran["load"] = stage_source(run.store, run.root, "load", key, [([], at_load, len(at_load))], schema)
        shards = [(chunk, at_synthesis if i == 0 else [], len(chunk) + (len(at_synthesis) if i == 0 else 0))
                  for i, chunk in enumerate(chunks)]
        records, run.ran["synthesize"] = stage_source(run.store, run.root, "synthesize", key, shards, schema)
    run.records["synthesize"] = records
    return records


def _stage_count(recipe: Recipe, answered: bool) -> int:
    """Stages after the source, for the progress artifact: render, fit, generate per teacher
    (unless answered), (signatures), dedup, (judge, filter)."""
    answering = 0 if answered else 2 + len(recipe.teachers())
    if not answered and recipe.kd.top_k and recipe.kd.teacher_weights:
        answering += len(recipe.kd.teacher_weights) + 1  # score-<teacher> each, kd-merge
    return answering + recipe.guards.any_row_guard() + recipe.dedup.enabled + 1 + 2 * recipe.judge.enabled


def staged_row_schema(recipe: Recipe) -> pa.Schema:
    """Rows between generation and publish: the published schema, nullable, plus the judge's
    raw reply and dedup's duplicate_of."""
    return staged_schema(published_schema(recipe), pa.field("judge_raw", pa.string()), pa.field("duplicate_of", pa.string()))


def answer(recipe: Recipe, run: Stages, seeds: list[Record], responses: str | None = None) -> list[list[Record]]:
    """Render, fit, and every teacher's completions (live, or from a batch output file
    `responses`): per teacher, its generated shards."""
    fitted = fitted_prompts(recipe, run, seeds)
    run.b.stages.setdefault("engine_start", 0.0)
    return _generate(recipe, run, fitted, staged_row_schema(recipe), responses)


def fitted_prompts(recipe: Recipe, run: Stages, seeds: list[Record]) -> list[Record]:
    """Render and fit: the prompts every teacher can answer within its context."""
    rendered = run.run(Render(recipe.teacher.system_prompt), _files(seeds), "render")
    endpoints = recipe.endpoints()
    # an endpoint teacher's prompts are counted with its local tokenizer; without one, the server says what does not fit
    counted = [(n, endpoints[n].tokenizer if n in endpoints else m, s, p.max_tokens) for n, m, s, p in recipe.teachers()]
    fit = Fit(tuple(t for t in counted if t[1]), recipe.teacher.max_model_len, count=prompt_lengths)
    return run.run(fit, _files(rendered), "render")


def survivors(recipe: Recipe, run: Stages, generated: list[list[Record]]) -> tuple[list[Record], dict]:
    """Dedup across every teacher's shards (shard i of each teacher into shard i), then the
    judge on what is left. Returns the shards and the dedup counts."""
    store, root, b = run.store, run.root, run.b
    staged = staged_row_schema(recipe)
    per_shard = run_guard(recipe, run, [[g[i].files[0] for g in generated] for i in range(len(generated[0]))], staged)
    drops, counts = drop_map([]), {"clusters": 0, "digest": drops_digest([])}
    if recipe.dedup.enabled:
        config = recipe.dedup
        sigs = run.run(Signatures(config.field, config.params()), per_shard, "dedup")
        with timed(b.stages, "dedup"):
            drop_file, counts = duplicates(store, root, sigs, recipe)
        run.worker_rss["find-duplicates"] = counts["worker_peak_rss_mib"]
        drops = shard_drops(store, drop_file)
    final = run.run(ApplyDrops(drops, staged, counts["digest"]), per_shard, "dedup", [counts["digest"]])
    if recipe.judge.enabled:
        final = _judge(recipe, run, final, staged)
    return final, counts


def finish(recipe: Recipe, run: Stages, generated: list[list[Record]], extra: dict | None = None,
           diversity_of: str = "response", seed_texts: Sequence[str] = (), tokens: tuple[int, int] | None = None,
           after_judge=None, mixed: list[Record] | None = None, per_prompt: int | None = None) -> dict:
    """Dedup, judge, filter, accounting, publish: the end every staged build shares.
    `generated` (per teacher, its shards) is what the summary counts as generated; `mixed`,
    when given, are the same rows with their soft targets replaced (kd-merge, score), and
    go on in their place. `per_prompt` is the rows generated per prompt (by default the
    teachers' n summed)."""
    logger = get_run_logger()
    store, b = run.store, run.b
    final, counts = survivors(recipe, run, [mixed] if mixed is not None else generated)
    if after_judge is not None:
        final = run.run(after_judge, _files(final), after_judge.name)
        synthesis = {**(extra or {}).get("synthesis", {}), after_judge.summary_key: totals(final)["rejected"]}
        extra = {**(extra or {}), "synthesis": synthesis}
    if recipe.judge.enabled:
        final = run.run(Filter(recipe.judge.min_score, staged_row_schema(recipe)), _files(final), "filter")

    summary = _summary(recipe, run, generated, final, counts, tokens, per_prompt)
    summary["staged_shards"] = {name: {"shards": len(records), "ran": run.ran.get(name, len(records))}
                                for name, records in run.records.items()}
    report = None
    if recipe.judge.enabled:
        report = judge_report_from_counts(score_counts(totals(run.records["judge"])["facts"]))
        check_judge(recipe, report)
    summary["judge_report"] = report
    summary.update(extra or {})
    summary["guards"] = guard_summary(recipe, run)
    with timed(b.stages, "diversity"):
        texts = _sample_texts(store, final, diversity_of)
        summary["diversity"] = diversity_report(texts, list(seed_texts), recipe.dedup.threshold, recipe.dedup.ngram)
        summary["collapse"] = collapse_monitor(recipe, run, texts)  # fails here, before publishing, on fail_on_collapse
    problems = accounting_errors(summary)
    if problems:
        raise RuntimeError("row accounting failed: " + "; ".join(problems))
    sample = sample_table(first_rows(store, final))
    manifest = publish_staged(recipe, b, store, run, final, summary)
    if recipe.dedup.enabled and recipe.dedup.update_index:
        total = update_index_from(store, [r.files[0] for r in final], recipe.dedup, recipe.storage)
        logger.info("dedup index %s now holds %d rows", recipe.dedup.index_uri, total)
    record_collapse(recipe, run, summary["collapse"])
    store.remove_tree(STAGING)
    publish_report(recipe.name, recipe.output.uri, b.run_id, manifest["summary"], sample)
    logger.info("dataset written to %s\n%s", recipe.output.uri, format_summary(manifest["summary"]))
    return {"output": recipe.output.uri, "run_id": b.run_id, "summary": manifest["summary"], "shards": manifest["shards"]}


def _generate(recipe: Recipe, run: Stages, fitted: list[Record], staged: pa.Schema, responses: str | None = None) -> list[list[Record]]:
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
        endpoints, answers = recipe.endpoints(), {}
        for name, model, system, sampling in sorted(recipe.teachers(), key=lambda t: t[1] != teacher.model):
            spec = spec_for(teacher, model, endpoints.get(name), f"teacher {name!r}", kd.distribution)
            params = sampling_kwargs(sampling.n, sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed)
            if kd.top_k:
                params["kd_top_k"] = kd.top_k
            if responses is not None:  # answers from a batch output file, read once for every teacher
                from flows.batch_files import from_responses

                batches, settings = from_responses(recipe, responses, name, model, params, answers)
            else:
                batches, settings = run.batches(name, spec, params, progress, total, done), describe(spec)
            stage = Generate(name, model, system, params, settings, teacher.batch_size, staged, complete=batches)
            records = run.run(stage, _files(fitted), "generate", in_flow=True,  # its batches are cached task runs
                              endpoint=is_endpoint(spec) or responses is not None)
            out.append(records)
            done += sum(r.rows_out for r in records)
            if shown is not None:
                shown.reach(done)
            update_progress_artifact(progress, 100.0 * done / max(total, 1), description=f"teacher completions: {done} of {total}")
    finally:
        if shown is not None:
            shown.end()
    return out


def judge_spec(recipe: Recipe):
    """The judge's engine settings, or its endpoint."""
    return spec_for(recipe.teacher, recipe.judge.model or recipe.teacher.model, recipe.judge_endpoint, "judge")


def check_endpoints(recipe: Recipe) -> None:
    """Every endpoint the build will call answers, takes its key and serves its model (and,
    for KD, has the local tokenizer's vocabulary): checked before anything is written."""
    endpoints = recipe.endpoints()
    specs = [spec_for(recipe.teacher, m, endpoints[n], f"teacher {n!r}") for n, m, _, _ in recipe.teachers() if n in endpoints]
    if recipe.judge.enabled and recipe.judge_endpoint is not None:
        specs.append(judge_spec(recipe))
    for spec in specs:
        client = get_engine(spec)
        if recipe.kd.top_k and spec.label != "judge":
            client.check_tokenizer(recipe.kd_tokenizer)


def _judge(recipe: Recipe, run: Stages, deduped: list[Record], staged: pa.Schema) -> list[Record]:
    config, teacher = recipe.judge, recipe.teacher
    params, extra = judge_params(config)
    spec = judge_spec(recipe)
    model = recipe.judge_model
    stage = Judge(model, config.rubric, tuple(config.aspects), config.method, params, extra, teacher.batch_size,
                  teacher.max_model_len, staged, open_engine=run.opener(spec))
    shown = current_progress()
    if shown is not None:
        shown.begin("judge", sum(r.rows_out for r in deduped))
    try:
        return run.run(stage, _files(deduped), "judge", engine=not is_endpoint(spec), endpoint=is_endpoint(spec))
    finally:
        if shown is not None:
            shown.end()


def _summary(recipe: Recipe, run: Stages, generated: list[list[Record]], final: list[Record], counts: dict,
             tokens: tuple[int, int] | None = None, per_prompt: int | None = None) -> dict:
    rejected: Counter = Counter()
    fanout = {f"generate-{name}": sampling.n for name, _, _, sampling in recipe.teachers()}
    not_generated = 0
    for records in run.records.values():
        for r in records:
            for reason, n in r.rejected_by_reason:
                rejected[(_reject_stage(r.stage), reason)] += n
                not_generated += n * fanout.get(r.stage, 0)
    gen = [r for records in generated for r in records]
    facts = totals(gen)["facts"]
    if tokens is not None:
        facts = {"prompt_tokens": tokens[0], "completion_tokens": tokens[1]}
    filtered = totals(final)["facts"] if recipe.judge.enabled else {}
    mean = round(filtered["score_sum"] / filtered["scored"], 3) if filtered.get("scored") else None
    if per_prompt is None:
        per_prompt = sum(t[3].n for t in recipe.teachers())
    out = summary_from_counts(run.b.rows_in, per_prompt, sum(r.rows_out for r in gen),
                               sum(r.rows_out for r in final), rejected, int(facts.get("prompt_tokens", 0)),
                               int(facts.get("completion_tokens", 0)), mean, counts.get("clusters", 0), run.b.stages,
                               not_generated)
    cost = build_cost(recipe, run, generated)
    if cost is not None:
        out["cost"] = cost
    return out


def build_cost(recipe: Recipe, run: Stages, generated: list[list[Record]]) -> dict | None:
    """The build's endpoint cost in USD from the tokens its endpoints counted (this run's and
    those of shards it reused alike: the dataset's cost), per teacher and judge; None when no
    endpoint has prices."""
    endpoints = recipe.endpoints()
    lines = {}
    for records in generated:
        name = records[0].stage.removeprefix("generate-") if records else ""
        if name in endpoints:
            facts = totals(records)["facts"]
            lines[f"teacher {name!r}"] = (endpoints[name], int(facts.get("prompt_tokens", 0)), int(facts.get("completion_tokens", 0)))
    if recipe.judge.enabled and recipe.judge_endpoint is not None and "judge" in run.records:
        facts = totals(run.records["judge"])["facts"]
        lines["judge"] = (recipe.judge_endpoint, int(facts.get("prompt_tokens", 0)), int(facts.get("completion_tokens", 0)))
    priced = {who: (e, p, c, cost_usd(p, c, e.price_input_per_million, e.price_output_per_million)) for who, (e, p, c) in lines.items()}
    priced = {who: v for who, v in priced.items() if v[3] is not None}
    if not priced:
        return None
    return {"usd": round(sum(v[3] for v in priced.values()), 6),
            "by": {who: {"model": e.model, "prompt_tokens": p, "completion_tokens": c, "usd": usd} for who, (e, p, c, usd) in priced.items()}}


REPORTED_AS = {"fit": "render", "given": "render", "refusal": "filter"}  # the stage a reject is counted at, where it differs


def _reject_stage(stage: str) -> str:
    return "generate" if stage.startswith("generate-") else REPORTED_AS.get(stage, stage)


def _sample_texts(store, final: list[Record], column: str = "response") -> list[str]:
    texts: list[str] = []
    for r in final:
        if len(texts) >= DIVERSITY_SAMPLE:
            break
        texts += [t or "" for t in read_table(store, r.files[0]).column(STORED_AS.get(column, column)).to_pylist()]
    return texts[:DIVERSITY_SAMPLE]
