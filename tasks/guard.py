"""The guards' Prefect side: evaluation sets read before generation and staged for the
workers, the eval index once per process, the collapse history, the collapse event."""

from __future__ import annotations

import pyarrow as pa
from prefect import get_run_logger
from prefect.events import emit_event

from distillery.adapters.storage import StorageError, open_dataset, read_many, storage_options
from distillery.collapse import dump_history, parse_history
from distillery.guards.decontam import EvalIndex
from distillery.guards.evalsets import EvalSetError, eval_items
from distillery.recipe import Recipe
from distillery.stages.contract import StagedFile
from distillery.stages.staged import decode, encode

EVAL_SCHEMA = pa.schema([pa.field("eval_set", pa.string()), pa.field("item_id", pa.string()), pa.field("text", pa.string())])
COLLAPSE_EVENT = "distillery.collapse.warning"
_INDEXES: dict[tuple, tuple[EvalIndex, EvalIndex | None]] = {}  # one build's indexes per process


def read_eval_sets(recipe: Recipe) -> list[tuple[str, str, str]]:
    """Every item of guards.decontam.eval_sets as (set, id, text): a missing, empty or
    column-less file stops the build here, before generation, in one line."""
    st, items = recipe.storage, []
    for spec in recipe.guards.decontam.eval_sets:
        try:
            files = read_many(spec.uri, f"evaluation file {spec.name!r}", st.retries, st.retry_backoff_seconds,
                              **storage_options(st.credentials_block, st.endpoint_url))
        except StorageError as err:
            raise EvalSetError(f"guards.decontam.eval_sets[{spec.name!r}]: {err}") from None
        items += eval_items(files, spec.name, spec.format, spec.column, spec.id_column)
    return items


def stage_eval_items(store, root: str, items: list[tuple[str, str, str]]) -> StagedFile:
    """The items as one staged file the guard stage's workers read (by checksum)."""
    data, sha = encode([{"eval_set": s, "item_id": i, "text": t} for s, i, t in items], EVAL_SCHEMA)
    path = f"{root}/eval-items/items-{sha[:16]}.parquet"
    if not store.exists(path):
        store.write(path, data)
    return StagedFile(path, sha, len(data), len(items))


def eval_indexes(store, file: StagedFile, ngram: int, answer_ngram: int | None) -> tuple[EvalIndex, EvalIndex | None]:
    """The prompt index (and the answer index) of the staged items, built once per process."""
    key = (file.sha256, ngram, answer_ngram)
    if key not in _INDEXES:
        rows = decode(store.read(file.path), file.sha256, file.path)
        items = [(r["eval_set"], r["item_id"], r["text"]) for r in rows]
        _INDEXES.clear()
        _INDEXES[key] = (EvalIndex.build(items, ngram), EvalIndex.build(items, answer_ngram) if answer_ngram else None)
    return _INDEXES[key]


def read_history(recipe: Recipe, uri: str) -> tuple[list[dict], str | None]:
    """The collapse history at `uri` (none yet: empty); an unreadable one is reported, not fatal."""
    st = recipe.storage
    folder, _, name = uri.rstrip("/").rpartition("/")
    try:
        ds = open_dataset(folder or ".", st.retries, st.retry_backoff_seconds, **storage_options(st.credentials_block, st.endpoint_url))
        data = ds.read(name) if ds.exists(name) else None
    except (StorageError, OSError) as err:
        return [], f"collapse history {uri} cannot be read ({err}); starting a new one"
    entries, problem = parse_history(data)
    return entries, (f"collapse history {uri}: {problem}; it is replaced by a new one" if problem else None)


def write_history(recipe: Recipe, uri: str, entries: list[dict]) -> None:
    st = recipe.storage
    folder, _, name = uri.rstrip("/").rpartition("/")
    ds = open_dataset(folder or ".", st.retries, st.retry_backoff_seconds, **storage_options(st.credentials_block, st.endpoint_url))
    ds.write(name, dump_history(entries))


def collapse_event(recipe: Recipe, run_id: str, warnings: list[str], metrics: dict, comparison: dict) -> None:
    """A Prefect event an automation can match (event name, resource distillery.dataset.<name>)."""
    emit_event(event=COLLAPSE_EVENT,
               resource={"prefect.resource.id": f"distillery.dataset.{recipe.name}", "prefect.resource.name": recipe.name},
               payload={"warnings": warnings, "metrics": metrics, "output": recipe.output.uri, "run_id": run_id,
                        "previous_run": comparison.get("previous_run"), "first_run": comparison.get("first_run"),
                        "fail_on_collapse": recipe.guards.fail_on_collapse})
    get_run_logger().warning("collapse monitor: %s", "; ".join(warnings))
