"""The recipe's `guards` section: what may not go into training. Pure config.

The guard stage runs after generation and before dedup; the collapse monitor runs on
the kept rows before publishing (distillery/collapse.py for its metrics).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IdentityConfig(_Strict):
    enabled: bool = Field(
        True,
        description="Check every assistant answer for identity leaks: first-person claims to be, or to be made "
        "or trained by, another model or vendor ('I am ChatGPT', 'trained by OpenAI'), vendor policy claims "
        "('against OpenAI's policy') and knowledge-cutoff claims; 'As an AI language model' boilerplate is "
        "flagged, never rejected. English, Chinese, Spanish, French, German, Italian, Portuguese, Russian, Japanese.",
    )
    name: str | None = Field(
        None, max_length=64,
        description="The student's intended name: its answers claiming this name are never a leak.",
    )
    maker: str | None = Field(
        None, max_length=64,
        description="The student's intended maker (person or organisation): never a leak either.",
    )
    vendors: list[str] | None = Field(
        None,
        description="Model and vendor names a claim may not name; empty: the built-in list (OpenAI, ChatGPT, "
        "GPT-n, Anthropic, Claude, Google, Gemini, Bard, Meta, Llama, Mistral, Qwen, Alibaba, DeepSeek, "
        "Microsoft, Copilot, Phi, xAI, Grok, Cohere, SmolLM, Hugging Face and more).",
    )
    extra_vendors: list[str] = Field(
        default_factory=list, description="Names added to `vendors` (or to the built-in list)."
    )
    action: Literal["reject", "flag"] = Field(
        "reject",
        description="'reject': leaking rows go to rejected/ (stage 'guard', the reason and the matched text); "
        "'flag': they are kept with the reason in guard_flags.",
    )

    def guard(self):
        from distillery.guards.identity import DEFAULT_VENDORS, IdentityGuard

        vendors = tuple(self.vendors or DEFAULT_VENDORS) + tuple(self.extra_vendors)
        return IdentityGuard(name=self.name, maker=self.maker, vendors=tuple(dict.fromkeys(vendors)))


class EvalSetConfig(_Strict):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
                      description="The evaluation set's label in rejects and the report (e.g. gsm8k).")
    uri: str = Field(..., min_length=1, description="Its file: local path or s3:// URI (a glob reads several files).")
    format: Literal["auto", "jsonl", "json", "csv", "parquet"] = Field(
        "auto", description="File format; 'auto' goes by the extension.")
    column: str = Field("prompt", min_length=1,
                        description="The item's text (the question); a dotted path reaches into nested JSON.")
    id_column: str | None = Field(None, description="The item's id; empty: its row number in the file.")


class DecontamConfig(_Strict):
    eval_sets: list[EvalSetConfig] = Field(
        default_factory=list,
        description="Evaluation sets the training rows must not copy. A row is 'contaminated' (Tulu 3's rule) when "
        "more than `threshold` of an eval item's tokens lie in `ngram`-grams it shares with the row's prompt.",
    )
    ngram: int = Field(8, ge=3, le=32, description="Words per n-gram compared with prompts (Tulu 3: 8).")
    threshold: float = Field(0.5, gt=0.0, lt=1.0,
                             description="Share of an eval item's tokens that, when exceeded, makes it contaminated.")
    answers: bool = Field(False, description="Also reject a row whose answer shares any `answer_ngram`-gram with an eval item.")
    answer_ngram: int = Field(13, ge=5, le=64, description="Words per n-gram for the answer check (13, as GPT-3's).")
    warn_share: float = Field(0.02, ge=0.0, le=1.0,
                              description="The report warns when more than this share of an eval set's items are contaminated.")


class RepetitionConfig(_Strict):
    enabled: bool = Field(
        True,
        description="Reject answers past Gopher's repetition limits (Rae et al. 2021): duplicate lines and "
        "paragraphs, the most common 2-4-gram's share, duplicated 5-10-grams. Reason 'repetitive'.",
    )
    min_words: int = Field(100, ge=0, le=100_000,
                           description="Answers shorter than this many words skip the most-common-2/3/4-gram limits (a short "
                           "list repeats 'What is your favorite' by design); the duplicated 5-10-gram, line and paragraph "
                           "limits apply at any length, so a short loop is still caught.")


class GuardsConfig(_Strict):
    identity: IdentityConfig = Field(default_factory=IdentityConfig, description="Identity leaks in assistant answers.")
    decontam: DecontamConfig = Field(default_factory=DecontamConfig, description="Benchmark contamination.")
    repetition: RepetitionConfig = Field(default_factory=RepetitionConfig, description="Degenerate, repetitive answers.")
    collapse_sample: int = Field(500, ge=10, le=20_000,
                                 description="Kept rows (a fixed-seed sample) the collapse monitor measures each build.")
    collapse_max_drop: float = Field(
        0.10, gt=0.0, lt=1.0,
        description="Warn when distinct-2 or the n-gram Vendi score falls, or the gzip compression ratio rises, by more "
        "than this share since the previous run or the first one in the history.",
    )
    fail_on_collapse: bool = Field(False, description="Fail the run on a collapse warning instead, before publishing anything.")
    history_uri: str | None = Field(
        None,
        description="The collapse history (JSONL; local path or s3://). Empty: collapse-history/<recipe name>.jsonl "
        "beside the cross-run dedup index (dedup.index_uri); without either, no history is kept.",
    )

    @model_validator(mode="after")
    def _eval_names_unique(self) -> "GuardsConfig":
        names = [e.name for e in self.decontam.eval_sets]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"guards.decontam.eval_sets: names must be unique; {', '.join(twice)} given more than once")
        return self

    def any_row_guard(self) -> bool:
        return self.identity.enabled or self.repetition.enabled or bool(self.decontam.eval_sets)
