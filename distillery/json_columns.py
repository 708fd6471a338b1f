"""Arrow columns from JSON records (JSONL rows): one type per top-level field, over every row. Pure.

`FieldTypes.observe` sees the records batch by batch (a first pass over the
file) and keeps, per top-level field, the Arrow type pyarrow infers, widened
across batches: int and float become float, a field that is null in one batch
takes the other batches' type, structs merge their fields, lists their items.
A field whose values share no type (a number in some rows and a string in
others, a struct whose fields disagree, an integer beyond int64, only empty
objects) becomes a string column holding each value as JSON text. `table`
then builds every batch with that one schema, so a file streams into one
Parquet file with one explicit schema.
"""

from __future__ import annotations

import json

import pyarrow as pa

from distillery.errors import DistilleryError

_NO_TYPE = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)


def _widen(known: pa.DataType, found: pa.DataType) -> pa.DataType:
    """The one type both fit (ArrowTypeError when there is none)."""
    if known == found:
        return known
    both = [pa.schema([pa.field("value", known)]), pa.schema([pa.field("value", found)])]
    return pa.unify_schemas(both, promote_options="permissive").field("value").type


def _parquet_writable(type_: pa.DataType) -> bool:
    """Parquet has no struct without fields (what `{}` infers as)."""
    if pa.types.is_struct(type_):
        return type_.num_fields > 0 and all(_parquet_writable(type_.field(i).type) for i in range(type_.num_fields))
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        return _parquet_writable(type_.value_type)
    return True


class FieldTypes:
    """Top-level fields in order of first appearance, each with its Arrow type."""

    def __init__(self) -> None:
        self.types: dict[str, pa.DataType] = {}
        self.as_json: set[str] = set()

    def observe(self, records: list[dict]) -> None:
        for name in dict.fromkeys(key for record in records for key in record):
            if name in self.as_json:
                continue
            try:
                found = pa.array([record.get(name) for record in records]).type
                known = self.types.get(name)
                self.types[name] = found if known is None else _widen(known, found)
            except _NO_TYPE:
                self.types[name] = pa.string()
                self.as_json.add(name)

    def observe_schema(self, schema: pa.Schema) -> None:
        """`observe` for a batch already parsed into Arrow columns (types as `pa.array` infers them)."""
        for f in schema:
            if f.name in self.as_json:
                continue
            known = self.types.get(f.name)
            try:
                self.types[f.name] = f.type if known is None else _widen(known, f.type)
            except _NO_TYPE:
                self.types[f.name] = pa.string()
                self.as_json.add(f.name)

    def finish(self) -> pa.Schema:
        """The schema every batch is built with (call once every record has been observed)."""
        for name, type_ in self.types.items():
            if not _parquet_writable(type_):
                self.types[name] = pa.string()
                self.as_json.add(name)
        return self.schema()

    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(name, type_) for name, type_ in self.types.items()])

    def table(self, records: list[dict | None]) -> pa.Table:
        """A batch as a table of the observed schema; None (a line that did not parse) is a row of nulls."""
        columns = []
        for name, type_ in self.types.items():
            values = [None if record is None else record.get(name) for record in records]
            if name in self.as_json:
                values = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
            try:
                columns.append(pa.array(values, type=type_))
            except _NO_TYPE as err:  # not expected: every value was seen in observe
                raise DistilleryError(f"field {name!r}: a value does not fit its column type {type_} ({err})") from None
        return pa.Table.from_arrays(columns, schema=self.schema())


def plain_type(type_: pa.DataType) -> pa.DataType:
    """The type `pa.array` infers for the same values: string for large or view strings, list
    for large lists, recursively (what Polars hands over uses the large and view forms)."""
    if pa.types.is_large_string(type_) or pa.types.is_string_view(type_):
        return pa.string()
    if pa.types.is_large_list(type_) or pa.types.is_list(type_) or pa.types.is_list_view(type_) or pa.types.is_large_list_view(type_):
        return pa.list_(plain_type(type_.value_type))
    if pa.types.is_struct(type_):
        return pa.struct([pa.field(f.name, plain_type(f.type)) for f in type_])
    return type_


def conform(array: pa.Array, type_: pa.DataType) -> pa.Array:
    """An array of one batch in the file's widened type: structs gain the fields other batches
    had (null here), lists convert their items, the rest is a cast (int to float, null to any)."""
    if array.type == type_:
        return array
    if pa.types.is_struct(type_) and pa.types.is_struct(array.type):
        have = {array.type.field(i).name for i in range(array.type.num_fields)}
        children = [conform(array.field(f.name), f.type) if f.name in have else pa.nulls(len(array), f.type) for f in type_]
        return pa.StructArray.from_arrays(children, fields=list(type_), mask=array.is_null() if array.null_count else None)
    if pa.types.is_list(type_) and (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        offsets = array.offsets.cast(pa.int32())
        values = conform(array.values, type_.value_type)
        return pa.ListArray.from_arrays(offsets, values, type=type_, mask=array.is_null() if array.null_count else None)
    return array.cast(type_)


__all__ = ["FieldTypes", "conform", "plain_type"]
