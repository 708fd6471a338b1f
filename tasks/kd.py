"""Knowledge-distillation steps that touch the model's files: the check that teachers mixed
together share a tokenizer, and the manifest's record of what the soft targets are
(distribution, K, the teacher's tokenizer). The scoring and mixing stages are
distillery/stages/kd.py."""

from __future__ import annotations

from distillery.errors import DistilleryError
from distillery.recipe import Recipe


class TokenizersDiffer(DistilleryError):
    """Teachers whose soft targets index different vocabularies cannot be merged."""


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


def kd_section(recipe: Recipe, rows: list[dict]) -> tuple[dict, dict[str, bytes]]:
    """What the manifest says about the soft targets, and the teacher's tokenizer files to ship
    beside them (kd/tokenizer.json and the rest of its Hugging Face folder)."""
    from distillery.adapters.tokenizers import kd_tokenizer
    from distillery.kd import entries

    tokenizer, files = kd_tokenizer(recipe.kd_tokenizer)
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
