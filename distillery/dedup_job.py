"""`distillery dedup`: deduplicate a JSONL or Parquet file on one column, streaming.

Two passes over the input: the first feeds ids, texts and scores to the
Deduplicator in batches (text is not kept); the second writes every row to
kept.parquet or rejected.parquet. Memory grows with the row count (ids,
signatures, LSH buckets), not with the text.
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
from distillery.sources import MISSING, SourceError, get_path


@dataclass
class JobStats:
    rows_in: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    non_utf8_rows: int = 0
    index_rows_before: int = 0
    index_rows_after: int | None = None
    seconds: float = 0.0

    def report(self) -> str:
        lines = [f"rows in:   {self.rows_in}", f"kept:      {self.kept}", f"rejected:  {sum(self.rejected.values())}"]
        lines += [f"  {k}: {v}" for k, v in sorted(self.rejected.items())]
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


class _Job:
    def __init__(self, uri: str, column: str, id_column: str | None, score_column: str | None, batch_rows: int):
        self.uri, self.column, self.id_column, self.score_column, self.batch_rows = uri, column, id_column, score_column, batch_rows
        self.fmt = "parquet" if uri.lower().endswith((".parquet", ".pq")) else "jsonl"
        self.malformed: set[int] = set()

    def _id(self, position: int, value) -> str:
        if self.id_column and value is not None and value is not MISSING:
            return str(value)
        return f"row-{position:012d}"

    def scan(self, dedup: Deduplicator, stats: JobStats) -> None:
        """Pass 1: ids, texts and scores into the deduplicator."""
        position = 0
        for ids, texts, scores in self._columns(stats):
            dedup.add(ids, texts, scores)
            position += len(ids)
        stats.rows_in = position

    def _columns(self, stats: JobStats):
        position = 0
        if self.fmt == "parquet":
            with open_input(self.uri, "input file") as fh:
                pf = pq.ParquetFile(fh)
                names = pf.schema_arrow.names
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
            return
        seen_column = False
        for batch in _jsonl_batches(self.uri, self.batch_rows, stats):
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

    def write(self, result: DedupResult, out_uri: str, stats: JobStats) -> None:
        """Pass 2: every row to kept.parquet or rejected.parquet."""
        out = open_dataset(out_uri)
        kept_w = rej_w = None
        with out.writer("kept.parquet") as kf, out.writer("rejected.parquet") as rf:
            position = result.n_index
            for table in self._tables():
                n = table.num_rows
                idx = list(range(position, position + n))
                reasons = [("malformed_json" if (i - result.n_index) in self.malformed else result.reason[i]) for i in idx]
                cluster = [result.ids[result.representative[i]] for i in idx]
                keep = pa.array([r is None for r in reasons])
                extra_k = {"dedup_cluster": pa.array(cluster, pa.string())}
                kept = _with(table.filter(keep), {k: v.filter(keep) for k, v in extra_k.items()})
                drop = pc.invert(keep)
                dup_of = [result.ids[result.representative[i]] if reasons[k] in ("exact_duplicate", "near_duplicate") else None for k, i in enumerate(idx)]
                reasons = ["seen_in_index" if d is not None and result.representative[i] < result.n_index else r for d, r, i in zip(dup_of, reasons, idx)]
                extra_r = {
                    "duplicate_of": pa.array(dup_of, pa.string()).filter(drop),
                    "reason": pa.array(reasons, pa.string()).filter(drop),
                    "similarity": pa.array(result.similarity[idx], pa.float32()).filter(drop),
                }
                rejected = _with(table.filter(drop), extra_r)
                kept_w = kept_w or pq.ParquetWriter(kf, kept.schema, compression="zstd")
                rej_w = rej_w or pq.ParquetWriter(rf, rejected.schema, compression="zstd")
                kept_w.write_table(kept)
                rej_w.write_table(rejected)
                stats.kept += kept.num_rows
                stats.rejected.update(r for r in reasons if r is not None)
                position += n
            for w in (kept_w, rej_w):
                if w is not None:
                    w.close()

    def _tables(self) -> Iterator[pa.Table]:
        position = 0
        if self.fmt == "parquet":
            with open_input(self.uri, "input file") as fh:
                pf = pq.ParquetFile(fh)
                for batch in pf.iter_batches(batch_size=self.batch_rows):
                    table = pa.Table.from_batches([batch])
                    if not self.id_column:
                        table = _with(table, {"row_id": pa.array([self._id(position + k, None) for k in range(batch.num_rows)])})
                    position += batch.num_rows
                    yield table
            return
        for batch in _jsonl_batches(self.uri, self.batch_rows, None):
            ids, texts, raws = [], [], []
            for k, (line, rec) in enumerate(batch):
                rec = rec or {}
                ids.append(self._id(position + k, get_path(rec, self.id_column) if self.id_column else None))
                value = get_path(rec, self.column)
                texts.append(None if value is MISSING else _text(value))
                raws.append(line)
            position += len(batch)
            yield pa.table({"id": pa.array(ids, pa.string()), self.column: pa.array(texts, pa.string()), "record": pa.array(raws, pa.string())})


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
