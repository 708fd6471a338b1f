"""Bad input through the command line: one clear line, no traceback, non-zero exit.

These fail before the engine starts, so they run the real CLI in a subprocess."""

from __future__ import annotations

import subprocess
import sys

import procs
from conftest import ROOT, SEEDS


def distillery(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return procs.run([sys.executable, "-m", "distillery.commands.cli", *args], timeout=600, cwd=cwd)


def assert_one_clear_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("distillery: error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_missing_seed_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    proc = distillery("run", "--set", f"source.uri={missing}", "--set", f"output.uri={tmp_path / 'out'}")
    assert_one_clear_line(proc, str(missing), "does not exist")
    assert not (tmp_path / "out").exists()


def test_wrong_column(tmp_path):
    proc = distillery("run", "--set", f"source.uri={SEEDS}", "--set", "source.instruction_column=question", "--set", f"output.uri={tmp_path / 'out'}")
    assert_one_clear_line(proc, "'question' not found", "source.instruction_column", "instruction")


def test_unknown_recipe_field(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("teacher:\n  modle: x\n")
    assert_one_clear_line(distillery("run", str(recipe)), str(recipe), "teacher.modle", "unknown field")


def test_out_of_bounds_override():
    assert_one_clear_line(distillery("run", "recipes/demo.yaml", "--set", "dedup.threshold=1.5"), "dedup.threshold", "less than 1")


def test_recipe_schema_is_printed():
    proc = distillery("recipe-schema")
    assert proc.returncode == 0 and '"sampling"' in proc.stdout and "Sampling temperature" in proc.stdout


def test_local_prefect_api_that_does_not_start_is_one_clear_line(tmp_path):
    """A busy machine can miss the local API's start-up window: one line saying what to do, and no
    server process left behind."""
    import os

    env = {**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1", "PREFECT_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    proc = procs.run([sys.executable, "-m", "distillery.commands.cli", "run", "recipes/smoke.yaml", "--set", f"output.uri={tmp_path / 'out'}"],
                     timeout=600, cwd=ROOT, env=env)
    line = assert_one_clear_line(proc, "Prefect's local API did not start within 1 s", "distillery serve", "PREFECT_API_URL",
                                 "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    assert "nothing was built" in line
    assert not (tmp_path / "out").exists()
    assert processes_with_env(f"PREFECT_HOME={tmp_path / 'home'}") == []


def processes_with_env(entry: str) -> list[int]:
    """Live processes whose environment holds `entry` (the local API server inherits the CLI's)."""
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and entry.encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


def test_an_eval_file_that_is_missing_or_lacks_its_column_stops_the_build_before_anything_is_written(tmp_path):
    missing = tmp_path / "gsm8k.jsonl"
    base = ["run", "--set", f"source.uri={SEEDS}", "--set", "source.limit=2", "--set", f"output.uri={tmp_path / 'out'}"]
    proc = distillery(*base, "--set", f"guards.decontam.eval_sets=[{{name: gsm8k, uri: '{missing}'}}]")
    assert_one_clear_line(proc, "guards.decontam.eval_sets['gsm8k']", str(missing), "does not exist")
    assert not (tmp_path / "out").exists()
    missing.write_text('{"text": "Natalia sold clips to 48 of her friends in April."}\n')
    proc = distillery(*base, "--set", f"guards.decontam.eval_sets=[{{name: gsm8k, uri: '{missing}', column: question}}]")
    assert_one_clear_line(proc, "guards.decontam.eval_sets['gsm8k']", "no column 'question' (its columns: text)")
    assert not (tmp_path / "out").exists()
