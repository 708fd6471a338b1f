"""`distillery dedup`: deduplicate a JSONL or Parquet file on one column, streaming.

Two passes over the input: the first feeds ids, texts and scores to the
Deduplicator in batches (text is not kept) and, for JSONL, learns one Arrow
type per top-level field; the second writes every row, with the input's own
columns, to kept.parquet or rejected.parquet. Memory grows with the row count
(ids, signatures, LSH buckets), not with the text. Text reaches the
Deduplicator as Arrow columns: Parquet's own, and for JSONL Polars' parse of a
4 MiB of lines wherever that is exact (`distillery.jsonl_blocks`; otherwise the
batch is parsed line by line with `json.loads`).

Output columns: the input's, then the dedup columns, all named `dedup_*` (an
input that has such a column is refused, so nothing is overwritten):
  kept:     dedup_cluster (the id of the row that represents the row's cluster)
  rejected: dedup_reason, dedup_duplicate_of (the id of the row it copies),
            dedup_similarity, and for JSONL dedup_raw (the line, for malformed_json rows)
  both:     dedup_row_id (row-000000000000, ...) when no id column is used
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distillery.adapters import dedup_index
from distillery.adapters.storage import open_dataset, open_input
from distillery.dedup import DedupParams, Deduplicator, DedupResult
from distillery.json_columns import FieldTypes, conform
from distillery.jsonl_blocks import fast_table, parse
from distillery.commands.jsonl_input import line_batches, parse_lines
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


_INDEX_PART_ROWS = 1 << 18  # rows per index part written by --update-index (128 MiB of signatures)
def _column(table: pa.Table, path: str) -> pa.Array | list | None:
    """A column of a parsed batch by (dotted) path: an Arrow array, or for a path into nested
    values the values as Python objects (MISSING where absent); None if no row has it."""
    head = path.split(".", 1)[0]
    if head not in table.column_names:
        return None
    if "." not in path:
        return table.column(path).combine_chunks()
    return [get_path({head: v}, path) for v in table.column(head).to_pylist()]


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


class _BatchSpill:
    """Pass 1's JSONL batches kept in a local file for pass 2, so the input is read and parsed
    once: Polars' tables as Arrow IPC streams (writing one costs a quarter of parsing it), the
    other batches as their lines."""

    def __init__(self, path: str):
        self.file = open(path, "w+b")
        self.entries: list[tuple[bool, int, int, int]] = []  # (an Arrow table?, offset, length, lines)

    def add(self, table: pa.Table | None, block: bytes, lines: int) -> None:
        if table is not None:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            block = sink.getvalue()
        self.entries.append((table is not None, self.file.tell(), len(block), lines))
        self.file.write(block)

    def __iter__(self) -> Iterator[tuple[pa.Table | None, bytes | None, int]]:
        self.file.flush()
        for arrow, offset, length, lines in self.entries:
            self.file.seek(offset)
            data = self.file.read(length)
            yield (pa.ipc.open_stream(data).read_all(), None, lines) if arrow else (None, data, lines)

    def close(self) -> None:
        self.file.close()


class _Job:
    def __init__(self, uri: str, column: str, id_column: str | None, score_column: str | None, batch_rows: int | None,
                 spill: str | None = None):
        self.uri, self.column, self.score_column = uri, column, score_column
        self.batch_rows = batch_rows  # None: 10,000 Parquet rows, or the JSONL lines of each 4 MiB read
        self.id_column = id_column  # None: `id` when the input has it; "": row numbers
        self.fmt = "parquet" if uri.lower().endswith((".parquet", ".pq")) else "jsonl"
        self.malformed: set[int] = set()
        self.fields = FieldTypes()  # JSONL: the columns pass 2 writes
        self.fast: list[bool] = []  # JSONL: per batch, did Polars parse it
        self.batches = _BatchSpill(os.path.join(spill, "batches.arrows")) if spill and self.fmt == "jsonl" else None
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

    def _batch(self, table: pa.Table, position: int):
        """(ids, texts, scores) of a parsed batch: text stays an Arrow column where it is one."""
        n = table.num_rows
        ids_col = _column(table, self.id_column) if self.id_column else None
        if ids_col is None:
            ids = [self._id(position + k, None) for k in range(n)]
        elif isinstance(ids_col, pa.Array) and (pa.types.is_string(ids_col.type) or pa.types.is_large_string(ids_col.type)) \
                and not ids_col.null_count:
            ids = ids_col.to_pylist()
        else:
            values = ids_col.to_pylist() if isinstance(ids_col, pa.Array) else ids_col
            ids = [self._id(position + k, v) for k, v in enumerate(values)]
        text = _column(table, self.column)
        if isinstance(text, pa.Array) and (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
            texts = text
        else:
            values = [None] * n if text is None else text.to_pylist() if isinstance(text, pa.Array) else text
            texts = [None if v is MISSING else _text(v) for v in values]
        scores = None
        if self.score_column:
            col = _column(table, self.score_column)
            if isinstance(col, pa.Array) and (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
                scores = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
            else:
                values = [None] * n if col is None else col.to_pylist() if isinstance(col, pa.Array) else col
                scores = [_score(v) for v in values]
        return ids, texts, scores, text is not None and (not isinstance(text, list) or any(v is not MISSING for v in text))

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
            for batch in pf.iter_batches(batch_size=self.batch_rows or 10_000, columns=cols):
                ids, texts, scores, _ = self._batch(pa.Table.from_batches([batch]), position)
                yield ids, texts, scores
                position += batch.num_rows

    def _jsonl_columns(self, stats: JobStats):
        position = 0
        seen_column = False
        for block, lines in line_batches(self.uri, self.batch_rows):
            table = fast_table(block, lines)
            self.fast.append(table is not None)
            if self.batches is not None:
                self.batches.add(table, block, lines)
            if table is not None:
                if self.id_column is None:  # the first batch decides: `id` when its records have one
                    self.id_column = "id" if "id" in table.column_names else ""
                self.fields.observe_schema(table.schema)
                ids, texts, scores, seen = self._batch(table, position)
                seen_column = seen_column or seen
                yield ids, texts, scores
                position += lines
                continue
            batch = parse_lines(block, stats)
            records = [rec for _, rec in batch if rec is not None]
            if self.id_column is None:
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

    def verdicts(self, result: DedupResult) -> tuple[np.ndarray, pa.Array, np.ndarray]:
        """Per input row: its reason (None kept) as an object array, the id of its cluster's
        representative, and whether that id is the row it duplicates (dedup_duplicate_of)."""
        rows = np.arange(result.n_index, len(result.ids))
        reasons = np.array(result.reason[result.n_index:], dtype=object)
        if self.malformed:
            reasons[np.fromiter(self.malformed, dtype=np.int64)] = "malformed_json"
        rep = np.asarray(result.representative)[rows]
        duplicate = (reasons == "exact_duplicate") | (reasons == "near_duplicate")
        reasons[duplicate & (rep < result.n_index)] = "seen_in_index"
        return reasons, pa.array(result.ids, pa.string()).take(pa.array(rep)), duplicate

    def write(self, result: DedupResult, out_uri: str, stats: JobStats) -> None:
        """Pass 2: every row to kept.parquet or rejected.parquet."""
        out = open_dataset(out_uri)
        kept_schema, rejected_schema = self._schemas()
        reasons, clusters, duplicate = self.verdicts(result)
        kept_all = np.fromiter((r is None for r in reasons), dtype=np.bool_, count=len(reasons))
        similarity = pa.array(np.asarray(result.similarity)[result.n_index:], pa.float32())
        with out.writer("kept.parquet") as kf, out.writer("rejected.parquet") as rf:
            kept_w = _Grouped(pq.ParquetWriter(kf, kept_schema, compression="zstd"))
            rej_w = _Grouped(pq.ParquetWriter(rf, rejected_schema, compression="zstd"))
            position = 0
            for table, raws in self._tables():
                n = table.num_rows
                why = reasons[position : position + n]
                keep_np = kept_all[position : position + n]
                keep, drop = pa.array(keep_np), pa.array(~keep_np)
                cluster = clusters.slice(position, n)
                kept_w.write_table(_with(table.filter(keep), {"dedup_cluster": cluster.filter(keep)}))
                if not keep_np.all():
                    dup_of = pc.if_else(pa.array(duplicate[position : position + n]), cluster, pa.scalar(None, pa.string()))
                    extra = {
                        "dedup_reason": pa.array(why, pa.string()).filter(drop),
                        "dedup_duplicate_of": dup_of.filter(drop),
                        "dedup_similarity": similarity.slice(position, n).filter(drop),
                    }
                    if self.fmt == "jsonl":  # the line, for a malformed row (batches Polars parsed have none)
                        extra["dedup_raw"] = (pa.nulls(n, pa.string()) if raws is None else pa.array(raws, pa.string())).filter(drop)
                    rej_w.write_table(_with(table.filter(drop), extra))
                position += n
            kept_w.close()
            rej_w.close()
        stats.kept = int(kept_all.sum())
        stats.rejected.update(r for r in reasons.tolist() if r is not None)

    def _tables(self) -> Iterator[tuple[pa.Table, list[str | None] | None]]:
        """The input's rows in batches, as tables of its columns (plus dedup_row_id without an id column),
        each with the raw lines of its malformed JSONL rows (None for Parquet)."""
        position = 0
        if self.fmt == "parquet":
            with open_input(self.uri, "input file") as fh:
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=self.batch_rows or 10_000):
                    yield self._numbered(pa.Table.from_batches([batch], schema=self.schema), position), None
                    position += batch.num_rows
            return
        if self.batches is not None and not self.fields.as_json:  # the batches pass 1 kept
            batches = iter(self.batches)
        else:  # read again; a field written as JSON text needs every line's own text
            batches = ((None, block, lines) for block, lines in line_batches(self.uri, self.batch_rows))
        for fast, (parsed, block, lines) in zip(self.fast, batches):
            if fast and not self.fields.as_json:
                parsed = parse(block) if parsed is None else parsed
                n = parsed.num_rows
                columns = [conform(_one_chunk(parsed.column(f.name)), f.type) if f.name in parsed.column_names
                           else pa.nulls(n, f.type) for f in self.schema]
                yield self._numbered(pa.Table.from_arrays(columns, schema=self.schema), position), None
            else:
                batch = parse_lines(block, None)
                table = self.fields.table([rec for _, rec in batch])
                yield self._numbered(table, position), [line if rec is None else None for line, rec in batch]
            position += lines

    def _numbered(self, table: pa.Table, position: int) -> pa.Table:
        if self.id_column:
            return table
        return _with(table, {ROW_ID: pa.array([self._id(position + k, None) for k in range(table.num_rows)], pa.string())})


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


class _Grouped:
    """Batches gathered into row groups of about 32 MiB (batches of a 4 MiB read are small)."""

    GROUP_BYTES = 32 << 20

    def __init__(self, writer: pq.ParquetWriter):
        self.writer, self.tables, self.nbytes = writer, [], 0

    def write_table(self, table: pa.Table) -> None:
        self.tables.append(table)
        self.nbytes += table.nbytes
        if self.nbytes >= self.GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.tables:
            self.writer.write_table(pa.concat_tables(self.tables))
        self.tables, self.nbytes = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


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
    score_column: str | None = None, index_uri: str | None = None, update_index: bool = False, batch_rows: int | None = None,
) -> JobStats:
    started = time.perf_counter()
    stats = JobStats()
    # Local scratch: signatures (512 MB a million rows) and, for JSONL, the parsed input (about its size)
    with tempfile.TemporaryDirectory(prefix="distillery-dedup-") as spill:
        _run(Deduplicator(params, spill=spill), stats, input_uri, column, output_uri, id_column, score_column,
             index_uri, update_index, batch_rows)
    stats.seconds = time.perf_counter() - started
    return stats


def _run(dedup: Deduplicator, stats: JobStats, input_uri: str, column: str, output_uri: str, id_column: str | None,
         score_column: str | None, index_uri: str | None, update_index: bool, batch_rows: int | None) -> None:
    if index_uri:
        stats.index_rows_before = dedup_index.load_into(dedup, index_uri)
    job = _Job(input_uri, column, id_column, score_column, batch_rows, spill=dedup.spill)
    job.scan(dedup, stats)
    result = dedup.finish()
    job.write(result, output_uri, stats)
    if job.batches is not None:
        job.batches.close()
    if update_index:
        rows = [i for i in result.rows() if result.reason[i] is None and (i - result.n_index) not in job.malformed]
        stats.index_rows_after = stats.index_rows_before
        for start in range(0, len(rows), _INDEX_PART_ROWS) or [0]:  # parts of bounded size: bounded memory
            ids, keys, sigs = dedup.export(rows[start : start + _INDEX_PART_ROWS])
            stats.index_rows_after = dedup_index.append(index_uri, dedup.params, ids, keys, sigs)["rows"]
