"""`distillery guard identity`: the identity guard on one column of any JSONL or Parquet file.

Like `distillery dedup`, every input row goes, with the input's own columns, to
kept.parquet or rejected.parquet (nothing is dropped), then the guard's columns:
  kept:     guard_flags (what was noted but kept: ai_boilerplate, or every leak with --action flag)
  rejected: guard_reason (identity_claim, vendor_policy, cutoff_claim; missing_field, malformed_json),
            guard_matched (the matched text), guard_language, and for JSONL guard_raw (a malformed line)
A column of chat messages is checked on its assistant turns only, each with the user turn
before it (role-play the user asked for is no leak); a text column as one answer.
One pass for Parquet; two for JSONL (the first learns the columns' types).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from distillery.adapters.storage import open_dataset, open_input
from distillery.commands.dedup_job import _with
from distillery.commands.jsonl_input import jsonl_records
from distillery.guards.identity import IdentityGuard, assistant_texts
from distillery.json_columns import FieldTypes
from distillery.sources import MISSING, SourceError, get_path
from distillery.stages.guard import identity_verdict

PREFIX = "guard_"
KEPT = [pa.field("guard_flags", pa.list_(pa.string()))]
REJECTED = [pa.field("guard_reason", pa.string()), pa.field("guard_matched", pa.string()), pa.field("guard_language", pa.string())]
RAW = pa.field("guard_raw", pa.string())


@dataclass
class GuardStats:
    rows_in: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    flagged: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def report(self) -> str:
        lines = [f"rows in:   {self.rows_in}", f"kept:      {self.kept}", f"rejected:  {sum(self.rejected.values())}"]
        lines += [f"  {k}: {v}" for k, v in sorted(self.rejected.items())]
        lines.append(f"flagged (kept): {sum(self.flagged.values())}")
        lines += [f"  {k}: {v}" for k, v in sorted(self.flagged.items())]
        lines.append(f"seconds:   {self.seconds:.1f}")
        return "\n".join(lines)


def verdict(guard: IdentityGuard, value, action: str) -> tuple[str | None, str | None, str | None, list[str]]:
    """(reject reason, matched, language, flags) for one column value."""
    if value is MISSING or value is None:
        return "missing_field", None, None, []
    hit, flags = identity_verdict(guard, assistant_texts(value), action)
    return (hit.reason, hit.matched, hit.language, []) if hit is not None else (None, None, None, flags)


def _check_names(uri: str, names: list[str]) -> None:
    taken = [n for n in names if n.startswith(PREFIX)]
    if taken:
        raise SourceError(f"{uri}: column(s) {', '.join(taken)} use the {PREFIX}* names distillery guard writes "
                          "(the output of an earlier guard?); drop or rename them first")


def _batches(uri: str, column: str, batch_rows: int):
    """(table of the input's columns, column values, raw lines of malformed JSONL rows or None) per batch."""
    if uri.lower().endswith((".parquet", ".pq")):
        with open_input(uri, "input file") as fh:
            pf = pq.ParquetFile(fh)
            names = pf.schema_arrow.names
            _check_names(uri, names)
            if column.split(".")[0] not in names:
                raise SourceError(f"{uri}: column {column!r} not found; columns there: {', '.join(names[:12])}")
            for batch in pf.iter_batches(batch_size=batch_rows):
                table = pa.Table.from_batches([batch])
                values = [get_path(r, column) for r in table.select([column.split(".")[0]]).to_pylist()]
                yield table, values, None
        return
    fields = FieldTypes()
    seen = False
    for batch in jsonl_records(uri, batch_rows):  # pass 1: the columns' types
        records = [rec for _, rec in batch if rec is not None]
        fields.observe(records)
        seen = seen or any(get_path(r, column) is not MISSING for r in records)
    if not seen:
        raise SourceError(f"{uri}: column {column!r} not found in any row; check --column")
    schema = fields.finish()
    _check_names(uri, schema.names)
    for batch in jsonl_records(uri, batch_rows):
        table = fields.table([rec for _, rec in batch])
        values = [MISSING if rec is None else get_path(rec, column) for _, rec in batch]
        yield table, values, [line if rec is None else None for line, rec in batch]


def run_identity_guard(input_uri: str, column: str, output_uri: str, guard: IdentityGuard, action: str = "reject",
                       batch_rows: int = 10_000) -> GuardStats:
    started, stats = time.perf_counter(), GuardStats()
    out = open_dataset(output_uri)
    writers: dict[str, pq.ParquetWriter] = {}
    with out.writer("kept.parquet") as kf, out.writer("rejected.parquet") as rf:
        for table, values, raws in _batches(input_uri, column, batch_rows):
            verdicts = [verdict(guard, v, action) for v in values]
            if raws is not None:
                verdicts = [("malformed_json", None, None, []) if raw is not None else v for v, raw in zip(verdicts, raws)]
            keep = pa.array([v[0] is None for v in verdicts])
            drop = pa.array([v[0] is not None for v in verdicts])
            kept = _with(table.filter(keep), {"guard_flags": pa.array([v[3] or None for v in verdicts if v[0] is None], pa.list_(pa.string()))})
            extra = {name: pa.array([v[i] for v in verdicts if v[0] is not None], pa.string())
                     for i, name in enumerate(("guard_reason", "guard_matched", "guard_language"))}
            if raws is not None:
                extra["guard_raw"] = pa.array([r for r, v in zip(raws, verdicts) if v[0] is not None], pa.string())
            rejected = _with(table.filter(drop), extra)
            if not writers:
                writers["kept"] = pq.ParquetWriter(kf, kept.schema, compression="zstd")
                writers["rejected"] = pq.ParquetWriter(rf, rejected.schema, compression="zstd")
            writers["kept"].write_table(kept.cast(writers["kept"].schema))
            writers["rejected"].write_table(rejected.cast(writers["rejected"].schema))
            stats.rows_in += len(verdicts)
            stats.kept += kept.num_rows
            stats.rejected.update(v[0] for v in verdicts if v[0] is not None)
            stats.flagged.update(f for v in verdicts if v[0] is None for f in v[3])
        if not writers:
            raise SourceError(f"{input_uri}: no rows; nothing to check")
        for w in writers.values():
            w.close()
    stats.seconds = time.perf_counter() - started
    return stats
