"""Batch files: a build's teacher requests written as an OpenAI batch input file, and a
build made from the batch's output file instead of live requests.

    distillery batch-file RECIPE --to requests.jsonl     # load -> render -> fit, then the requests
    (OpenAI's Batch API, or `vllm run-batch -i requests.jsonl -o results.jsonl`)
    distillery run RECIPE --responses results.jsonl      # the same stages, answers from the file

Each request's `custom_id` is the teacher, the seed id and a digest of the exact request
body (distillery.endpoints.teacher_request), so an answer never serves a prompt or
settings it was not made for: requests missing from the output file, or answered with an
error, are quarantined rows with the reason.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from prefect import flow, get_run_logger

from distillery.adapters.storage import open_output, read_bytes, storage_options
from distillery.endpoints import batch_answer, batch_line, completions_from, MalformedAnswer, read_batch_output, teacher_request
from distillery.generation import attach_completions, sampling_kwargs
from distillery.prompts import render_messages
from distillery.recipe import Recipe
from distillery.stages.executor import read_rows
from flows.staged import _started, fitted_prompts


def teacher_params(recipe: Recipe) -> list[tuple[str, str, str | None, dict, bool]]:
    """Per teacher: (name, the model its requests name, system prompt, sampling params, KD
    ids as vLLM's `token_id:N`: when its endpoint has no local tokenizer to map text tokens)."""
    endpoints, out = recipe.endpoints(), []
    for name, model, system, sampling in recipe.teachers():
        params = sampling_kwargs(sampling.n, sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed)
        if recipe.kd.top_k:
            params["kd_top_k"] = recipe.kd.top_k
        token_ids = not (name in endpoints and endpoints[name].tokenizer)
        out.append((name, model, system, params, token_ids))
    return out


@flow(name="batch-file", log_prints=True, validate_parameters=True)
def batch_file(recipe: Recipe, to: str) -> dict:
    """The build's teacher requests (every teacher, every prompt that fits) as an OpenAI
    batch input file at `to` (a path or fsspec URI). Returns {requests, prompts, path}."""
    run, done = _started(recipe, check=False)
    if run is None:
        raise ValueError(f"{recipe.output.uri} already holds this build (run {done['run_id']}); there is nothing to request")
    fitted = fitted_prompts(recipe, run, run.records["load"])
    requests = 0
    digest = hashlib.sha256()
    st = recipe.storage
    with open_output(to, **storage_options(st.credentials_block, st.endpoint_url)) as out:
        for record in fitted:
            rows = read_rows(run.store, [record.files[0]])
            for name, model, system, params, token_ids in teacher_params(recipe):
                for row in render_messages(rows, system):
                    line = (batch_line(*teacher_request(name, model, row, params, token_ids)) + "\n").encode()
                    digest.update(line)
                    out.write(line)
                    requests += 1
    prompts = sum(r.rows_out for r in fitted)
    get_run_logger().info("%d requests for %d prompts written to %s", requests, prompts, to)
    return {"requests": requests, "prompts": prompts, "path": to, "sha256": digest.hexdigest()}


class ResponseBatches:
    """Generate's `complete` from a batch output file: each row's answer found by its
    custom_id; a missing id or an error answer is a refused row with the reason."""

    def __init__(self, teacher: str, model: str, params: dict, token_ids: bool, answers: dict[str, dict], to_id=None):
        self.teacher, self.model, self.params, self.token_ids = teacher, model, params, token_ids
        self.answers, self.to_id = answers, to_id

    def __call__(self, rows: list[dict]) -> tuple[list[dict], float, list[dict]]:
        kept, completions, refused = [], [], []
        n, kd_k = int(self.params.get("n") or 1), int(self.params.get("kd_top_k") or 0)
        for row in rows:
            cid, _ = teacher_request(self.teacher, self.model, row, self.params, self.token_ids)
            body, why = batch_answer(self.answers.get(cid))
            if body is not None:
                try:
                    completions.append(completions_from(body, n, kd_k, self.to_id))
                    kept.append(row)
                    continue
                except (MalformedAnswer, ValueError) as err:
                    why = f"malformed answer: {err}"
            refused.append({**row, "reason": "batch_error" if cid in self.answers else "batch_missing", "detail": why})
        out = attach_completions(kept, completions, self.teacher, self.model, self.params, datetime.now(timezone.utc))
        return out, 0.0, refused


def load_answers(recipe: Recipe, uri: str) -> tuple[dict[str, dict], str]:
    """A batch output file -> ({custom_id: line}, sha256 of the file)."""
    st = recipe.storage
    data = read_bytes(uri, "responses file", st.retries, st.retry_backoff_seconds, **storage_options(st.credentials_block, st.endpoint_url))
    return read_batch_output(data.decode().splitlines(), uri), hashlib.sha256(data).hexdigest()


def from_responses(recipe: Recipe, uri: str, teacher: str, model: str, params: dict, cache: dict):
    """Generate's `complete` and settings for one teacher from the batch output file at `uri`
    (read into `cache` once per build). The settings name the file's checksum: shards made
    from another file, or from live requests, are not taken for these."""
    if "answers" not in cache:
        cache["answers"], cache["sha256"] = load_answers(recipe, uri)
        get_run_logger().info("responses file %s: %d answers", uri, len(cache["answers"]))
    token_ids = {t[0]: t[4] for t in teacher_params(recipe)}[teacher]
    endpoint = recipe.endpoints().get(teacher)
    to_id = None
    if recipe.kd.top_k and endpoint is not None and endpoint.tokenizer:
        from distillery.adapters.endpoint import id_by_bytes

        to_id = id_by_bytes(endpoint.tokenizer)
    batches = ResponseBatches(teacher, model, params, token_ids, cache["answers"], to_id)
    return batches, {"responses_sha256": cache["sha256"], "model": model}
