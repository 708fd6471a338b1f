"""Evaluation sets for decontamination: a file's bytes -> (eval set, item id, text). Pure.

Any of the source formats. A file that holds no items, lacks the item column, or has
lines that are not JSON stops the build before generation: an item that cannot be read
is an item nobody checks the training rows against.
"""

from __future__ import annotations

import hashlib
import json

from distillery.errors import DistilleryError
from distillery.sources import MISSING, SourceError, detect_format, get_path, records_jsonl, records_table


class EvalSetError(DistilleryError, ValueError):
    """An evaluation file that cannot serve as one."""


def eval_items(files: list[tuple[str, bytes]], name: str, fmt: str = "auto", column: str = "prompt",
               id_column: str | None = None) -> list[tuple[str, str, str]]:
    """Every item of eval set `name` (its files' bytes, in order) as (name, item id, text);
    ids are the id column's values, else `file:row` numbers."""
    where = f"guards.decontam.eval_sets[{name!r}]"
    items: list[tuple[str, str, str]] = []
    for uri, data in files:
        try:
            kind = detect_format(uri, fmt)
            if kind == "jsonl":
                records, bad = records_jsonl(data)
                if bad:
                    raise EvalSetError(f"{where}: {uri} {bad[0]['detail']} ({len(bad)} unreadable line(s)); fix the file")
            else:
                records = records_table(data, kind, uri)
        except SourceError as err:
            raise EvalSetError(f"{where}: {err}") from None
        if not records:
            continue
        if not any(get_path(r, column) is not MISSING for _, r in records if isinstance(r, dict)):
            first = records[0][1] if isinstance(records[0][1], dict) else {}
            raise EvalSetError(f"{where}: {uri} has no column {column!r} (its columns: {', '.join(list(first)[:12]) or 'none'}); "
                               "set the eval set's `column`")
        prefix = "" if len(files) == 1 else f"{uri.rsplit('/', 1)[-1]}:"
        for row, record in records:
            value = get_path(record, column) if isinstance(record, dict) else MISSING
            if value is MISSING or value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            ident = get_path(record, id_column) if id_column else MISSING
            items.append((name, f"{prefix}{row}" if ident is MISSING or ident is None else str(ident), text))
    if not any(text.strip() for _, _, text in items):
        raise EvalSetError(f"{where}: {', '.join(u for u, _ in files)} holds no items with text in {column!r}; "
                           "point it at a non-empty evaluation file")
    return items


def items_digest(items: list[tuple[str, str, str]]) -> str:
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()
