"""The guards and the collapse monitor in the summary and the run report. Pure."""

from __future__ import annotations


def _per_teacher(table: dict) -> str:
    return ", ".join(f"{teacher or '-'} {n}" for teacher, n in sorted(table.items()))


def guard_text(summary: dict) -> list[str]:
    """Lines for the plain summary (`distillery run`, the flow's log)."""
    lines, guards = [], summary.get("guards")
    if guards:
        for reason, table in sorted(guards["rejected"].items()):
            lines.append(f"guard: {reason} rejected {sum(table.values())} ({_per_teacher(table)})")
        for flag, table in sorted(guards["flagged"].items()):
            lines.append(f"guard: {flag} flagged {sum(table.values())}, kept ({_per_teacher(table)})")
        for eval_set, o in sorted(guards["eval_overlap"].items()):
            lines.append(f"guard: eval set {eval_set}: {o['contaminated']} of {o['items']} items copied ({o['share']:.1%})")
        lines += [f"warning: {w}" for w in guards["warnings"]]
    collapse = summary.get("collapse")
    if collapse:
        m = collapse["metrics"]
        lines.append(f"collapse monitor: compression {m.get('compression_ratio')}, distinct-2 {m.get('distinct_2')}, "
                     f"vendi {m.get('vendi_ngram')}, self-BLEU {m.get('self_bleu')} (sample of {m.get('sample')})")
        lines += [f"warning: {w}" for w in collapse["comparison"]["warnings"]]
    return lines


def guard_markdown(summary: dict) -> list[str]:
    """Sections of the run report: rejects and flags per reason and teacher, eval overlap,
    the collapse metrics against the history."""
    lines, guards = [], summary.get("guards")
    if guards:
        lines += ["", "Guards (stage `guard`, before dedup):", "", "| reason | action | teacher | rows |", "| --- | --- | --- | ---: |"]
        rows = [(r, "rejected", t, n) for r, table in guards["rejected"].items() for t, n in table.items()]
        rows += [(f, "flagged, kept", t, n) for f, table in guards["flagged"].items() for t, n in table.items()]
        lines += [f"| {r} | {a} | {t or '-'} | {n} |" for r, a, t, n in sorted(rows)] or ["| (none) | | | 0 |"]
        if guards["eval_overlap"]:
            lines += ["", "| eval set | items | copied by training prompts | share |", "| --- | ---: | ---: | ---: |"]
            lines += [f"| {s} | {o['items']} | {o['contaminated']} | {o['share']:.1%} |" for s, o in sorted(guards["eval_overlap"].items())]
        lines += [f"**Warning:** {w}" for w in guards["warnings"]]
    collapse = summary.get("collapse")
    if collapse:
        from distillery.collapse import format_collapse

        where = f" History: `{collapse['history']}`." if collapse.get("history") else " No history kept (set dedup.index_uri or guards.history_uri)."
        lines += ["", "Collapse monitor (a fixed-seed sample of the kept rows)." + where, ""]
        if collapse.get("history_problem"):
            lines += [f"**Note:** {collapse['history_problem']}", ""]
        lines += format_collapse(collapse["metrics"], collapse["comparison"])
    return lines
