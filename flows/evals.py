"""Did the distillation work? Four evaluation flows, each with an `EvalRecipe`
(distillery/recipes/evals.py), a deployment and `distillery eval KIND`:

- `eval_pairwise`: each candidate (the student, e.g. before and after fine-tuning) against the
  baseline (the teacher) on held-out prompts, the judge asked in both orders (MT-Bench: a win
  only when both agree). Win rate with a bootstrap 95% interval, decisive and length-controlled
  win rates, position bias, swap agreement; controls (the baseline's answer against a corrupted
  copy) measure the judge, and the report's first line says when it is unreliable.
- `eval_rse`: response similarity to the teacher (style, logical structure, content detail, 1-5),
  with the two bounds measured in the same run: the teacher against its own second sample (upper)
  and against another prompt's answer (lower).
- `eval_identity`: identity questions in several languages and wrappers, n samples each, scored by
  the identity detector (and optionally a judge against a declared identity fact).
- `eval_accuracy`: greedy pass@1 per verifier on rows with verifiable answers.

Each writes `eval/*.parquet` (every row with its verdict or its reason), `report.md` and
`manifest.json` (last) to output.uri, and the report as an artifact on the flow run.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timezone

import pyarrow as pa
from prefect import flow, get_run_logger

from distillery.evals import accuracy as acc
from distillery.evals import identity_eval as ide
from distillery.evals import pairwise as pw
from distillery.evals import rse
from distillery.evals.verifiers import verify
from distillery.guards.identity import IdentityGuard
from distillery.judge import PAIRWISE_CHOICES, pairwise_messages, swap_verdict
from distillery.prompts import render_messages, user_text
from distillery.recipes.evals import EvalModel, EvalRecipe
from tasks.evals import answers, judged, publish_eval, read_rows
from tasks.load import load_seeds

ANSWER_SCHEMA = pa.schema([
    ("model", pa.string()), ("id", pa.string()), ("prompt", pa.string()), ("sample", pa.int32()), ("answer", pa.string()),
    ("finish_reason", pa.string()), ("completion_tokens", pa.int32()), ("error", pa.string()),
])
REJECT_SCHEMA = pa.schema([("id", pa.string()), ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


def _started(recipe: EvalRecipe) -> dict:
    return {"kind": "eval", "flow": recipe.flow, "name": recipe.name, "run_id": uuid.uuid4().hex,
            "created_at": datetime.now(timezone.utc).isoformat(), "recipe": recipe.model_dump(mode="json"),
            "models": {m.name: (m.endpoint.model if m.endpoint else m.model) for m in recipe.models()}}


def _done(recipe: EvalRecipe, manifest: dict, tables: dict[str, pa.Table], report: str, summary: dict) -> dict:
    manifest = publish_eval(recipe.output.uri, recipe.storage, tables, report, {**manifest, "summary": summary})
    get_run_logger().info("%s: %s", recipe.flow, report.splitlines()[0])
    return {"output": recipe.output.uri, "run_id": manifest["run_id"], "summary": summary, "report": report, "manifest": manifest}


def _sampling(recipe: EvalRecipe, n: int = 1, temperature: float | None = None) -> dict:
    s = recipe.sampling
    return {"n": n, "temperature": s.temperature if temperature is None else temperature, "top_p": s.top_p,
            "max_tokens": s.max_tokens, "seed": s.seed}


def _answer(model: EvalModel, seeds: list[dict], params: dict, what: str) -> list[dict]:
    convs = [r["messages"] for r in render_messages(seeds, model.system_prompt)]
    return answers(model, convs, params, f"{what}-{model.name}")


def _prompt(seed: dict) -> str:
    return user_text(seed["instruction"], seed.get("input", ""))


def _answer_rows(model: str, seeds: list[dict], outs: list[dict]) -> list[dict]:
    rows = []
    for seed, o in zip(seeds, outs):
        prompt = _prompt(seed)
        if o.get("error"):
            rows.append({"model": model, "id": seed["seed_id"], "prompt": prompt, "sample": 0, "error": o["error"]})
            continue
        for s in o["samples"]:
            rows.append({"model": model, "id": seed["seed_id"], "prompt": prompt, "sample": s["sample_index"], "answer": s["response"],
                         "finish_reason": s["finish_reason"], "completion_tokens": s["completion_tokens"]})
    return rows


def _load_rejects(parsed) -> list[dict]:
    return [{"id": r.get("seed_id"), "stage": "load", "reason": r["reason"], "detail": r.get("detail")} for r in parsed.rejects]


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)


# ---- pairwise ----

PAIR_SCHEMA = pa.schema([
    ("kind", pa.string()), ("control", pa.string()), ("candidate", pa.string()), ("baseline", pa.string()), ("id", pa.string()),
    ("prompt", pa.string()), ("candidate_answer", pa.string()), ("baseline_answer", pa.string()), ("order_ab", pa.string()),
    ("order_ba", pa.string()), ("verdict", pa.string()), ("outcome", pa.float64()), ("status", pa.string()), ("detail", pa.string()),
])


def _pairs(recipe: EvalRecipe, seeds: list[dict], outs: dict[str, list[dict]]) -> list[dict]:
    """Every (candidate, prompt) pair and the controls, as rows to judge; a prompt a model did not
    answer is a row with status 'not_answered' and its reason."""
    base = recipe.baseline.name
    rows = []
    prompts = [_prompt(s) for s in seeds]
    for c in recipe.candidates:
        for seed, prompt, x, y in zip(seeds, prompts, outs[c.name], outs[base]):
            row = {"kind": "pair", "candidate": c.name, "baseline": base, "id": seed["seed_id"], "prompt": prompt,
                   "candidate_answer": x.get("response"), "baseline_answer": y.get("response")}
            why = x.get("error") or y.get("error")
            rows.append({**row, "status": "not_answered", "detail": why} if why else row)
    answered = {s["seed_id"]: (p, y["response"]) for s, p, y in zip(seeds, prompts, outs[base]) if not y.get("error")}
    plan = pw.control_plan(list(answered), recipe.pairwise.control_share, recipe.sampling.seed)
    other = rse.other_answer_pairs(list(answered), recipe.sampling.seed)
    for ident, kind in sorted(plan.items()):
        prompt, real = answered[ident]
        fake = pw.corrupt(real, kind, answered[other[ident]][1] if ident in other else "")
        rows.append({"kind": "control", "control": kind, "candidate": base, "baseline": f"{base} ({kind})", "id": ident,
                     "prompt": prompt, "candidate_answer": real, "baseline_answer": fake})
    return rows


def _judge_pairs(recipe: EvalRecipe, rows: list[dict]) -> None:
    todo = [r for r in rows if "status" not in r]
    convs = []
    for r in todo:
        convs.append(pairwise_messages(recipe.judge.rubric, r["prompt"], r["candidate_answer"], r["baseline_answer"]))
        convs.append(pairwise_messages(recipe.judge.rubric, r["prompt"], r["baseline_answer"], r["candidate_answer"]))
    said = judged(recipe.judge_model(), convs, 4, choice=PAIRWISE_CHOICES)
    for k, r in enumerate(todo):
        ab, ba = pw.parse_choice(said[2 * k]), pw.parse_choice(said[2 * k + 1])
        r.update(order_ab=ab, order_ba=ba)
        if said[2 * k] is None or said[2 * k + 1] is None:
            r.update(status="not_judged", detail="the judge prompt does not fit the judge's context (judge.max_model_len)")
            continue
        r.update(verdict=swap_verdict(ab, ba), status="judged")
        r["outcome"] = pw.outcome(r["verdict"])


def pairwise_result(recipe: EvalRecipe, rows: list[dict]) -> dict:
    """Per candidate its win statistics, the controls, the reliability verdict and the change."""
    p = recipe.pairwise
    stats = {}
    for c in recipe.candidates:
        mine = [r for r in rows if r["kind"] == "pair" and r["candidate"] == c.name and r["status"] == "judged"]
        stats[c.name] = pw.win_stats([r["verdict"] for r in mine], [len(r["candidate_answer"]) for r in mine],
                                     [len(r["baseline_answer"]) for r in mine], recipe.sampling.seed, p.bootstrap,
                                     [(r["order_ab"], r["order_ba"]) for r in mine])
    controls = [r["verdict"] for r in rows if r["kind"] == "control" and r["status"] == "judged"]
    control_acc = pw.control_accuracy(controls)
    judged_pairs = [r for r in rows if r["kind"] == "pair" and r["status"] == "judged"]
    swap = round(sum(r["verdict"] != "inconsistent" for r in judged_pairs) / len(judged_pairs), 4) if judged_pairs else None
    change = None
    if recipe.before:
        after = next((c.name for c in recipe.candidates if c.name != recipe.before), None)
        change = pw.before_after(stats[recipe.before], stats[after]) if after else None
    return {"candidates": stats, "baseline": recipe.baseline.name, "judge": recipe.judge_model().model,
            "controls": {"n": len(controls), "accuracy": control_acc, "by_kind": _control_kinds(rows)},
            "swap_agreement": swap, "unreliable": pw.reliability(control_acc, swap, p.min_control_accuracy, p.min_swap_agreement),
            "change": change, "change_of": [recipe.before, after] if change else None}


def _control_kinds(rows: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for r in rows:
        if r["kind"] == "control" and r["status"] == "judged":
            cell = out.setdefault(r["control"], {"n": 0, "right": 0})
            cell["n"] += 1
            cell["right"] += r["verdict"] == "x"
    return out


@flow(name="eval_pairwise", log_prints=True, validate_parameters=True)
def eval_pairwise(recipe: EvalRecipe) -> dict:
    """Win rate of each candidate against the baseline, judged in both orders, with controls."""
    manifest = _started(recipe)
    parsed = load_seeds(recipe.source, recipe.storage)
    seeds = parsed.seeds
    outs = {m.name: _answer(m, seeds, _sampling(recipe), "eval-answers") for m in recipe.models()}
    rows = _pairs(recipe, seeds, outs)
    _judge_pairs(recipe, rows)
    result = pairwise_result(recipe, rows)
    summary = {**result, "rows_in": parsed.rows_in, "prompts": len(seeds), "rejected": _load_rejects(parsed),
               "status": _count(r["status"] for r in rows if r["kind"] == "pair")}
    report = pw.pairwise_markdown(result)
    tables = {"eval/pairwise.parquet": _table(rows, PAIR_SCHEMA),
              "eval/answers.parquet": _table([a for m in recipe.models() for a in _answer_rows(m.name, seeds, outs[m.name])], ANSWER_SCHEMA),
              "eval/rejected.parquet": _table(summary["rejected"], REJECT_SCHEMA)}
    return _done(recipe, manifest, tables, report, summary)


def _count(values) -> dict:
    return dict(Counter(values))


# ---- response similarity ----

RSE_SCHEMA = pa.schema([
    ("kind", pa.string()), ("model", pa.string()), ("id", pa.string()), ("prompt", pa.string()), ("reference", pa.string()),
    ("answer", pa.string()), ("reference_id", pa.string()), ("style", pa.int8()), ("logic", pa.int8()), ("content", pa.int8()),
    ("judge_raw", pa.string()), ("status", pa.string()), ("detail", pa.string()),
])


@flow(name="eval_rse", log_prints=True, validate_parameters=True)
def eval_rse(recipe: EvalRecipe) -> dict:
    """How closely each candidate's answers mimic the baseline's, between the run's own bounds."""
    manifest = _started(recipe)
    parsed = load_seeds(recipe.source, recipe.storage)
    seeds = parsed.seeds
    base = recipe.baseline
    temperature = recipe.sampling.temperature or 0.7  # two greedy samples would be one answer: the upper bound needs sampling
    ref = _answer(base, seeds, _sampling(recipe, n=2, temperature=temperature), "eval-answers")
    outs = {c.name: _answer(c, seeds, _sampling(recipe, temperature=temperature), "eval-answers") for c in recipe.candidates}
    prompts = [_prompt(s) for s in seeds]
    refs = {s["seed_id"]: (p, o["samples"]) for s, p, o in zip(seeds, prompts, ref) if not o.get("error")}
    other = rse.other_answer_pairs(list(refs), recipe.sampling.seed)
    rows = []
    for s, prompt, o in zip(seeds, prompts, ref):
        ident = s["seed_id"]
        if ident not in refs:
            rows.append({"kind": "upper", "model": base.name, "id": ident, "prompt": prompt, "status": "not_answered", "detail": o["error"]})
            continue
        first = refs[ident][1][0]["response"]
        rows.append({"kind": "upper", "model": base.name, "id": ident, "prompt": prompt, "reference": first,
                     "answer": refs[ident][1][-1]["response"], "reference_id": ident})
        if ident in other:
            rows.append({"kind": "lower", "model": base.name, "id": ident, "prompt": prompt, "reference": first,
                         "answer": refs[other[ident]][1][0]["response"], "reference_id": other[ident]})
    for c in recipe.candidates:
        for s, prompt, x in zip(seeds, prompts, outs[c.name]):
            ident = s["seed_id"]
            row = {"kind": f"candidate:{c.name}", "model": c.name, "id": ident, "prompt": prompt, "reference_id": ident}
            why = x.get("error") or (None if ident in refs else "the baseline did not answer this prompt")
            if why:
                rows.append({**row, "status": "not_answered", "detail": why})
            else:
                rows.append({**row, "reference": refs[ident][1][0]["response"], "answer": x["response"]})
    todo = [r for r in rows if "status" not in r]
    said = judged(recipe.judge_model(), [rse.rse_messages(r["prompt"], r["reference"], r["answer"]) for r in todo], 48, regex=rse.rse_regex())
    for r, text in zip(todo, said):
        scores = rse.parse_rse(text) if text is not None else None
        r.update(judge_raw=text, status="judged" if scores else "not_judged" if text is None else "unparsed", **(scores or {}))
        if text is None:
            r["detail"] = "the judge prompt does not fit the judge's context (judge.max_model_len)"
    keys = ["upper", "lower", *(f"candidate:{c.name}" for c in recipe.candidates)]
    summary_scores = {k: [({a: r[a] for a in rse.ASPECTS} if r["status"] == "judged" else None) for r in rows
                          if r["kind"] == k and r["status"] != "not_answered"] for k in keys}
    result = rse.rse_summary(summary_scores)
    report = rse.rse_markdown(result, recipe.judge_model().model)
    summary = {"rse": result, "rows_in": parsed.rows_in, "prompts": len(seeds), "rejected": _load_rejects(parsed),
               "status": _count(r["status"] for r in rows)}
    tables = {"eval/rse.parquet": _table(rows, RSE_SCHEMA),
              "eval/answers.parquet": _table([a for m, o in [(base.name, ref), *outs.items()] for a in _answer_rows(m, seeds, o)], ANSWER_SCHEMA),
              "eval/rejected.parquet": _table(summary["rejected"], REJECT_SCHEMA)}
    return _done(recipe, manifest, tables, report, summary)


