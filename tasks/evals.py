"""Tasks of the evaluation flows: answers from a model under evaluation, judge batches, reading
rows, and publishing an evaluation (eval/*.parquet, report.md, manifest.json last, an artifact).

Answers go through the synthesis recipes' cached teacher batches (tasks/synthesis.py), so a
rerun of an evaluation replays the batches it had finished; judge batches are cached the same way.
"""

from __future__ import annotations

import hashlib
import io
import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.utilities.annotations import quote

from distillery.adapters.engine import EngineSpec, get_engine, is_endpoint, spec_for
from distillery.adapters.storage import open_dataset, read_many, storage_options
from distillery.generation import batched
from distillery.prompts import over_budget
from distillery.recipe import StorageConfig, TeacherConfig
from distillery.sources import detect_format, records_jsonl, records_table
from distillery.stages.contract import code_digest
from tasks.generate import code_version
from tasks.report import _artifact_key
from tasks.retry import ENGINE_TAG, engine_died, transient
from tasks.synthesis import endpoint_synthesis, teacher_batch


def model_spec(model: TeacherConfig):
    return spec_for(model, model.model, model.endpoint, f"model {model.name!r}")


def answers(model: TeacherConfig, conversations: list[list[dict]], params: dict, what: str) -> list[dict]:
    """Per conversation {response, finish_reason, samples} or {error}; model.batch_size at a time,
    each batch a cached task run named `what`. Runs inside a flow."""
    spec = model_spec(model)
    call = (endpoint_synthesis if is_endpoint(spec) else teacher_batch).with_options(name=what)
    out: list[dict] = []
    for chunk in batched(conversations, model.batch_size):
        done, _ = call(quote(list(chunk)), spec, params, False, model.max_model_len)
        out += done
    return out


def _judge_key(context, parameters: dict) -> str:
    convs = parameters["conversations"]
    convs = convs.unquote() if isinstance(convs, quote) else convs
    spec = parameters["spec"]
    blob = json.dumps([convs, spec.identity() if is_endpoint(spec) else spec.__dict__, parameters["params"], parameters.get("regex"),
                       parameters.get("choice"), code_version(), code_digest([_judge_batch, over_budget])], sort_keys=True, default=str)
    return "distillery-eval-judge-" + hashlib.sha256(blob.encode()).hexdigest()


def _judge_batch(conversations: list[list[dict]], spec: EngineSpec, params: dict, max_model_len: int,
                 regex: str | None = None, choice: list[str] | None = None) -> list[str | None]:
    """The judge's text per conversation; None where the prompt does not fit the judge's context
    or an endpoint refused it."""
    engine = get_engine(spec)
    why = over_budget(engine.count_prompt_tokens(conversations), params["max_tokens"], max_model_len)
    fits = [i for i, w in enumerate(why) if w is None]
    out: list[str | None] = [None] * len(conversations)
    done = engine.chat([conversations[i] for i in fits], params, regex=regex, choice=choice)
    for i, samples in zip(fits, done):
        out[i] = samples[0].get("response") if samples else None
    return out


judge_batch = task(_judge_batch, name="eval-judge", tags=[ENGINE_TAG], retries=1, retry_condition_fn=engine_died,
                   cache_key_fn=_judge_key, persist_result=True)
endpoint_judge = task(_judge_batch, name="eval-judge-endpoint", cache_key_fn=_judge_key, persist_result=True)


def judged(judge: TeacherConfig, conversations: list[list[dict]], max_tokens: int, regex: str | None = None,
           choice: list[str] | None = None) -> list[str | None]:
    """Greedy judge answers, judge.batch_size conversations per cached task run. Runs inside a flow."""
    spec = model_spec(judge)
    call = endpoint_judge if is_endpoint(spec) else judge_batch
    params = {"n": 1, "temperature": 0.0, "max_tokens": max_tokens}
    out: list[str | None] = []
    for chunk in batched(conversations, judge.batch_size):
        out += call(quote(list(chunk)), spec, params, judge.max_model_len, regex, choice)
    return out


@task(name="read-rows", cache_policy=NONE, retries=2, retry_condition_fn=transient)
def read_rows(uri: str, fmt: str, storage: StorageConfig, limit: int | None = None) -> tuple[list[dict], list[dict], str]:
    """(records, malformed lines as rejects, sha256 of what was read) of every file the URI names."""
    files = read_many(uri, "input file", storage.retries, storage.retry_backoff_seconds,
                      **storage_options(storage.credentials_block, storage.endpoint_url))
    digest = hashlib.sha256()
    records, rejects = [], []
    for name, data in files:
        digest.update(f"{name}\0{len(data)}\0".encode() + data)
        kind = detect_format(name, fmt)
        if kind == "jsonl":
            ok, bad = records_jsonl(data)
            rejects += bad
        else:
            ok = records_table(data, kind, name)
        records += [rec for _, rec in ok]
    return (records[:limit] if limit else records), rejects, digest.hexdigest()


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


@task(name="publish-eval", cache_policy=NONE, retries=2, retry_condition_fn=transient)
def publish_eval(uri: str, storage: StorageConfig, tables: dict[str, pa.Table], report: str, manifest: dict) -> dict:
    """Each table as Parquet at its relative path, report.md, then manifest.json last (a reader that
    finds the manifest finds everything it lists); the report also as a Prefect artifact."""
    store = open_dataset(uri, storage.retries, storage.retry_backoff_seconds, **storage_options(storage.credentials_block, storage.endpoint_url))
    manifest = {**manifest, "files": {path: t.num_rows for path, t in tables.items()}, "published_at": time.time()}
    for path, table in tables.items():
        store.write(path, parquet_bytes(table))
    store.write("report.md", report.encode())
    store.write("manifest.json", json.dumps(manifest, indent=2, sort_keys=True, default=str).encode())
    create_markdown_artifact(report, key=f"{_artifact_key(manifest['name'])}-eval", description=f"Evaluation report for {uri}")
    return manifest
