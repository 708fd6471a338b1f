"""The evaluation flows and the verifiable build end to end, on the shared engine (the default
model as candidate, baseline and judge), real seed tasks and the verifiable task file.

Nothing here asserts a win rate or a similarity from the 135M judge (it answers 'A' to almost
everything); what is asserted is the pipeline: schema, counts, accounting, reproducibility, the
exact 0.5 of a candidate against itself, and that the controls and the unreliable rule are
computed from what the judge said and applied to the report."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distillery.evals.verifiers import VERIFIERS, check_ground_truth, verify
from distillery.guards.identity import IdentityGuard
from distillery.recipe import build_recipe

from conftest import ROOT, SEEDS

pytestmark = pytest.mark.engine

TASKS = ROOT / "tests" / "data" / "verifiable_tasks.jsonl"
ENGINE = {"max_model_len": 2048, "batch_size": 64}  # the settings every engine test shares


def eval_recipe(out: Path, flow: str, **sections) -> dict:
    data = {"name": f"test-{flow}", "flow": flow, "source": {"uri": str(SEEDS), "limit": 8},
            "candidates": [{"name": "student", **ENGINE}], "baseline": {"name": "teacher", **ENGINE},
            "sampling": {"max_tokens": 32}, "output": {"uri": str(out)}}
    data.update(sections)
    return build_recipe(data)


def rows(out: Path, name: str) -> list[dict]:
    return pq.read_table(out / "eval" / f"{name}.parquet").to_pylist()


def published(out: Path, result: dict) -> dict:
    """manifest.json lists every file with its row count; report.md is the result's report."""
    manifest = json.loads((out / "manifest.json").read_text())
    for path, count in manifest["files"].items():
        assert pq.read_metadata(out / path).num_rows == count
    assert (out / "report.md").read_text() == result["report"]
    assert manifest["run_id"] == result["run_id"] and manifest["kind"] in ("eval", "dataset")
    return manifest


@pytest.fixture(scope="module")
def pairwise_run(prefect_api, tmp_path_factory):
    from flows.evals import eval_pairwise

    out = tmp_path_factory.mktemp("pairwise") / "eval"
    recipe = eval_recipe(out, "eval_pairwise", pairwise={"control_share": 0.5})
    return out, recipe, eval_pairwise(recipe)


def test_pairwise_candidate_against_itself_is_exactly_half(pairwise_run):
    out, recipe, result = pairwise_run
    stats = result["summary"]["candidates"]["student"]
    pairs = [r for r in rows(out, "pairwise") if r["kind"] == "pair"]
    assert len(pairs) == stats["n"] == 8 and all(r["status"] == "judged" for r in pairs)
    # same model, greedy: the same answers, so the judge cannot prefer one in both orders
    assert all(r["candidate_answer"] == r["baseline_answer"] for r in pairs)
    assert {r["verdict"] for r in pairs} <= {"tie", "inconsistent"}
    assert stats["win_rate"] == 0.5 and stats["lc_win_rate"] == pytest.approx(0.5, abs=1e-6)
    assert stats["wins"] == stats["losses"] == 0
    for r in pairs:  # the verdict is the two orders combined by MT-Bench's rule
        assert r["order_ab"] in ("A", "B", "tie") and r["order_ba"] in ("A", "B", "tie")
        assert (r["verdict"] == "tie") == (r["order_ab"] == r["order_ba"] == "tie")


def test_pairwise_controls_and_the_unreliable_rule_follow_what_the_judge_said(pairwise_run):
    out, recipe, result = pairwise_run
    summary = result["summary"]
    controls = [r for r in rows(out, "pairwise") if r["kind"] == "control"]
    answers = {r["id"]: r["answer"] for r in rows(out, "answers") if r["model"] == "teacher"}
    assert len(controls) == summary["controls"]["n"] == 4  # half of 8 prompts
    assert {r["control"] for r in controls} == {"empty", "other_answer", "truncated"}
    for r in controls:
        assert r["candidate_answer"] == answers[r["id"]]  # the real answer is x
        fake = r["baseline_answer"]
        if r["control"] == "empty":
            assert fake == ""
        elif r["control"] == "truncated":
            assert len(fake.split()) < len(r["candidate_answer"].split()) and r["candidate_answer"].split()[:len(fake.split())] == fake.split()
        else:
            assert fake in set(answers.values()) - {answers[r["id"]]}
    right = sum(r["verdict"] == "x" for r in controls) / len(controls)
    assert summary["controls"]["accuracy"] == pytest.approx(right, abs=1e-4)
    swap = sum(r["verdict"] != "inconsistent" for r in rows(out, "pairwise") if r["kind"] == "pair") / 8
    assert summary["swap_agreement"] == pytest.approx(swap, abs=1e-4)
    unreliable = right < 0.8 or swap < 0.6
    assert bool(summary["unreliable"]) == unreliable
    first = result["report"].splitlines()[0]
    assert first.startswith("**UNRELIABLE EVALUATION:**") == unreliable


