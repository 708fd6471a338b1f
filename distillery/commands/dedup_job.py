"""`distillery dedup`: deduplicate a JSONL or Parquet file on one column, streaming.

Two passes over the input: the first feeds ids, texts and scores to the
Deduplicator in batches (text is not kept) and, for JSONL, learns one Arrow
type per top-level field; the second writes every row, with the input's own
columns, to kept.parquet or rejected.parquet. Memory grows with the row count
(ids, signatures, LSH buckets), not with the text.

Output columns: the input's, then the dedup columns, all named `dedup_*` (an
input that has such a column is refused, so nothing is overwritten):
  kept:     dedup_cluster (the id of the row that represents the row's cluster)
  rejected: dedup_reason, dedup_duplicate_of (the id of the row it copies),
            dedup_similarity, and for JSONL dedup_raw (the line, for malformed_json rows)
  both:     dedup_row_id (row-000000000000, ...) when no id column is used
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distillery.adapters import dedup_index
from distillery.adapters.storage import open_dataset, open_input
from distillery.dedup import DedupParams, Deduplicator, DedupResult
from distillery.json_columns import FieldTypes
from distillery.sources import MISSING, SourceError, get_path

PREFIX = "dedup_"
ROW_ID = "dedup_row_id"
KEPT_COLUMNS = pa.schema([pa.field("dedup_cluster", pa.string())])
REJECTED_COLUMNS = pa.schema([
    pa.field("dedup_reason", pa.string()), pa.field("dedup_duplicate_of", pa.string()), pa.field("dedup_similarity", pa.float32()),
])
RAW = pa.field("dedup_raw", pa.string())


@dataclass
class JobStats:
    rows_in: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    non_utf8_rows: int = 0
    index_rows_before: int = 0
    index_rows_after: int | None = None
    id_column: str | None = None
    repeated_ids: int = 0
    seconds: float = 0.0

    def report(self) -> str:
        lines = [f"rows in:   {self.rows_in}", f"kept:      {self.kept}", f"rejected:  {sum(self.rejected.values())}"]
        lines += [f"  {k}: {v}" for k, v in sorted(self.rejected.items())]
        lines.append(f"ids:       {f'column {self.id_column!r}' if self.id_column else f'row numbers ({ROW_ID})'}")
        if self.repeated_ids:
            lines.append(
                f"  {self.repeated_ids} rows repeat an earlier row's {self.id_column!r}, so dedup_duplicate_of may name "
                "several rows; pass --id-column with a unique column, or --id-column '' for row numbers"
            )
        lines.append(f"non-UTF-8 rows (bytes replaced): {self.non_utf8_rows}")
        if self.index_rows_before or self.index_rows_after is not None:
            after = f", now {self.index_rows_after}" if self.index_rows_after is not None else ""
            lines.append(f"index rows: {self.index_rows_before} before{after}")
        lines.append(f"seconds:   {self.seconds:.1f}")
        return "\n".join(lines)


def _jsonl_batches(uri: str, rows: int, stats: JobStats | None) -> Iterator[list[tuple[str, dict | None]]]:
    """(raw line, parsed record or None if malformed) in batches."""
    batch = []
    with open_input(uri, "input file") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("utf-8", "replace")
                if stats is not None:
                    stats.non_utf8_rows += 1
            line = line.rstrip("\r\n")
            try:
                rec = json.loads(line)
                rec = rec if isinstance(rec, dict) else None
            except json.JSONDecodeError:
                rec = None
            batch.append((line, rec))
            if len(batch) >= rows:
                yield batch
                batch = []
    if batch:
        yield batch


def _text(value) -> str | None:
    if value is None or not isinstance(value, (str, int, float)):
        return None if value is None else json.dumps(value)
    return str(value)


def _clashes(uri: str, names: list[str]) -> None:
    taken = [n for n in names if n.startswith(PREFIX)]
    if taken:
        raise SourceError(
            f"{uri}: column(s) {', '.join(taken)} use the {PREFIX}* names distillery dedup writes (the output of an "
            f"earlier dedup?); drop or rename them first, e.g. keep only your own columns of kept.parquet"
        )


class _Job:
    def __init__(self, uri: str, column: str, id_column: str | None, score_column: str | None, batch_rows: int):
        self.uri, self.column, self.score_column, self.batch_rows = uri, column, score_column, batch_rows
        self.id_column = id_column  # None: `id` when the input has it; "": row numbers
        self.fmt = "parquet" if uri.lower().endswith((".parquet", ".pq")) else "jsonl"
        self.malformed: set[int] = set()
        self.fields = FieldTypes()  # JSONL: the columns pass 2 writes
        self.schema: pa.Schema | None = None  # the input's columns (Parquet: its own schema)

    def _id(self, position: int, value) -> str:
        if self.id_column and value is not None and value is not MISSING:
            return str(value)
        return f"row-{position:012d}"

    def scan(self, dedup: Deduplicator, stats: JobStats) -> None:
        """Pass 1: ids, texts and scores into the deduplicator; the input's columns."""
        position = 0
        for ids, texts, scores in self._columns(stats) if self.fmt == "parquet" else self._jsonl_columns(stats):
            dedup.add(ids, texts, scores)
            position += len(ids)
        if self.fmt == "jsonl":
            self.schema = self.fields.finish()
            _clashes(self.uri, self.schema.names)
        stats.rows_in = position
        stats.id_column = self.id_column or None
        if self.id_column:
            stats.repeated_ids = position - len(set(dedup.ids[len(dedup.ids) - position:]))

    def _columns(self, stats: JobStats):
        position = 0
        with open_input(self.uri, "input file") as fh:
            pf = pq.ParquetFile(fh)
            self.schema = pf.schema_arrow
            names = self.schema.names
            _clashes(self.uri, names)
            if self.id_column is None:
                self.id_column = "id" if "id" in names else ""
            for col in filter(None, (self.column, self.id_column, self.score_column)):
                if col not in names:
                    raise SourceError(f"{self.uri}: column {col!r} not found; columns there: {', '.join(names[:12])}")
            cols = list(dict.fromkeys(filter(None, (self.column, self.id_column, self.score_column))))
            for batch in pf.iter_batches(batch_size=self.batch_rows, columns=cols):
                d = batch.to_pydict()
                n = batch.num_rows
                ids = [self._id(position + k, v) for k, v in enumerate(d.get(self.id_column, [None] * n))]
                yield ids, [_text(v) for v in d[self.column]], d.get(self.score_column) if self.score_column else None
                position += n

    def _jsonl_columns(self, stats: JobStats):
        position = 0
        seen_column = False
        for batch in _jsonl_batches(self.uri, self.batch_rows, stats):
            records = [rec for _, rec in batch if rec is not None]
            if self.id_column is None:  # the first batch decides: `id` when its records have one
                self.id_column = "id" if any("id" in rec for rec in records) else ""
            self.fields.observe(records)
            ids, texts, scores = [], [], []
            for k, (_, rec) in enumerate(batch):
                if rec is None:
                    self.malformed.add(position + k)
                    rec = {}
                seen_column = seen_column or get_path(rec, self.column) is not MISSING
                ids.append(self._id(position + k, get_path(rec, self.id_column) if self.id_column else None))
                value = get_path(rec, self.column)
                texts.append(None if value is MISSING else _text(value))
                scores.append(_score(get_path(rec, self.score_column)) if self.score_column else None)
            yield ids, texts, scores
            position += len(batch)
        if position and not seen_column:
            raise SourceError(f"{self.uri}: column {self.column!r} not found in any row; check --column")

    def _schemas(self) -> tuple[pa.Schema, pa.Schema]:
        """kept.parquet's and rejected.parquet's schemas: the input's columns, then the dedup columns."""
        base = list(self.schema) + ([] if self.id_column else [pa.field(ROW_ID, pa.string())])
        raw = [RAW] if self.fmt == "jsonl" else []
        return pa.schema(base + list(KEPT_COLUMNS)), pa.schema(base + list(REJECTED_COLUMNS) + raw)

    def write(self, result: DedupResult, out_uri: str, stats: JobStats) -> None:
        """Pass 2: every row to kept.parquet or rejected.parquet."""
        out = open_dataset(out_uri)
        kept_schema, rejected_schema = self._schemas()
        with out.writer("kept.parquet") as kf, out.writer("rejected.parquet") as rf:
            kept_w = pq.ParquetWriter(kf, kept_schema, compression="zstd")
            rej_w = pq.ParquetWriter(rf, rejected_schema, compression="zstd")
            position = result.n_index
            for table, raws in self._tables():
                n = table.num_rows
                idx = list(range(position, position + n))
                reasons = [("malformed_json" if (i - result.n_index) in self.malformed else result.reason[i]) for i in idx]
                keep = pa.array([r is None for r in reasons])
                cluster = pa.array([result.ids[result.representative[i]] for i in idx], pa.string())
                kept_w.write_table(_with(table.filter(keep), {"dedup_cluster": cluster.filter(keep)}))
                drop = pc.invert(keep)
                dup_of = [result.ids[result.representative[i]] if reasons[k] in ("exact_duplicate", "near_duplicate") else None for k, i in enumerate(idx)]
                reasons = ["seen_in_index" if d is not None and result.representative[i] < result.n_index else r for d, r, i in zip(dup_of, reasons, idx)]
                extra = {
                    "dedup_reason": pa.array(reasons, pa.string()).filter(drop),
                    "dedup_duplicate_of": pa.array(dup_of, pa.string()).filter(drop),
                    "dedup_similarity": pa.array(result.similarity[idx], pa.float32()).filter(drop),
                }
                if raws is not None:
                    extra["dedup_raw"] = pa.array(raws, pa.string()).filter(drop)
                rej_w.write_table(_with(table.filter(drop), extra))
                stats.kept += n - sum(r is not None for r in reasons)
                stats.rejected.update(r for r in reasons if r is not None)
                position += n
            kept_w.close()
            rej_w.close()

    def _tables(self) -> Iterator[tuple[pa.Table, list[str | None] | None]]:
        """The input's rows in batches, as tables of its columns (plus dedup_row_id without an id column),
        each with the raw lines of its malformed JSONL rows (None for Parquet)."""
        position = 0
        if self.fmt == "parquet":
            with open_input(self.uri, "input file") as fh:
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=self.batch_rows):
                    yield self._numbered(pa.Table.from_batches([batch], schema=self.schema), position), None
                    position += batch.num_rows
            return
        for batch in _jsonl_batches(self.uri, self.batch_rows, None):
            table = self.fields.table([rec for _, rec in batch])
            yield self._numbered(table, position), [line if rec is None else None for line, rec in batch]
            position += len(batch)

    def _numbered(self, table: pa.Table, position: int) -> pa.Table:
        if self.id_column:
            return table
        return _with(table, {ROW_ID: pa.array([self._id(position + k, None) for k in range(table.num_rows)], pa.string())})


def _with(table: pa.Table, columns: dict) -> pa.Table:
    for name, values in columns.items():
        table = table.append_column(name, values)
    return table


def _score(value) -> float | None:
    try:
        return None if value is None or value is MISSING else float(value)
    except (TypeError, ValueError):
        return None


def run_dedup(
    input_uri: str, column: str, output_uri: str, params: DedupParams, id_column: str | None = None,
    score_column: str | None = None, index_uri: str | None = None, update_index: bool = False, batch_rows: int = 10_000,
) -> JobStats:
    started = time.perf_counter()
    stats = JobStats()
    dedup = Deduplicator(params)
    if index_uri:
        stats.index_rows_before = dedup_index.load_into(dedup, index_uri)
    job = _Job(input_uri, column, id_column, score_column, batch_rows)
    job.scan(dedup, stats)
    result = dedup.finish()
    job.write(result, output_uri, stats)
    if update_index:
        rows = [i for i in result.rows() if result.reason[i] is None and (i - result.n_index) not in job.malformed]
        ids, keys, sigs = dedup.export(rows)
        stats.index_rows_after = dedup_index.append(index_uri, params, ids, keys, sigs)["rows"]
    stats.seconds = time.perf_counter() - started
    return stats
