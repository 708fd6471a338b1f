"""Verifiable accuracy (greedy pass@1 per verifier and model) and the rows it reads. Pure logic."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from distillery.evals.verifiers import check_ground_truth
from distillery.sources import get_path


def task_rows(records: Sequence[dict], prompt_column: str, ground_truth_column: str, verifier_column: str,
              id_column: str | None) -> tuple[list[dict], list[dict]]:
    """Records -> (rows {id, messages, ground_truth, verifier}, rejects {id, reason, detail, raw}).
    A prompt is a list of chat messages (open-instruct's `messages`) or a string (one user turn).
    An unknown verifier or a malformed ground truth is a reject with its reason."""
    rows, rejects = [], []
    for n, rec in enumerate(records, start=1):
        ident = get_path(rec, id_column) if id_column else None
        ident = str(ident) if ident not in (None, "") else f"row-{n}"
        prompt, truth, verifier = get_path(rec, prompt_column), get_path(rec, ground_truth_column), get_path(rec, verifier_column)
        messages = _messages(prompt)
        bad = ("empty_prompt", f"{prompt_column!r} is empty, missing, or not a string or a list of {{role, content}} messages") \
            if messages is None else check_ground_truth(str(verifier) if verifier is not None else "", truth)
        if bad is not None:
            rejects.append({"id": ident, "reason": bad[0], "detail": bad[1], "raw": rec})
            continue
        rows.append({"id": ident, "messages": messages, "ground_truth": truth, "verifier": str(verifier)})
    return rows, rejects


def _messages(prompt) -> list[dict] | None:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}] if prompt.strip() else None
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) and "role" in m and isinstance(m.get("content"), str) for m in prompt):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    return None


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    """The model's own system message before a prompt that has none."""
    if not system or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system}, *messages]


def accuracy_summary(results: Sequence[dict]) -> dict:
    """results: {model, verifier, passed (bool | None: not answered)} -> per model, per verifier
    {n, answered, passed, pass_at_1} and the model's overall figures (pass@1 over all rows)."""
    cells: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        cells[r["model"]][r["verifier"]].append(r["passed"])
    out = {}
    for model, by in cells.items():
        per = {v: _cell(flags) for v, flags in sorted(by.items())}
        out[model] = {"verifiers": per, "overall": _cell([f for flags in by.values() for f in flags])}
    return out


def _cell(flags: list) -> dict:
    passed = sum(1 for f in flags if f)
    return {"n": len(flags), "answered": sum(1 for f in flags if f is not None), "passed": passed,
            "pass_at_1": round(passed / len(flags), 4) if flags else None}


def accuracy_change(summary: dict, before: str) -> dict:
    """Per other model, per verifier and overall: pass@1 before, after and the change."""
    base = summary[before]
    out = {}
    for model, s in summary.items():
        if model == before:
            continue
        keys = sorted(set(base["verifiers"]) | set(s["verifiers"]))
        pairs = {k: (base["verifiers"].get(k, {}).get("pass_at_1"), s["verifiers"].get(k, {}).get("pass_at_1")) for k in keys}
        pairs["overall"] = (base["overall"]["pass_at_1"], s["overall"]["pass_at_1"])
        out[model] = {k: {"before": b, "after": a, "change": None if a is None or b is None else round(a - b, 4)} for k, (b, a) in pairs.items()}
    return out


def accuracy_markdown(summary: dict, rejected: int, change: dict | None = None) -> str:
    verifiers = sorted({v for s in summary.values() for v in s["verifiers"]})
    lines = [f"Verifiable accuracy (greedy pass@1) of {', '.join(summary)}; {rejected} rows rejected (see eval/rejected.parquet)", "",
             "| model | " + " | ".join(verifiers) + " | overall |", "|---|" + "---|" * (len(verifiers) + 1)]
    for model, s in summary.items():
        cells = [_fmt(s["verifiers"].get(v)) for v in verifiers]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {_fmt(s['overall'])} |")
    for model, by in (change or {}).items():
        lines += ["", f"Change of {model}: " + ", ".join(f"{k} {v['change']:+.1%}" for k, v in by.items() if v["change"] is not None)]
    return "\n".join(lines) + "\n"


def _fmt(cell: dict | None) -> str:
    if not cell or cell["pass_at_1"] is None:
        return "-"
    return f"{cell['pass_at_1']:.1%} ({cell['passed']}/{cell['n']})"