def test_pairwise_output_is_published_and_reproducible(pairwise_run, tmp_path):
    from flows.evals import eval_pairwise

    out, recipe, result = pairwise_run
    manifest = published(out, result)
    assert manifest["flow"] == "eval_pairwise" and manifest["summary"]["prompts"] == 8
    assert {"eval/pairwise.parquet", "eval/answers.parquet", "eval/rejected.parquet"} == set(manifest["files"])
    again = eval_pairwise(recipe.model_copy(update={"output": recipe.output.model_copy(update={"uri": str(tmp_path / "again")})}))
    assert again["summary"]["candidates"] == result["summary"]["candidates"]
    assert [r["verdict"] for r in rows(tmp_path / "again", "pairwise")] == [r["verdict"] for r in rows(out, "pairwise")]


def test_rse_scores_each_kind_between_its_bounds(prefect_api, tmp_path):
    from flows.evals import eval_rse

    out = tmp_path / "rse"
    result = eval_rse(eval_recipe(out, "eval_rse", source={"uri": str(SEEDS), "limit": 4}))
    published(out, result)
    got = rows(out, "rse")
    kinds = {}
    for r in got:
        kinds.setdefault(r["kind"], []).append(r)
    assert {k: len(v) for k, v in kinds.items()} == {"upper": 4, "lower": 4, "candidate:student": 4}
    for r in kinds["lower"]:
        assert r["reference_id"] != r["id"]  # another prompt's answer
    summary = result["summary"]["rse"]
    for kind, items in kinds.items():
        scored = [r for r in items if r["status"] == "judged"]
        assert summary[kind]["parsed"] == len(scored) and summary[kind]["n"] == 4
        assert all(1 <= r[a] <= 5 for r in scored for a in ("style", "logic", "content"))
        if scored:
            assert summary[kind]["means"]["style"] == pytest.approx(sum(r["style"] for r in scored) / len(scored), abs=1e-3)
    assert summary["bounds_ok"] == (summary["upper"]["overall"] > summary["lower"]["overall"])
    assert result["report"].splitlines()[0].startswith("**UNRELIABLE EVALUATION:**") == (not summary["bounds_ok"])


def test_identity_eval_scores_every_answer_with_the_detector(prefect_api, tmp_path):
    from flows.evals import eval_identity

    out = tmp_path / "identity"
    identity = {"languages": ["en", "de"], "wrappers": ["plain", "roleplay", "complete"], "questions_per_language": 2, "samples": 2,
                "name": "SmolLM2", "maker": "Hugging Face"}
    result = eval_identity(eval_recipe(out, "eval_identity", identity=identity))
    published(out, result)
    got = rows(out, "identity")
    assert len(got) == 2 * 2 * 3 * 2 and all(r["status"] == "scored" for r in got)  # languages x questions x wrappers x samples
    guard = IdentityGuard(name="SmolLM2", maker="Hugging Face")
    for r in got:  # scored against the bare question, whatever the wrapper
        hits = [h for h in guard.check(r["answer"], r["question"]) if h.reason != "ai_boilerplate"]
        assert r["leak"] == bool(hits)
    s = result["summary"]["identity"]["student"]
    assert s["answers"] == len(got) and s["loose"] == sum(r["leak"] for r in got) and s["strict"] == sum(r["strict"] for r in got)
    assert set(s["per_wrapper"]) == {"plain", "roleplay", "complete"}


@pytest.fixture(scope="module")
def verifiable_run(prefect_api, tmp_path_factory):
    from flows.verifiable import verifiable

    out = tmp_path_factory.mktemp("verifiable") / "ds"
    recipe = build_recipe({"flow": "verifiable", "name": "test-verifiable", "source": {"uri": str(TASKS)}, "teacher": ENGINE,
                           "max_tokens": 64, "verifiable": {"samples": 4, "min_pass_rate": 0.25, "max_pass_rate": 0.75},
                           "output": {"uri": str(out)}})
    return out, recipe, verifiable(recipe)