# ---- identity consistency ----

IDENTITY_SCHEMA = pa.schema([
    ("model", pa.string()), ("id", pa.string()), ("language", pa.string()), ("question_id", pa.string()), ("wrapper", pa.string()),
    ("question", pa.string()), ("prompt", pa.string()), ("sample", pa.int32()), ("answer", pa.string()), ("leak", pa.bool_()),
    ("strict", pa.bool_()), ("reason", pa.string()), ("matched", pa.string()), ("vendor", pa.string()),
    ("flags", pa.list_(pa.string())), ("judge", pa.string()), ("status", pa.string()), ("detail", pa.string()),
])


def identity_rows(recipe: EvalRecipe, model: EvalModel, prompts: list[dict]) -> list[dict]:
    cfg = recipe.identity
    guard = IdentityGuard(name=cfg.name, maker=cfg.maker)
    seeds = [{"seed_id": p["id"], "instruction": p["prompt"], "input": ""} for p in prompts]
    outs = _answer(model, seeds, _sampling(recipe, n=cfg.samples, temperature=cfg.temperature), "eval-identity")
    rows = []
    for p, o in zip(prompts, outs):
        if o.get("error"):
            rows.append({**p, "model": model.name, "status": "not_answered", "detail": o["error"]})
            continue
        for s in o["samples"]:
            scored = ide.score_answer(guard, p["question"], s["response"], tuple(cfg.teacher_vendors))
            rows.append({**p, **scored, "model": model.name, "sample": s["sample_index"], "answer": s["response"], "status": "scored"})
    if cfg.identity_fact:
        todo = [r for r in rows if r["status"] == "scored"]
        said = judged(recipe.judge_model(), [ide.identity_judge_messages(cfg.identity_fact, r["question"], r["answer"]) for r in todo], 4,
                      choice=ide.IDENTITY_JUDGE_CHOICES)
        for r, text in zip(todo, said):
            r["judge"] = ide.parse_identity_verdict(text)
    return rows


