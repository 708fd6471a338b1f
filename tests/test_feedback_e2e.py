"""AI feedback on the real default model judging its own completions: multi-teacher
rows, absolute judging (structured, free text, logprob), pairwise judging in both
orders, and a preference dataset loaded back with datasets and checked with TRL."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from distillery.recipe import build_recipe
from distillery.schema import PREFERENCE_SCHEMA

from conftest import SEEDS, tiny_recipe_dict

pytestmark = pytest.mark.engine

SEED_COUNT = 6


def recipe(out, **changes):
    data = tiny_recipe_dict(str(SEEDS), str(out))
    data["source"]["limit"] = SEED_COUNT
    data["dedup"]["field"] = "both"
    data["extra_teachers"] = [{"name": "hot", "temperature": 1.2, "seed": 7}]
    data["teacher"]["name"] = "greedy"
    for key, value in changes.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return build_recipe(data)


def rows(out, folder="data"):
    return [r for p in sorted((out / folder).glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


@pytest.fixture(scope="module")
def multi(prefect_api, tmp_path_factory):
    from flows.distill import distill

    out = tmp_path_factory.mktemp("multi")
    return distill(recipe(out, judge={"aspects": ["helpfulness", "honesty"]})), out


def test_multi_teacher_rows_name_both_teachers(multi):
    result, out = multi
    kept = rows(out)
    assert {r["teacher"] for r in kept} == {"greedy", "hot"}
    assert result["summary"]["generated"] == 2 * SEED_COUNT
    assert result["summary"]["rows_in"] == SEED_COUNT
    by_teacher = {(r["seed_id"], r["teacher"]): r for r in kept + rows(out, "rejected") if r.get("teacher")}
    for (seed, teacher), row in by_teacher.items():
        if "sampling" in row:
            assert json.loads(row["sampling"])["temperature"] == (0.0 if teacher == "greedy" else 1.2)


def test_absolute_judging_with_aspects_and_report(multi):
    result, out = multi
    for row in rows(out):
        assert 1 <= row["judge_score"] <= 10 and row["judge_method"] == "structured"
        aspects = {k: v for k, v in row["judge_aspects"].items() if v is not None}
        assert set(aspects) == {"helpfulness", "honesty"}
        assert all(1 <= v <= 10 for v in aspects.values())
    report = result["summary"]["judge_report"]
    assert report["judged"] == sum(report["histogram"].values()) + report["parse_failures"]
    assert report["parse_failures"] == 0  # structured outputs: always parses
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["judge_report"] == report


@pytest.mark.parametrize("method", ["free_text", "logprob"])
def test_other_judge_methods(prefect_api, tmp_path, method):
    from flows.distill import distill

    result = distill(recipe(tmp_path, extra_teachers=[], judge={"method": method}))
    kept, rejected = rows(tmp_path), rows(tmp_path, "rejected")
    report = result["summary"]["judge_report"]
    assert report["judged"] == SEED_COUNT
    assert report["parse_failures"] == sum(r["reason"] == "judge_unparsed" for r in rejected)
    for row in kept:
        assert row["judge_method"] == method and 1 <= row["judge_score"] <= 10
        if method == "logprob":
            assert 1.0 <= row["judge_score_expected"] <= 10.0
            assert row["judge_score"] == max(1, min(10, round(row["judge_score_expected"])))


def test_planted_constant_judge_warns_and_can_fail_the_run(prefect_api, tmp_path, monkeypatch):
    """A planted constant judge: the real engine, held by structured outputs to 'Score: 7'."""
    import tasks.judge
    from flows.distill import DegenerateJudgeError, distill

    monkeypatch.setattr(tasks.judge, "absolute_regex", lambda aspects=(): r"Score: 7\nRationale: [^\n]{8,200}")
    warned = distill(recipe(tmp_path / "warn", extra_teachers=[]))
    report = warned["summary"]["judge_report"]
    assert report["histogram"]["7"] == report["judged"] == SEED_COUNT
    assert any("100% of scores are identical" in w for w in report["warnings"])
    assert (tmp_path / "warn" / "manifest.json").exists()

    with pytest.raises(DegenerateJudgeError, match="degenerate judge"):
        distill(recipe(tmp_path / "fail", extra_teachers=[], judge={"fail_on_degenerate": True}))
    assert not (tmp_path / "fail" / "manifest.json").exists()


@pytest.fixture(scope="module")
def prefs(prefect_api, tmp_path_factory):
    from flows.preferences import preferences

    out = tmp_path_factory.mktemp("prefs")
    r = recipe(out, flow="preferences", sampling={"n": 2, "temperature": 0.9}, preferences={"min_margin": 0, "pairwise_check": True})
    return preferences(r), out


def test_pairwise_judging_reports_swap_agreement(prefs):
    result, out = prefs
    s = result["summary"]
    report = s["judge_report"]
    assert report["pairs_judged"] > 0
    assert 0.0 <= report["swap_agreement_rate"] <= 1.0
    disputed = sum(v for k, v in s["rejected_by_reason"].items() if k.startswith("pairwise_"))
    inconsistent = s["rejected_by_reason"].get("pairwise_inconsistent", 0)
    assert round(1 - inconsistent / report["pairs_judged"], 4) == report["swap_agreement_rate"]
    assert s["pairs"] + disputed == report["pairs_judged"]
    assert s["rows_in"] == s["pairs"] + s["rejected"]


def test_preference_dataset_loads_in_trl_format(prefect_api, tmp_path):
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl.data_utils import is_conversational, is_conversational_from_value, maybe_apply_chat_template

    from distillery.adapters.models import prepare_default_model
    from flows.preferences import preferences

    r = recipe(tmp_path, flow="preferences", sampling={"n": 2, "temperature": 0.9}, preferences={"min_margin": 0, "pairwise_check": False})
    result = preferences(r)
    assert result["summary"]["pairs"] == SEED_COUNT  # every prompt has 3 completions and no margin asked
    for entry in result["shards"]:
        assert pq.ParquetFile(tmp_path / entry["path"]).schema_arrow.equals(PREFERENCE_SCHEMA, check_metadata=False)

    ds = load_dataset("parquet", data_files=str(tmp_path / "data" / "*.parquet"), split="train")
    assert len(ds) == SEED_COUNT
    tok = AutoTokenizer.from_pretrained(prepare_default_model())
    for example in ds:
        assert is_conversational(example) and not is_conversational_from_value(example)
        assert example["prompt"][-1]["role"] == "user"
        assert example["chosen"][0]["role"] == example["rejected"][0]["role"] == "assistant"
        assert example["score_chosen"] >= example["score_rejected"]
        assert {example["chosen_teacher"], example["rejected_teacher"]} <= {"greedy", "hot"}
        text = maybe_apply_chat_template(example, tok)
        assert text["prompt"].endswith("<|im_start|>assistant\n")
        assert text["chosen"].strip() and text["rejected"].strip()
    import subprocess
    import sys

    from conftest import ROOT

    shown = subprocess.run([sys.executable, "-m", "distillery.commands.cli", "inspect", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "manifest check: OK" in shown.stdout and "chosen (" in shown.stdout
