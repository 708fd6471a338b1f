"""Knowledge-distillation tasks: teacher-forced scoring, multi-teacher merging, and the
manifest's record of what the soft targets are (distribution, K, the teacher's tokenizer)."""

from __future__ import annotations

import hashlib
import json

from prefect import task
from prefect.cache_policies import NONE
from prefect.utilities.annotations import quote

from distillery.adapters.engine import EngineSpec, get_engine, prompt_lengths
from distillery.errors import DistilleryError
from distillery.generation import batched
from distillery.kd import merge
from distillery.recipe import Recipe, TeacherConfig
from tasks.generate import code_version
from tasks.retry import ENGINE_TAG, engine_died

class TokenizersDiffer(DistilleryError):
    """Teachers whose soft targets index different vocabularies cannot be merged."""


def conversation(row: dict, system: str | None) -> list[dict]:
    """The row's prompt turns under `system`, then its `response` as the assistant's answer."""
    turns = [m for m in row["messages"] if m["role"] != "system"]
    if turns and turns[-1]["role"] == "assistant":
        turns = turns[:-1]
    head = [{"role": "system", "content": system}] if system else []
    return [*head, *turns, {"role": "assistant", "content": row["response"]}]


def score_cache_key(context, parameters: dict) -> str:
    rows = parameters["rows"]
    rows = rows.unquote() if isinstance(rows, quote) else rows
    content = [[r["messages"], r["response"], r.get("kd_token_ids")] for r in rows]
    blob = json.dumps([content, parameters["spec"].__dict__, parameters["k"], parameters["system"], code_version()], sort_keys=True, default=str)
    return "distillery-score-" + hashlib.sha256(blob.encode()).hexdigest()


@task(name="teacher-score", tags=[ENGINE_TAG], retries=1, retry_condition_fn=engine_died, cache_key_fn=score_cache_key, persist_result=True)
def score_batch(rows: list[dict], spec: EngineSpec, k: int, system: str | None) -> list[dict]:
    """The teacher's top-k at every token of each row's `response`, by teacher forcing
    (one prompt-logprobs pass, nothing generated). The row's own prompt turns are used,
    under `system` as the system prompt."""
    # Generated answers are scored on their own token ids, so every teacher scores the same tokens.
    return get_engine(spec).score([conversation(r, system) for r in rows], k, [r.get("kd_token_ids") for r in rows])


@task(name="check-answer-lengths", cache_policy=NONE)
def check_answer_lengths(rows: list[dict], model: str, system: str | None, max_model_len: int) -> dict[int, str]:
    """Row positions whose prompt plus answer does not fit the context, with why."""
    lengths = prompt_lengths(model, [conversation(r, system) for r in rows])
    return {i: f"prompt and answer are {n} tokens; max_model_len is {max_model_len}" for i, n in enumerate(lengths) if n > max_model_len}


def score(rows: list[dict], teacher: TeacherConfig, model: str, system: str | None, k: int, distribution: str) -> list[dict]:
    """Scores for every row, one cached task run per batch. Runs inside a flow."""
    spec = EngineSpec.from_teacher(teacher, model=model, logprobs_mode=distribution)
    out = []
    for batch in batched(rows, teacher.batch_size):
        out += score_batch(quote(list(batch)), spec, k, system)
    return out


def check_shared_tokenizer(models: list[str]) -> dict:
    """The one tokenizer all these models use, or a clear refusal."""
    from distillery.adapters.tokenizers import load_table
    from distillery.tokenizer_id import compare

    tables = {m: load_table(m) for m in dict.fromkeys(models)}
    first, *rest = tables
    for other in rest:
        diff = compare(tables[first], tables[other])
        if not diff["match"]:
            raise TokenizersDiffer(
                f"kd.teacher_weights merges teachers {first!r} and {other!r}, whose tokenizers differ "
                f"({diff['differing_ids']} ids differ; vocab {diff['vocab_size_teacher']} vs {diff['vocab_size_student']}): "
                "their top-K ids index different vocabularies. Merge only teachers that share a tokenizer"
            )
    return tables[first]


def merged(rows: list[dict], recipe: Recipe) -> list[dict]:
    """Rows with kd_* replaced by the weighted mixture of every weighted teacher's targets.
    Runs inside a flow (scoring is one cached task run per batch and teacher)."""
    kd = recipe.kd
    teachers = {name: (model, system) for name, model, system, _ in recipe.teachers()}
    names = [n for n in teachers if kd.teacher_weights.get(n, 0) > 0]
    per_teacher = {n: score(rows, recipe.teacher, teachers[n][0], teachers[n][1], kd.top_k, "raw_logprobs") for n in names}
    out = []
    for i, row in enumerate(rows):
        mixture = merge([per_teacher[n][i] for n in names], [kd.teacher_weights[n] for n in names])
        out.append({**row, **mixture})
    return out


def kd_section(recipe: Recipe, rows: list[dict]) -> tuple[dict, dict[str, bytes]]:
    """What the manifest says about the soft targets, and the teacher's tokenizer files to ship
    beside them (kd/tokenizer.json and the rest of its Hugging Face folder)."""
    from distillery.adapters.tokenizers import kd_tokenizer
    from distillery.kd import entries

    tokenizer, files = kd_tokenizer(recipe.teacher.model)
    section = {
        "top_k": recipe.kd.top_k,
        "distribution": "raw_logprobs" if recipe.kd.teacher_weights else recipe.kd.distribution,
        "logprob_dtype": recipe.kd.logprob_dtype,
        "logprob_mantissa_bits": recipe.kd.logprob_bits if recipe.kd.logprob_dtype == "float16" else None,
        "position": "kd_topk_*[t] is the distribution that predicted kd_token_ids[t]",
        "tokenizer": tokenizer,
        "teacher_weights": recipe.kd.teacher_weights or None,
        "entries": entries(rows),
    }
    return section, files