def test_verifiable_build_keeps_the_band_and_accounts_for_every_row(verifiable_run, tmp_path):
    out, recipe, result = verifiable_run
    published(out, result)
    lines = [json.loads(line) for line in TASKS.read_text().splitlines() if line.strip()]
    kept = pq.read_table(out / "data" / "train-00000-of-00001.parquet").to_pylist()
    rejected = pq.read_table(out / "rejected" / "rejected-00000-of-00001.parquet").to_pylist()
    s = result["summary"]
    assert s["rows_in"] == len(lines) == len(kept) + len(rejected) and s["kept"] == len(kept)
    reasons = {r["id"]: r["reason"] for r in rejected}
    assert reasons["bad-unknown-verifier"] == "unknown_verifier"
    assert reasons["bad-gsm8k-words"] == reasons["bad-ifeval-json"] == "bad_ground_truth"
    for r in rejected:
        assert r["detail"]
        if r["reason"] == "too_hard":
            assert r["pass_rate"] < 0.25
        if r["reason"] == "too_easy":
            assert r["pass_rate"] > 0.75
    for r in kept:  # open-instruct's row: messages, ground_truth, dataset naming the verifier
        assert 0.25 <= r["pass_rate"] <= 0.75 and r["teacher_passes"] == round(r["pass_rate"] * 4)
        assert r["dataset"] in VERIFIERS and check_ground_truth(r["dataset"], r["ground_truth"]) is None
        assert r["messages"][-1]["role"] == "user"
    gsm = [r["ground_truth"] for r in kept + rejected if r.get("dataset") == "gsm8k" and r.get("reason") != "bad_ground_truth"]
    assert len(gsm) == 8 and not any("#" in v for v in gsm)  # '#### 12' is stored as '12'


def test_verifiable_build_loads_with_datasets(verifiable_run, tmp_path):
    from datasets import load_dataset

    out, recipe, result = verifiable_run
    if not result["summary"]["kept"]:
        pytest.fail("the band kept no rows; the teacher's pass rates: " + json.dumps(result["summary"]["by_verifier"]))
    ds = load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == result["summary"]["kept"]
    assert {"messages", "ground_truth", "dataset"} <= set(ds.column_names)


def test_accuracy_of_models_on_the_verifiable_rows(verifiable_run, prefect_api, tmp_path):
    from flows.evals import eval_accuracy

    out, _, build = verifiable_run
    target = tmp_path / "acc"
    recipe = eval_recipe(target, "eval_accuracy", source={"uri": str(out / "data" / "train-00000-of-00001.parquet")},
                         sampling={"max_tokens": 64})
    result = eval_accuracy(recipe)
    published(target, result)
    got = rows(target, "accuracy")
    assert len(got) == 2 * build["summary"]["kept"]  # student and teacher
    for r in got:
        assert r["passed"] == verify(r["verifier"], r["answer"], r["ground_truth"])
    acc = result["summary"]["accuracy"]
    for model in ("student", "teacher"):
        mine = [r for r in got if r["model"] == model]
        assert acc[model]["overall"]["passed"] == sum(r["passed"] for r in mine)
    assert acc["student"] == acc["teacher"]  # the same model, greedy


def test_accuracy_rejects_unknown_verifiers_and_bad_ground_truth(prefect_api, tmp_path):
    from flows.evals import eval_accuracy

    src = tmp_path / "rows.jsonl"
    good = {"id": "ok", "messages": [{"role": "user", "content": "What is 2 + 3? Answer with a number."}], "ground_truth": "5", "dataset": "gsm8k"}
    src.write_text("\n".join(json.dumps(r) for r in [
        good, {**good, "id": "v", "dataset": "regex"}, {**good, "id": "g", "ground_truth": "five"}, {**good, "id": "m", "messages": []},
    ]) + "\n{broken\n")
    result = eval_accuracy(eval_recipe(tmp_path / "acc", "eval_accuracy", source={"uri": str(src)}, baseline=None))
    reasons = {r["id"]: r["reason"] for r in rows(tmp_path / "acc", "rejected")}
    assert reasons == {"v": "unknown_verifier", "g": "bad_ground_truth", "m": "empty_prompt", "line-5": "malformed_json"}
    assert result["summary"]["rows_in"] == 5 == result["summary"]["rows"] + len(reasons)
