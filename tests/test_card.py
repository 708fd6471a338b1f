"""Dataset cards and their pictures, without an engine: SFT, KD and preference builds published by
the real commit protocol from the Self-Instruct seed tasks (their human-written answers as the
teacher's, a deterministic score per answer), then read as the Hub and `datasets` read them."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from distillery.card import JUDGE_PICTURE, LENGTH_PICTURE
from distillery.columns import describe
from distillery.judge import judge_report
from distillery.kd import KD_COLUMNS, with_kd
from distillery.preferences import candidate_pairs, confirm_pairs, preference_rows
from distillery.recipe import Recipe
from distillery.report import build_manifest, run_report_markdown, summarize
from distillery.schema import PREFERENCE_SCHEMA, REJECT_SCHEMA, ROW_SCHEMA, content_id, rejects_table, to_table
from distillery.shards import ShardSpec

from conftest import read_seeds

NOW = datetime(2026, 12, 3, tzinfo=timezone.utc)
SVG = "{http://www.w3.org/2000/svg}"


def score(answer: str) -> int:
    return min(10, 1 + len(answer.split()) // 8)


def kept_rows(records: list[dict], sample_index: int = 0, cut: int | None = None) -> list[dict]:
    """Rows as generation leaves them; `cut` keeps only the first words of each answer (a weaker second sample)."""
    rows = []
    for r in records:
        answer = r["instances"][0]["output"]
        answer = " ".join(answer.split()[:cut]) if cut else answer
        msgs = [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": answer}]
        rows.append({"id": content_id(msgs, sample_index), "messages": msgs, "prompt": r["instruction"], "response": answer,
                     "instruction": r["instruction"], "input": r["instances"][0]["input"], "seed_id": r["id"],
                     "sample_index": sample_index, "teacher": "human", "teacher_model": "self-instruct-seeds", "sampling": "{}",
                     "completion_tokens": len(answer.split()), "judge_model": "rubric", "judge_score": score(answer),
                     "run_id": "r", "created_at": NOW})
    return rows


def publish_build(out, recipe: Recipe, rows, schema, summary, rejected=(), kd=None, files=None, previous_run=None) -> dict:
    from distillery.adapters.storage import open_dataset
    from tasks.write import publish

    tables = [(to_table(rows, schema), "data", "train"), (rejects_table(list(rejected)), "rejected", "rejected")]

    def make(data, rejects):
        manifest = build_manifest(recipe.name, "r", NOW.isoformat(), recipe.model_dump(mode="json"), {}, data, rejects, summary, {},
                                  key="k", attempt="a")
        return {**manifest, "kd": kd} if kd else manifest

    return publish(open_dataset(str(out)), tables, ShardSpec(rows_per_shard=40), make, previous_run, attempt="a", files=files)


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    rows = kept_rows(read_seeds())
    rejected = [{"seed_id": "x", "stage": "load", "reason": "malformed_json", "raw": "{", "run_id": "r", "created_at": NOW}]
    summary = summarize(len(rows) + 1, 1, len(rows), rows, rejected, {"write": 0.0}, rows)
    summary["judge_report"] = judge_report([r["judge_score"] for r in rows])
    recipe = Recipe.model_validate({"name": "seeds-sft", "output": {"license": "apache-2.0"}})
    out = tmp_path_factory.mktemp("sft") / "ds"
    return out, rows, publish_build(out, recipe, rows, ROW_SCHEMA, summary, rejected)


@pytest.fixture(scope="module")
def kd_build(tmp_path_factory, model_dir):
    from tasks.kd import kd_section

    rows = kept_rows(read_seeds()[:20])
    recipe = Recipe.model_validate({"name": "seeds-kd", "teacher": {"model": str(model_dir)}, "judge": {"enabled": False}, "kd": {"top_k": 4}})
    kd, files = kd_section(recipe, rows)
    summary = summarize(len(rows), 1, len(rows), rows, [], {"write": 0.0}, rows)
    out = tmp_path_factory.mktemp("kd") / "ds"
    manifest = publish_build(out, recipe, rows, with_kd(ROW_SCHEMA), summary, kd={**kd, "topk_bytes": 0, "bytes_per_entry": None}, files=files)
    return out, rows, manifest


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    records = read_seeds()
    scored = kept_rows(records) + kept_rows(records, 1, cut=4)
    found, excluded = candidate_pairs(scored, [r["id"] for r in records], 2.0)
    kept, disputed = confirm_pairs(found, None)
    rows = preference_rows(kept, "rubric", "r", NOW)
    rejected = [{**r, "run_id": "r", "created_at": NOW} for r in [*excluded, *disputed]]
    by_reason: dict[str, int] = {}
    for r in rejected:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    summary = {"rows_in": len(records), "completions_per_prompt": 2, "generated": len(scored), "kept": len(rows), "pairs": len(rows),
               "rejected": len(rejected), "rejected_by_reason": by_reason, "completions_rejected_by_reason": {},
               "prompt_tokens": 0, "completion_tokens": 0, "judge_score_mean": None, "dedup_clusters": 0,
               "judge_report": judge_report([r["judge_score"] for r in scored]), "stage_seconds": {"write": 0.0}}
    recipe = Recipe.model_validate({"name": "seeds-pairs", "flow": "preferences", "sampling": {"n": 2}, "preferences": {"pairwise_check": False}})
    out = tmp_path_factory.mktemp("pairs") / "ds"
    return out, rows, publish_build(out, recipe, rows, PREFERENCE_SCHEMA, summary, rejected)


def test_every_declared_column_has_a_description():
    for kind, schema in (("kept", with_kd(ROW_SCHEMA)), ("preferences", PREFERENCE_SCHEMA), ("rejected", REJECT_SCHEMA)):
        missing = [f.name for f in schema if not describe(f.name, kind)]
        assert not missing, f"{kind} columns without a description in distillery/columns.py: {missing}"
    assert all(describe(name) for name in KD_COLUMNS)
    assert describe("prompt", "kept") and describe("prompt_text", "kept")  # before and after the rename
    assert describe("prompt", "preferences") != describe("prompt", "rejected")


def card_of(out) -> DatasetCard:
    return DatasetCard.load(out / "README.md")


def shard_columns(out, manifest, key: str = "shards") -> list[str]:
    return pq.read_schema(out / manifest[key][0]["path"]).names


def described_in_body(card: DatasetCard, column: str) -> bool:
    row = re.search(rf"^\| `{re.escape(column)}` \| `[^`]+` \| (.+) \|$", card.text, re.M)
    return bool(row and row.group(1).strip())


@pytest.mark.parametrize("which", ["sft", "kd_build", "pairs"])
def test_the_card_parses_and_describes_every_shard_column(which, request):
    out, rows, manifest = request.getfixturevalue(which)
    card = card_of(out)
    data = card.data.to_dict()
    assert data["license"] == ("apache-2.0" if which == "sft" else "other")  # the recipe's output.license, else its default
    assert data["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert data["pretty_name"] == manifest["name"] and data["size_categories"] == ["n<1K"]
    assert data["language"] and data["task_categories"] == ["text-generation"]
    assert "not part of an export" in card.text and "- `rejected/`" not in card.text  # true of an hf export too
    for column in shard_columns(out, manifest) + shard_columns(out, manifest, "rejected_shards"):
        assert described_in_body(card, column), f"{which}: column {column!r} is not described in the card"
    kd = manifest.get("kd")
    assert ("## Knowledge distillation" in card.text) == (which == "kd_build")
    if kd:
        tok = kd["tokenizer"]
        assert f"K (top_k): {kd['top_k']}" in card.text and "raw_logprobs" in card.text and "float16, 7 mantissa bits" in card.text
        assert tok["sha256"] in card.text and str(tok["vocab_size"]) in card.text and "`kd/tokenizer.json`" in card.text
        assert "knowledge-distillation" in data["tags"]
    assert ("## Preference pairs" in card.text) == (which == "pairs")
    assert ("were rejected" in card.text) == (which == "sft")  # the SFT wording of the judge threshold
    if which == "pairs":
        s = manifest["summary"]
        assert f"{s['pairs']} pairs from {s['rows_in']} prompts" in card.text and "min_margin = 2.0" in card.text
        assert f"| score_tie | {s['rejected_by_reason']['score_tie']} |" in card.text and "no pairwise check" in card.text


def test_load_dataset_reads_only_the_published_rows(sft, tmp_path):
    from datasets import load_dataset

    out, rows, manifest = sft
    ds = load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == len(rows) == manifest["rows"] and ds.column_names == ROW_SCHEMA.names


def bars(svg_text: str) -> dict[str, list[tuple[str, int, float]]]:
    root = ET.fromstring(svg_text)
    assert root.tag == f"{SVG}svg"
    out: dict[str, list] = {}
    for rect in root.iter(f"{SVG}rect"):
        if rect.get("class") == "bar":
            out.setdefault(rect.get("data-series"), []).append((rect.get("data-bin"), int(rect.get("data-count")), float(rect.get("height"))))
    return out


def assert_proportional(chart: dict[str, list[tuple[str, int, float]]]) -> None:
    """Every bar of every series on one scale: the tallest bar is the largest count."""
    per_count = max(h for s in chart.values() for _, _, h in s) / max(c for s in chart.values() for _, c, _ in s)
    for series in chart.values():
        for _, count, height in series:
            assert height == pytest.approx(per_count * count, abs=0.01)


def test_pictures_have_one_bar_per_bin_with_heights_proportional_to_the_counts(sft, pairs):
    out, rows, manifest = sft
    judge = bars((out / JUDGE_PICTURE).read_text())
    hist = manifest["summary"]["judge_report"]["histogram"]
    assert [(b, c) for b, c, _ in judge["answers"]] == [(k, v) for k, v in hist.items()]
    assert sum(hist.values()) == len(rows)
    assert_proportional(judge)

    lengths = manifest["summary"]["lengths"]
    chart = bars((out / LENGTH_PICTURE).read_text())
    drawn, width = chart["answers"], lengths["bin_width"]
    assert lengths["unit"] == "tokens" and [c for _, c, _ in drawn] == lengths["counts"]["answers"]
    assert [c for _, c, _ in drawn] == [sum(1 for r in rows if r["completion_tokens"] // width == i) for i in range(len(drawn))]
    assert_proportional(chart)

    out, rows, manifest = pairs  # chosen and rejected answers side by side, one bar per bin each
    drawn = bars((out / LENGTH_PICTURE).read_text())
    assert set(drawn) == {"chosen", "rejected"} and len(drawn["chosen"]) == len(drawn["rejected"])
    for side in ("chosen", "rejected"):
        assert sum(c for _, c, _ in drawn[side]) == len(rows)
    assert_proportional(drawn)


def test_card_and_report_show_the_pictures_and_the_artifact_inlines_them(sft):
    out, _, manifest = sft
    card = card_of(out)
    assert f"]({JUDGE_PICTURE})" in card.text and f"]({LENGTH_PICTURE})" in card.text
    assert f"]({JUDGE_PICTURE})" in (out / "report.md").read_text()
    inline = run_report_markdown(manifest["name"], str(out), "r", manifest["summary"], inline_pictures=True)
    uris = re.findall(r"\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", inline)
    assert sorted(base64.b64decode(u).decode() for u in uris) == sorted((out / p).read_text() for p in (JUDGE_PICTURE, LENGTH_PICTURE))
    assert json.loads((out / "manifest.json").read_text())["columns"]["data"][2] == {"name": "prompt_text", "type": "string"}


def test_a_kd_build_without_judge_has_no_judge_picture_and_repair_restores_missing_files(kd_build):
    from tasks.write import repair_card

    out, _, manifest = kd_build
    assert not (out / JUDGE_PICTURE).exists() and (out / LENGTH_PICTURE).exists()
    before = (out / LENGTH_PICTURE).read_bytes()
    (out / LENGTH_PICTURE).unlink()
    (out / "README.md").unlink()
    recipe = Recipe.model_validate({**manifest["recipe"], "output": {**manifest["recipe"]["output"], "uri": str(out)}})
    repair_card(recipe, json.loads((out / "manifest.json").read_text()))
    assert (out / LENGTH_PICTURE).read_bytes() == before and "## Knowledge distillation" in card_of(out).text


def test_card_modules_are_pure():
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import sys, distillery.card, distillery.charts, distillery.columns, distillery.report\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'vllm', 'fsspec', 's3fs', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_rebuilt_folder_loads_its_new_rows_not_the_cached_old_ones(tmp_path):
    """`datasets` caches a local folder under the card's configs and dataset_info: the card
    carries the build's own sizes, so a rebuild into the same folder is not read from the cache."""
    from datasets import load_dataset

    out, cache = tmp_path / "ds", str(tmp_path / "cache")
    records = read_seeds()
    for limit, previous in ((40, None), (25, "r")):  # two different builds, one after the other into one folder
        rows = kept_rows(records[:limit])
        summary = summarize(len(rows), 1, len(rows), rows, [], {"write": 0.0}, rows)
        manifest = publish_build(out, Recipe.model_validate({"name": "rebuilt"}), rows, ROW_SCHEMA, summary, previous_run=previous)
        loaded = load_dataset(str(out), split="train", cache_dir=cache)
        assert len(loaded) == limit == manifest["rows"]
        assert sorted(loaded["seed_id"]) == sorted(r["seed_id"] for r in rows)
        card = DatasetCard.load(out / "README.md").data.to_dict()
        size = sum(e["bytes"] for e in manifest["shards"])
        assert card["dataset_info"]["splits"] == [{"name": "train", "num_examples": limit, "num_bytes": size}]
        assert card["dataset_info"]["download_size"] == card["dataset_info"]["dataset_size"] == size
