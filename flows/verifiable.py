"""The `verifiable` flow: prompts with answers a program checks, for RL with verifiable rewards
(Tulu 3's RLVR; open-instruct reads the rows as they are: `messages`, `ground_truth`, `dataset`).

Each task row names its verifier (gsm8k, math, exact, ifeval) and its ground truth. A row whose
verifier is unknown or whose ground truth is malformed is rejected with its reason. The teacher
answers every other prompt `verifiable.samples` times; its pass rate places the prompt: below
`min_pass_rate` it is rejected as 'too_hard', above `max_pass_rate` as 'too_easy' (nothing left to
learn, or nothing to learn from). Rows in = rows kept + rows rejected.

Written like a dataset: data/train-*.parquet, rejected/*.parquet, report.md, manifest.json last.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timezone

import pyarrow as pa
from prefect import flow

from distillery.evals.accuracy import task_rows, with_system
from distillery.evals.verifiers import normalize_ground_truth, verify
from distillery.recipes.evals import VerifiableRecipe
from tasks.evals import answers, publish_eval, read_rows

ROW_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("ground_truth", pa.string()), ("dataset", pa.string()), ("pass_rate", pa.float64()), ("teacher_passes", pa.int32()),
    ("teacher_samples", pa.int32()), ("teacher_model", pa.string()),
])
REJECTED_SCHEMA = pa.schema([
    ("id", pa.string()), ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()), ("prompt", pa.string()),
    ("ground_truth", pa.string()), ("dataset", pa.string()), ("pass_rate", pa.float64()),
])


def placed(rows: list[dict], outs: list[dict], recipe: VerifiableRecipe) -> tuple[list[dict], list[dict]]:
    """(kept, rejected) by the teacher's pass rate over its samples."""
    cfg = recipe.verifiable
    kept, rejected = [], []
    for r, o in zip(rows, outs):
        base = {"id": r["id"], "messages": r["messages"], "ground_truth": r["ground_truth"], "dataset": r["verifier"]}
        if o.get("error"):
            rejected.append({**base, "stage": "generate", "reason": "prompt_too_long", "detail": o["error"]})
            continue
        passes = sum(verify(r["verifier"], s["response"], r["ground_truth"]) for s in o["samples"])
        rate = passes / len(o["samples"])
        row = {**base, "pass_rate": round(rate, 4), "teacher_passes": passes, "teacher_samples": len(o["samples"]),
               "teacher_model": recipe.teacher.model}
        if rate < cfg.min_pass_rate:
            rejected.append({**row, "stage": "filter", "reason": "too_hard", "detail": f"teacher passed {passes} of {len(o['samples'])} "
                             f"(pass rate {rate:.2f} < min_pass_rate {cfg.min_pass_rate})"})
        elif rate > cfg.max_pass_rate:
            rejected.append({**row, "stage": "filter", "reason": "too_easy", "detail": f"teacher passed {passes} of {len(o['samples'])} "
                             f"(pass rate {rate:.2f} > max_pass_rate {cfg.max_pass_rate})"})
        else:
            kept.append(row)
    return kept, rejected


def report(recipe: VerifiableRecipe, summary: dict) -> str:
    lines = [f"# {recipe.name}: verifiable-answer data", "",
             f"{summary['rows_in']} rows in: {summary['kept']} kept, {summary['rejected']} rejected "
             f"(pass-rate band {recipe.verifiable.min_pass_rate}-{recipe.verifiable.max_pass_rate} over {recipe.verifiable.samples} "
             f"teacher samples at temperature {recipe.verifiable.temperature}).", "",
             "| verifier | rows | kept | teacher pass rate (mean) |", "|---|---:|---:|---:|"]
    for v, s in summary["by_verifier"].items():
        lines.append(f"| {v} | {s['rows']} | {s['kept']} | {s['mean_pass_rate'] if s['mean_pass_rate'] is not None else '-'} |")
    lines += ["", "Rejected by reason: " + (", ".join(f"{k} {v}" for k, v in summary["rejected_by_reason"].items()) or "none")]
    return "\n".join(lines) + "\n"


