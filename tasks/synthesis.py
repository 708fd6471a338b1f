"""Teacher batches for the synthesis recipes (proposing, evolving, writing exercises or
queries): one cached task run per `teacher.batch_size` conversations.

A batch is cached by content (its conversations, the engine settings, the sampling
settings, and the code version), so a rerun of a crashed build replays the batches it
had finished and the synthesis, seeded, takes the same path again.
"""

from __future__ import annotations

import hashlib
import json
import time

from prefect import task
from prefect.utilities.annotations import quote

from distillery.adapters.engine import EngineSpec, get_engine, is_endpoint, spec_for
from distillery.generation import batched
from distillery.prompts import over_budget
from distillery.recipe import Recipe
from distillery.stages.contract import code_digest
from tasks.generate import code_version
from tasks.retry import ENGINE_TAG, engine_died

KEEP = ("response", "finish_reason", "prompt_tokens", "completion_tokens", "sample_index")  # of each sample


def batch_key(context, parameters: dict) -> str:
    """The batch's content, engine and sampling settings, and the code that shapes its
    result (functions, not files: a comment change keeps cached batches)."""
    convs = parameters["conversations"]
    convs = convs.unquote() if isinstance(convs, quote) else convs
    spec = parameters["spec"]
    blob = json.dumps([convs, spec.identity() if is_endpoint(spec) else spec.__dict__, parameters["params"], parameters.get("continue_final", False),
                       code_version(), code_digest([_teacher_batch, over_budget])], sort_keys=True, default=str)
    return "distillery-synthesis-" + hashlib.sha256(blob.encode()).hexdigest()


def _teacher_batch(conversations: list[list[dict]], spec: EngineSpec, params: dict,
                   continue_final: bool = False, max_model_len: int = 2048) -> tuple[list[dict], float]:
    """One engine batch: per conversation {response, finish_reason} of its first sample and
    `samples` (all n, with their token counts), or {error} for one whose prompt does not fit
    the context with max_tokens (the engine would refuse the batch) or that an endpoint
    refused (a 4xx, with the server's message). Also the seconds spent
    opening the engine (0 if it was open)."""
    started = time.perf_counter()
    engine = get_engine(spec)
    opened = time.perf_counter() - started
    why = over_budget(engine.count_prompt_tokens(conversations), params["max_tokens"], max_model_len)
    fits = [i for i, w in enumerate(why) if w is None]
    out: list[dict] = [{"error": w} for w in why]
    done = engine.chat([conversations[i] for i in fits], params, continue_final=continue_final)
    for i, samples in zip(fits, done):
        if samples and "error" in samples[0]:  # an endpoint refused the request: its reason
            out[i] = {"error": samples[0]["error"]}
            continue
        out[i] = {"response": samples[0]["response"], "finish_reason": samples[0]["finish_reason"],
                  "samples": [{k: s[k] for k in KEEP} for s in samples]}
    return out, opened


teacher_batch = task(_teacher_batch, name="teacher-synthesis", tags=[ENGINE_TAG], retries=1, retry_condition_fn=engine_died,
                     cache_key_fn=batch_key, persist_result=True)
endpoint_synthesis = task(_teacher_batch, name="endpoint-synthesis", cache_key_fn=batch_key, persist_result=True)  # no gpu slot


def run_batches(conversations: list[list[dict]], recipe: Recipe, params: dict, name: str, stages: dict[str, float],
                continue_final: bool = False) -> list[dict]:
    """`teacher_batch` over teacher.batch_size chunks (each cached on its own), as task runs
    called `name`. The seconds spent opening the engine are added to stages["engine_start"]
    (a cached batch's are not: it replays the run that made it). Runs inside a flow."""
    spec = spec_for(recipe.teacher, recipe.teacher.model, recipe.teacher.endpoint, f"teacher {recipe.teacher.name!r}")
    call = (endpoint_synthesis if is_endpoint(spec) else teacher_batch).with_options(name=name)
    out: list[dict] = []
    for chunk in batched(conversations, recipe.teacher.batch_size):
        state = call(quote(list(chunk)), spec, params, continue_final, recipe.teacher.max_model_len, return_state=True)
        done, opened = state.result()
        out += done
        if state.name != "Cached":
            stages["engine_start"] = stages.get("engine_start", 0.0) + opened
    return out
