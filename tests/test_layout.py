"""The house split: pure logic imports no Prefect, vLLM or fsspec."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Every module of the package is pure logic except two folders: the adapters and the
# command-line commands, which open files, engines and servers for the user.
IMPURE = {"adapters", "commands"}
PURE = sorted(
    ".".join(p.relative_to(ROOT / "distillery").with_suffix("").parts)
    for p in (ROOT / "distillery").rglob("*.py")
    if p.relative_to(ROOT / "distillery").parts[0] not in IMPURE and p.stem != "__init__"
)
HEAVY = ("prefect", "vllm", "fsspec", "s3fs", "torch")


def test_pure_modules_import_no_heavy_packages():
    assert {"minhash", "stages.contract", "stages.executor", "stages.engine", "stages.publish", "recipes.self_instruct"} <= set(PURE)
    code = (
        "import sys\n"
        + "".join(f"import distillery.{m}\n" for m in PURE)
        + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


def test_importing_the_flow_opens_no_engine():
    code = "import sys, flows.distill, flows.score_targets, flows.preferences, flows.self_instruct, flows.evol_instruct, flows.textbook, flows.rephrase, flows.doc2query\nprint('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_required_layout():
    for name in ("pyproject.toml", "flows", "tasks", "deployments", "tests", "infra", "README.md", "Makefile", ".ci/run"):
        assert (ROOT / name).exists(), name


def test_deployment_declares_the_flow_with_a_valid_recipe():
    import yaml

    from distillery.recipe import build_recipe

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for dep in spec["deployments"]:
        path, func = dep["entrypoint"].split(":")
        assert (ROOT / path).is_file()
        module = __import__(path[:-3].replace("/", "."), fromlist=[func])
        assert getattr(module, func).name in ("distill", "preferences", "score_targets", "self_instruct", "evol_instruct", "textbook", "rephrase", "doc2query",
                                                  "eval_pairwise", "eval_rse", "eval_identity", "eval_accuracy", "verifiable", "distill_loop")
        build_recipe(dep["parameters"]["recipe"])
        assert all(s["active"] is False for s in dep.get("schedules", []))