def _by_verifier(kept: list[dict], rejected: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for r, keep in [(r, True) for r in kept] + [(r, False) for r in rejected]:
        cell = out.setdefault(r.get("dataset") or "(unknown)", {"rows": 0, "kept": 0, "rates": []})
        cell["rows"] += 1
        cell["kept"] += keep
        if r.get("pass_rate") is not None:
            cell["rates"].append(r["pass_rate"])
    return {v: {"rows": c["rows"], "kept": c["kept"], "mean_pass_rate": round(sum(c["rates"]) / len(c["rates"]), 4) if c["rates"] else None}
            for v, c in sorted(out.items())}


@flow(name="verifiable", log_prints=True, validate_parameters=True)
def verifiable(recipe: VerifiableRecipe) -> dict:
    """Verifiable-answer rows (open-instruct's form) whose teacher pass rate is in the band."""
    cfg = recipe.verifiable
    records, malformed, digest = read_rows(recipe.source.uri, recipe.source.format, recipe.storage, recipe.source.limit)
    rows, bad = task_rows(records, cfg.prompt_column, cfg.ground_truth_column, cfg.verifier_column, cfg.id_column)
    for r in rows:
        r["ground_truth"] = normalize_ground_truth(r["verifier"], r["ground_truth"])
        r["messages"] = with_system(r["messages"], cfg.system_prompt)
    rejected = [{"id": r.get("id") or r.get("seed_id"), "stage": "load", "reason": r["reason"], "detail": r.get("detail"),
                 "prompt": _text(r.get("raw"), cfg.prompt_column), "ground_truth": _text(r.get("raw"), cfg.ground_truth_column),
                 "dataset": _text(r.get("raw"), cfg.verifier_column)} for r in [*malformed, *bad]]
    params = {"n": cfg.samples, "temperature": cfg.temperature, "top_p": 1.0, "max_tokens": recipe.max_tokens, "seed": recipe.seed}
    outs = answers(recipe.teacher, [r["messages"] if cfg.system_prompt else with_system(r["messages"], recipe.teacher.system_prompt)
                                    for r in rows], params, "verifiable-teacher")
    kept, filtered = placed(rows, outs, recipe)
    rejected += [{**r, "prompt": r["messages"][-1]["content"]} for r in filtered]
    by_reason = Counter(r["reason"] for r in rejected)
    rows_in = len(records) + len(malformed)
    assert rows_in == len(kept) + len(rejected), "every row is kept or rejected"
    summary = {"rows_in": rows_in, "kept": len(kept), "rejected": len(rejected), "rejected_by_reason": dict(sorted(by_reason.items())),
               "by_verifier": _by_verifier(kept, rejected), "source_digest": digest}
    manifest = {"kind": "dataset", "flow": "verifiable", "name": recipe.name, "run_id": uuid.uuid4().hex, "rows": len(kept),
                "created_at": datetime.now(timezone.utc).isoformat(), "recipe": recipe.model_dump(mode="json"), "summary": summary}
    text = report(recipe, summary)
    tables = {"data/train-00000-of-00001.parquet": pa.Table.from_pylist([{k: r.get(k) for k in ROW_SCHEMA.names} for r in kept], schema=ROW_SCHEMA),
              "rejected/rejected-00000-of-00001.parquet": pa.Table.from_pylist(
                  [{k: (str(r.get(k)) if k in ("prompt", "ground_truth", "dataset") and r.get(k) is not None else r.get(k))
                    for k in REJECTED_SCHEMA.names} for r in rejected], schema=REJECTED_SCHEMA)}
    manifest = publish_eval(recipe.output.uri, recipe.storage, tables, text, manifest)
    return {"output": recipe.output.uri, "run_id": manifest["run_id"], "summary": summary, "report": text, "manifest": manifest}


def _text(raw, column: str):
    if not isinstance(raw, dict):
        return raw if isinstance(raw, str) and column == "prompt" else None
    from distillery.sources import get_path

    value = get_path(raw, column)
    return None if value is None else value if isinstance(value, str) else str(value)
