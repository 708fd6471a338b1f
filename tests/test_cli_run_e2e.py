"""`distillery run` as a user meets it: no third-party warnings, progress for the long stages."""

from __future__ import annotations

import json
import os
import sys

import pytest
import yaml

import procs
from conftest import ROOT, SEEDS, tiny_recipe_dict

pytestmark = pytest.mark.engine

# What vLLM, torch and transformers print by themselves on these machines (seen in `make demo`).
NOISE = ("Triton", "FutureWarning", "NUMA", "LD_PRELOAD", "Loading safetensors", "UserWarning", "Prefect collects")


def test_run_is_quiet_and_shows_progress_off_a_terminal(tmp_path):
    recipe = tiny_recipe_dict(str(SEEDS), str(tmp_path / "out"))
    recipe["source"]["limit"] = 4
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"), "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results")}
    env.pop("PREFECT_API_URL", None)
    proc = procs.run([sys.executable, "-m", "distillery.commands.cli", "run", str(tmp_path / "r.yaml")], timeout=1500, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for word in NOISE:
        assert word not in proc.stderr, (word, proc.stderr[-3000:])
    lines = proc.stderr.splitlines()
    # a plain line when each long stage begins and one when it ends, with its count and rate
    assert "engine: starting smollm2-135m-instruct, 0:00 elapsed" in lines
    assert any(line.startswith("engine: ready in ") for line in lines)
    assert any(line.startswith("generate: 0/4 completions (0%)") for line in lines)
    assert any(line.startswith("generate: 4 completions in ") and line.endswith(" tok/s") for line in lines), lines
    assert any(line.startswith("judge: 4 rows in ") for line in lines), lines
    assert "\x1b[K" not in proc.stderr  # no terminal redraws into a pipe
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["summary"]["rows_in"] == 4
    assert f"dataset: {tmp_path / 'out'}" in proc.stdout
