"""Each output handed to the trainer its users train with, unmodified: a small SFT build and
a small preference build by the real flows, then TRL's SFTTrainer on the dataset folder, the
hf export and the OpenAI JSONL, TRL's DPOTrainer on the preference build, and the alpaca and
sharegpt files as LLaMA-Factory/axolotl-style JSON read them. The student is the default model;
every trainer runs two steps on CPU."""

from __future__ import annotations

import json
import math

import pytest

from distillery.commands.export import export_dataset
from distillery.recipe import build_recipe

from conftest import SEEDS, published, tiny_recipe_dict

pytestmark = pytest.mark.engine

SEED_COUNT = 4
STEPS = 2


def recipe(out, **sections):
    data = tiny_recipe_dict(str(SEEDS), str(out))
    data["source"]["limit"] = SEED_COUNT
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return build_recipe(data)


@pytest.fixture(scope="module")
def sft_build(prefect_api, tmp_path_factory):
    from flows.distill import distill

    out = tmp_path_factory.mktemp("sft") / "ds"
    distill(recipe(out))
    manifest, kept, _ = published(out)
    assert manifest["rows"] == len(kept) > 0
    return out, manifest, sorted(kept, key=lambda r: r["id"])


@pytest.fixture(scope="module")
def pref_build(prefect_api, tmp_path_factory):
    """As tests/test_feedback_e2e.py builds pairs: n=2 sampled answers per prompt, no margin asked."""
    from flows.preferences import preferences

    out = tmp_path_factory.mktemp("prefs") / "ds"
    result = preferences(recipe(out, flow="preferences", dedup={"field": "both"}, sampling={"n": 2, "temperature": 0.9},
                                preferences={"min_margin": 0, "pairwise_check": False}))
    assert result["summary"]["pairs"] > 0
    return out, result


def exported(out, fmt, tmp_path):
    target = tmp_path / {"hf": "hf", "openai": "x.openai.jsonl"}.get(fmt, f"x.{fmt}.json")
    export_dataset(str(out), fmt, str(target))
    return target


def load(path, tmp_path, **kwargs):
    """`datasets.load_dataset` with a cache of this test's own: datasets caches a local folder
    with a `configs` card under the folder's name and the card's patterns, so two builds in
    folders of the same name would read each other's cached rows."""
    from datasets import load_dataset

    return load_dataset(str(path), split="train", cache_dir=str(tmp_path / "datasets-cache"), **kwargs)


def trained(trainer) -> None:
    """Two optimizer steps ran and every logged loss is a number."""
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert result.global_step == STEPS and len(losses) == STEPS
    assert math.isfinite(result.training_loss) and all(math.isfinite(x) for x in losses)


def train_args(config_class, tmp_path):
    return config_class(
        output_dir=str(tmp_path / "trainer"), max_steps=STEPS, per_device_train_batch_size=1, max_length=128,
        learning_rate=1e-5, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, bf16=False,
        gradient_checkpointing=False, dataloader_num_workers=0, disable_tqdm=True,
    )


@pytest.mark.parametrize("source", ["folder", "hf", "openai"])
def test_sft_trainer_trains_on_the_output_as_it_is(sft_build, model_dir, tmp_path, source):
    from trl import SFTConfig, SFTTrainer

    out, manifest, kept = sft_build
    if source == "openai":
        ds = load("json", tmp_path, data_files=str(exported(out, "openai", tmp_path)))
        assert ds.column_names == ["messages"]
    else:
        ds = load(out if source == "folder" else exported(out, "hf", tmp_path), tmp_path)
        # a string `prompt` column would make TRL take the rows for prompt-completion rows
        assert "prompt" not in ds.column_names and {"messages", "prompt_text", "response"} <= set(ds.column_names)
    assert len(ds) == manifest["rows"]
    assert sorted(ds["messages"], key=json.dumps) == sorted((r["messages"] for r in kept), key=json.dumps)
    assert ds[0]["messages"][0]["role"] == "system"
    trained(SFTTrainer(model=str(model_dir), args=train_args(SFTConfig, tmp_path), train_dataset=ds))


def test_dpo_trainer_trains_on_the_preference_build(pref_build, model_dir, tmp_path):
    from trl import DPOConfig, DPOTrainer

    out, result = pref_build
    system = recipe(out).teacher.system_prompt
    folder = load(out, tmp_path / "folder")
    ds = load(exported(out, "hf", tmp_path), tmp_path)
    assert ds.to_list() == folder.to_list() and len(ds) == result["summary"]["pairs"]
    for pair in ds:  # the answers were generated under the teacher's system message: the pair keeps it
        assert pair["prompt"][0] == {"role": "system", "content": system} and pair["prompt"][-1]["role"] == "user"
    trained(DPOTrainer(model=str(model_dir), args=train_args(DPOConfig, tmp_path), train_dataset=ds))


def test_alpaca_and_sharegpt_exports_hold_exactly_the_kept_rows(sft_build, tmp_path):
    out, manifest, kept = sft_build
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    want = {
        "alpaca": [{"instruction": r["instruction"], "input": r["input"] or "", "output": r["response"]} for r in kept],
        "sharegpt": [{"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in r["messages"]]} for r in kept],
    }
    for fmt, rows in want.items():
        ds = load("json", tmp_path, data_files=str(exported(out, fmt, tmp_path)))
        assert ds.column_names == list(rows[0]) and len(ds) == manifest["summary"]["kept"] == manifest["rows"]
        assert sorted(ds.to_list(), key=json.dumps) == sorted(rows, key=json.dumps)
