"""Recipes for "did the distillation work?": teacher-vs-student evaluations and the verifiable-answer
build. Pure logic (pydantic models only); the flows are flows/evals.py and flows/verifiable.py.

Models are given the way teachers are (`TeacherConfig`: a local folder, the default model, or an
OpenAI-compatible endpoint, with their engine settings). Every evaluation writes `eval/*.parquet`,
`report.md` and `manifest.json` (last) to `output.uri`, and the report as a Prefect artifact.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distillery.endpoints import EndpointConfig
from distillery.recipe import Recipe, SourceConfig, StorageConfig, TeacherConfig, _Strict

EVAL_FLOWS = ("eval_pairwise", "eval_rse", "eval_identity", "eval_accuracy")

PAIRWISE_RUBRIC = (
    "You compare two AI assistant responses to the same instruction. Judge which one follows the "
    "instruction better: helpful, correct, complete and clear. Do not let the order of the responses, "
    "their length or the names of assistants influence you."
)


class EvalModel(TeacherConfig):
    """A model under evaluation: the teacher's fields (a name, a local folder or the default model, or
    an endpoint, and engine settings)."""

    name: str = Field("student", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
                      description="Label of this model in the report and in every eval row.")


class EvalSampling(_Strict):
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature of the answers under evaluation; 0 is greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, le=131_072, description="Maximum tokens per answer.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Sampling seed, and the seed of every random choice of the evaluation "
                      "(controls, bootstrap, lower-bound pairs): the same seed gives the same report.")


class EvalJudge(_Strict):
    model: str | None = Field(None, description="Judge model (same forms as teacher.model); null means the baseline's model, "
                              "with the baseline's engine settings.")
    endpoint: EndpointConfig | None = Field(None, description="The judge's OpenAI-compatible endpoint; null: the in-process engine.")
    max_model_len: int | None = Field(None, ge=256, le=1_048_576, description="The judge's context length (it reads the prompt "
                                      "and two answers); null: the baseline's, so a judge on the baseline's model shares its engine.")
    rubric: str = Field(PAIRWISE_RUBRIC, min_length=1, description="What the pairwise judge is asked; it comes first in every "
                        "judge prompt, so engines with prefix caching share it.")


class PairwiseConfig(_Strict):
    control_share: float = Field(0.2, ge=0.0, le=1.0, description="Share of prompts that also get a control: the baseline's answer "
                                 "against a corrupted copy (empty, another prompt's answer, truncated), whose right verdict is known.")
    min_control_accuracy: float = Field(0.8, ge=0.0, le=1.0, description="Below this share of controls judged right, the report "
                                        "says in its first line that the evaluation is unreliable.")
    min_swap_agreement: float = Field(0.6, ge=0.0, le=1.0, description="Below this share of pairs judged the same in both orders, "
                                      "the evaluation is unreliable.")
    bootstrap: int = Field(2000, ge=100, le=100_000, description="Bootstrap resamples for the win rate's 95% interval (seeded).")


class IdentityEvalConfig(_Strict):
    languages: list[str] = Field(default_factory=lambda: ["en", "zh", "es", "fr", "de", "ja"],
                                 description="Languages of the identity questions (en, zh, es, fr, de, ja).")
    wrappers: list[str] = Field(default_factory=lambda: ["plain", "roleplay", "complete", "model_card", "honest"],
                                description="Wrappers around each question: plain, roleplay, complete, model_card, honest.")
    questions_per_language: int | None = Field(None, ge=1, le=50, description="Use only the first N questions of each language.")
    samples: int = Field(4, ge=1, le=64, description="Answers sampled per prompt.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature of those answers.")
    name: str | None = Field(None, description="The identity the models should keep: their own name (never a leak).")
    maker: str | None = Field(None, description="Their maker (never a leak).")
    teacher_vendors: list[str] = Field(default_factory=list, description="Names of the teacher and its maker: the strict rate "
                                       "counts claims of exactly these; empty: claims of any vendor.")
    identity_fact: str | None = Field(None, description="A declared identity fact ('The assistant is SmolLM2, made by Hugging Face'); "
                                      "when set, a judge also rates each answer consistent or inconsistent with it.")

    @model_validator(mode="after")
    def _known(self) -> "IdentityEvalConfig":
        from distillery.evals.identity_eval import identity_prompts

        identity_prompts(self.languages, self.wrappers, self.questions_per_language)  # a ValueError names what is unknown
        return self


class AccuracyConfig(_Strict):
    prompt_column: str = Field("messages", description="Column with the prompt: a list of chat messages (open-instruct rows) or a string.")
    ground_truth_column: str = Field("ground_truth", description="Column with the ground truth, in the verifier's form.")
    verifier_column: str = Field("dataset", description="Column naming the verifier (gsm8k, math, exact, ifeval), as open-instruct names it.")
    id_column: str | None = Field("id", description="Column with a stable row id; null or missing: 'row-<n>'.")
    limit: int | None = Field(None, ge=1, le=10_000_000, description="Use only the first N rows.")


class EvalOutput(_Strict):
    uri: str = Field("out/eval", min_length=1, description="Folder (local or s3://) for eval/*.parquet, report.md and manifest.json.")


class EvalRecipe(_Strict):
    """An evaluation of models on held-out prompts: pairwise win rate, response similarity, identity
    consistency or verifiable accuracy."""

    name: str = Field("eval", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$", description="Name of the evaluation (report, manifest).")
    flow: Literal["eval_pairwise", "eval_rse", "eval_identity", "eval_accuracy"] = Field(
        "eval_pairwise", description="eval_pairwise: candidates against the baseline, judged in both orders; eval_rse: how closely "
        "each candidate's answers mimic the baseline's (style, logic, content); eval_identity: identity questions, leaks counted; "
        "eval_accuracy: greedy pass@1 on rows with verifiable answers.")
    source: SourceConfig = Field(default_factory=SourceConfig, description="Held-out prompts (pairwise, rse), or for eval_accuracy the "
                                 "file of verifiable rows (its columns named in `accuracy`).")
    candidates: list[EvalModel] = Field(default_factory=lambda: [EvalModel()], min_length=1,
                                        description="The models under evaluation: the student, e.g. before and after fine-tuning.")
    baseline: EvalModel | None = Field(default_factory=lambda: EvalModel(name="teacher"),
                                       description="The reference model (the teacher); pairwise and rse need it.")
    before: str | None = Field(None, description="Name of the candidate measured before fine-tuning: the report gives every other "
                               "candidate's change from it.")
    sampling: EvalSampling = Field(default_factory=EvalSampling, description="How the answers under evaluation are sampled.")
    judge: EvalJudge = Field(default_factory=EvalJudge, description="The judge of eval_pairwise, eval_rse and eval_identity's optional check.")
    pairwise: PairwiseConfig = Field(default_factory=PairwiseConfig, description="Win-rate settings: controls and the unreliable rule.")
    identity: IdentityEvalConfig = Field(default_factory=IdentityEvalConfig, description="Identity consistency settings.")
    accuracy: AccuracyConfig = Field(default_factory=AccuracyConfig, description="Columns of the verifiable rows (eval_accuracy).")
    output: EvalOutput = Field(default_factory=EvalOutput, description="Where the evaluation is written.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="S3 credentials (by reference), endpoint and retries.")

    @model_validator(mode="after")
    def _models(self) -> "EvalRecipe":
        names = [m.name for m in self.candidates] + ([self.baseline.name] if self.baseline else [])
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}; rename candidates or baseline")
        if self.flow in ("eval_pairwise", "eval_rse") and self.baseline is None:
            raise ValueError(f"flow {self.flow!r} compares candidates with a baseline; set baseline (the teacher)")
        if self.before is not None and self.before not in [m.name for m in self.candidates]:
            raise ValueError(f"before: {self.before!r} is not a candidate; candidates are {[m.name for m in self.candidates]}")
        for m in [*self.candidates, *([self.baseline] if self.baseline else [])]:
            if self.sampling.max_tokens >= m.max_model_len:
                raise ValueError(f"sampling.max_tokens ({self.sampling.max_tokens}) must be below {m.name}.max_model_len ({m.max_model_len})")
        return self

    def models(self) -> list[EvalModel]:
        """Candidates, then the baseline when there is one."""
        return [*self.candidates, *([self.baseline] if self.baseline else [])]

    def judge_model(self) -> EvalModel:
        """The judge as an engine config: the baseline's (else first candidate's) settings, its own model and context."""
        base = self.baseline or self.candidates[0]
        update = {"name": "judge", "max_model_len": self.judge.max_model_len or base.max_model_len, "endpoint": self.judge.endpoint}
        if self.judge.model is not None or self.judge.endpoint is not None:
            update["model"] = self.judge.model or base.model
        elif base.endpoint is not None:
            update["endpoint"] = base.endpoint
        return base.model_copy(update=update)


class VerifiableConfig(_Strict):
    prompt_column: str = Field("prompt", description="Column with the prompt text.")
    ground_truth_column: str = Field("ground_truth", description="Column with the ground truth in the verifier's form "
                                     "(gsm8k: a number or '#### 42'; math: the answer; exact: the string; ifeval: IFEval's JSON).")
    verifier_column: str = Field("verifier", description="Column naming the verifier: gsm8k, math, exact or ifeval.")
    id_column: str | None = Field("id", description="Column with a stable row id; null: 'row-<n>'.")
    samples: int = Field(4, ge=1, le=64, description="Teacher answers per prompt, to measure its pass rate.")
    temperature: float = Field(0.8, ge=0.0, le=2.0, description="Sampling temperature of those answers.")
    min_pass_rate: float = Field(0.25, ge=0.0, le=1.0, description="Prompts the teacher passes less often are rejected as 'too_hard'.")
    max_pass_rate: float = Field(0.75, ge=0.0, le=1.0, description="Prompts the teacher passes more often are rejected as 'too_easy'.")
    system_prompt: str | None = Field(None, description="A system message put in each row's messages (and used for the teacher's answers).")

    @model_validator(mode="after")
    def _band(self) -> "VerifiableConfig":
        if self.min_pass_rate > self.max_pass_rate:
            raise ValueError(f"verifiable.min_pass_rate ({self.min_pass_rate}) must not exceed max_pass_rate ({self.max_pass_rate})")
        return self


class VerifiableRecipe(_Strict):
    """Prompts with answers a program checks (RL with verifiable rewards), kept where the teacher's pass
    rate is in a band, as open-instruct reads them: messages, ground_truth, dataset (the verifier)."""

    name: str = Field("verifiable", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$", description="Dataset name.")
    flow: Literal["verifiable"] = Field("verifiable", description="The verifiable-answer build.")
    source: SourceConfig = Field(default_factory=lambda: SourceConfig(uri="data/verifiable_tasks.jsonl"),
                                 description="The task file; its columns are named in `verifiable` (source.uri, format and limit are used).")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="The teacher whose pass rate places each prompt.")
    verifiable: VerifiableConfig = Field(default_factory=VerifiableConfig, description="Columns, samples and the pass-rate band.")
    max_tokens: int = Field(256, ge=1, le=131_072, description="Maximum tokens per teacher answer.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Sampling seed.")
    output: EvalOutput = Field(default_factory=lambda: EvalOutput(uri="out/verifiable"), description="Where the dataset is written.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="S3 credentials (by reference), endpoint and retries.")


class FinetuneSection(_Strict):
    output: str = Field("out/student-tuned", min_length=1, description="Local folder the fine-tuned student is saved to.")
    steps: int = Field(30, ge=1, le=1_000_000, description="Optimizer steps of TRL's SFT.")
    learning_rate: float = Field(1e-4, gt=0, le=1.0, description="Learning rate (constant).")
    batch_size: int = Field(4, ge=1, le=4096, description="Rows per step.")
    max_length: int = Field(256, ge=16, le=131_072, description="Tokens per row (longer rows are cut).")


class LoopRecipe(_Strict):
    """Build a dataset with the teacher, fine-tune the student on it, evaluate before against after."""

    name: str = Field("loop", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$", description="Name of the loop run.")
    flow: Literal["distill_loop"] = Field("distill_loop", description="The build, fine-tune, evaluate loop.")
    build: Recipe = Field(default_factory=Recipe, description="The distillation build (flow 'distill').")
    student: EvalModel = Field(default_factory=EvalModel, description="The student before fine-tuning: the model trained, and "
                               "the 'before' candidate of the evaluation (its engine settings serve the 'after' one too).")
    finetune: FinetuneSection = Field(default_factory=FinetuneSection, description="TRL SFT settings.")
    eval: EvalRecipe = Field(default_factory=lambda: EvalRecipe(flow="eval_identity"), description="The evaluation; its candidates "
                             "are replaced by the student before and after fine-tuning.")