@flow(name="eval_identity", log_prints=True, validate_parameters=True)
def eval_identity(recipe: EvalRecipe) -> dict:
    """Identity questions in several languages and wrappers to each candidate; loose and strict leak rates."""
    manifest = _started(recipe)
    cfg = recipe.identity
    prompts = ide.identity_prompts(cfg.languages, cfg.wrappers, cfg.questions_per_language)  # checked by the recipe
    rows = [r for c in recipe.candidates for r in identity_rows(recipe, c, prompts)]
    summaries = {c.name: ide.identity_summary([r for r in rows if r["model"] == c.name and r["status"] == "scored"]) for c in recipe.candidates}
    after = next((c.name for c in recipe.candidates if c.name != recipe.before), None) if recipe.before else None
    change = ide.identity_change(summaries[recipe.before], summaries[after]) if after else None
    report = ide.identity_markdown(summaries, change)
    summary = {"identity": summaries, "change": change, "change_of": [recipe.before, after] if change else None, "prompts": len(prompts),
               "status": _count(r["status"] for r in rows)}
    return _done(recipe, manifest, {"eval/identity.parquet": _table(rows, IDENTITY_SCHEMA)}, report, summary)


# ---- verifiable accuracy ----

ACCURACY_SCHEMA = pa.schema([
    ("model", pa.string()), ("id", pa.string()), ("verifier", pa.string()), ("prompt", pa.string()), ("ground_truth", pa.string()),
    ("answer", pa.string()), ("passed", pa.bool_()), ("finish_reason", pa.string()), ("status", pa.string()), ("detail", pa.string()),
])


