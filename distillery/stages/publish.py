"""Publishing staged shards: cut the final dataset's shards from a stream of tables. Pure.

The final shards keep today's fixed names (`data/train-00000-of-00003.parquet`), so the
count is planned before anything is written: the rows are known from the completion
records, and the byte target is met with the average row size of the first table (the
same rule as `shards.rows_per_shard_for`, on a sample instead of the whole table).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa

from distillery.card import _words
from distillery.charts import length_histogram_of_counts
from distillery.shards import ShardPlan, ShardSpec, shard_bounds, shard_name


def rows_per_shard(first: pa.Table | None, spec: ShardSpec) -> int:
    rows = spec.rows_per_shard
    if spec.max_shard_bytes and first is not None and first.num_rows:
        rows = min(rows, max(1, spec.max_shard_bytes * first.num_rows // max(1, first.nbytes)))
    return rows


def plan(total: int, per_shard: int, prefix: str, split: str) -> list[ShardPlan]:
    bounds = shard_bounds(total, per_shard)
    return [ShardPlan(shard_name(prefix, split, i, len(bounds)), start, stop) for i, (start, stop) in enumerate(bounds)]


def covering(counts: Sequence[int], start: int, stop: int) -> list[tuple[int, int, int]]:
    """(part, offset in the part, rows) of the parts, laid end to end, that hold rows [start, stop)."""
    out, first = [], 0
    for part, n in enumerate(counts):
        lo, hi = max(start, first), min(stop, first + n)
        if lo < hi:
            out.append((part, lo - first, hi - lo))
        first += n
    return out


@dataclass(frozen=True)
class Stream:
    """What one folder of the dataset is cut from: staged parts, read one at a time."""

    parts: list[tuple[Callable[[], pa.Table], int]]  # (read the part as a final-schema table, its rows)
    prefix: str
    split: str
    schema: pa.Schema

    @property
    def rows(self) -> int:
        return sum(n for _, n in self.parts)

    def first_table(self) -> pa.Table | None:
        return next((read() for read, n in self.parts if n), None)

    def pieces(self, plan: ShardPlan) -> Iterator[pa.Table]:
        """The planned shard's rows, a part at a time: can be read again (a retried write)."""
        for part, offset, rows in covering([n for _, n in self.parts], plan.start, plan.stop):
            table = self.parts[part][0]()
            if table.num_rows != self.parts[part][1]:
                raise RuntimeError(f"{plan.path}: a staged part holds {table.num_rows} rows, its record says {self.parts[part][1]}")
            yield table.slice(offset, rows)


class LengthTally:
    """`card.answer_lengths`, a table at a time: tokens when every row has them, else words.
    Keeps how many rows have each length, not every row's."""

    def __init__(self):
        self.tokens: Counter[int] = Counter()
        self.words: Counter[int] = Counter()
        self.all_tokens = True

    def add(self, table: pa.Table) -> None:
        names = table.column_names
        if "completion_tokens" in names and table.column("completion_tokens").null_count == 0:
            self.tokens.update(table.column("completion_tokens").to_pylist())
        else:
            self.all_tokens = False
        if "response" in names:
            self.words.update(_words(table.column("response").to_pylist()))

    def merge(self, other: "LengthTally") -> None:
        self.tokens.update(other.tokens)
        self.words.update(other.words)
        self.all_tokens = self.all_tokens and other.all_tokens

    def passing(self, tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
        """The tables, unchanged, tallied on their way through."""
        for table in tables:
            self.add(table)
            yield table

    def histogram(self) -> dict:
        if self.all_tokens and self.tokens:
            return length_histogram_of_counts({"answers": self.tokens}, "tokens")
        return length_histogram_of_counts({"answers": self.words}, "words")