@flow(name="eval_accuracy", log_prints=True, validate_parameters=True)
def eval_accuracy(recipe: EvalRecipe) -> dict:
    """Greedy pass@1 per verifier of each model on rows with verifiable answers."""
    manifest = _started(recipe)
    cfg = recipe.accuracy
    records, malformed, digest = read_rows(recipe.source.uri, recipe.source.format, recipe.storage, cfg.limit)
    rows, rejects = acc.task_rows(records, cfg.prompt_column, cfg.ground_truth_column, cfg.verifier_column, cfg.id_column)
    rejected = [{"id": r.get("seed_id") or r.get("id"), "stage": "load", "reason": r["reason"], "detail": r.get("detail")} for r in [*malformed, *rejects]]
    params = {"n": 1, "temperature": 0.0, "max_tokens": recipe.sampling.max_tokens, "seed": recipe.sampling.seed}
    results = []
    for m in recipe.models():
        outs = answers(m, [acc.with_system(r["messages"], m.system_prompt) for r in rows], params, f"eval-accuracy-{m.name}")
        for r, o in zip(rows, outs):
            row = {"model": m.name, "id": r["id"], "verifier": r["verifier"], "prompt": r["messages"][-1]["content"], "ground_truth": str(r["ground_truth"])}
            if o.get("error"):
                results.append({**row, "passed": None, "status": "not_answered", "detail": o["error"]})
            else:
                results.append({**row, "answer": o["response"], "finish_reason": o["finish_reason"], "status": "verified",
                                "passed": verify(r["verifier"], o["response"], r["ground_truth"])})
    summary_models = acc.accuracy_summary(results)
    change = acc.accuracy_change(summary_models, recipe.before) if recipe.before else None
    report = acc.accuracy_markdown(summary_models, len(rejected), change)
    summary = {"accuracy": summary_models, "change": change, "rows_in": len(records) + len(malformed), "rows": len(rows),
               "rejected": rejected, "source_digest": digest}
    tables = {"eval/accuracy.parquet": _table(results, ACCURACY_SCHEMA), "eval/rejected.parquet": _table(rejected, REJECT_SCHEMA)}
    return _done(recipe, manifest, tables, report, summary)


EVAL_FLOWS = {"eval_pairwise": eval_pairwise, "eval_rse": eval_rse, "eval_identity": eval_identity, "eval_accuracy": eval_accuracy}
