"""Soft targets, checked against the model itself.

vLLM (bf16) writes the top-5 at every token; transformers (fp32, CPU) reloads the
same weights, teacher-forces each stored answer and recomputes log-softmax at every
position. The stored top-5 must be the recomputed top-5 (up to swaps among
near-ties) and the logprobs must agree within the stated tolerance. That proves
the targets are the teacher's and sit at the right positions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distillery.recipe import build_recipe
from conftest import ROOT, SEEDS, tiny_recipe_dict

pytestmark = pytest.mark.engine

K = 5
# bf16 weights and activations (vLLM) against fp32 (transformers), stored as float16:
# per-entry logprob differences stay under LOGPROB_ATOL nats; the mean under MEAN_ATOL.
LOGPROB_ATOL, MEAN_ATOL = 0.35, 0.06
# Entries closer than this to the K-th recomputed logprob may swap in or out of the top K.
TIE = 0.35


def kd_recipe(out: Path, **changes) -> dict:
    data = tiny_recipe_dict(str(SEEDS), str(out))
    data["source"]["limit"] = 4
    data["judge"]["enabled"] = False
    data["sampling"].update(temperature=0.8, max_tokens=48, seed=7)  # sampled tokens, not only argmax
    data["kd"] = {"top_k": K}
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    return data


def rows_of(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [r for e in manifest["shards"] for r in pq.read_table(out / e["path"]).to_pylist()]


@pytest.fixture(scope="module")
def hf_model():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillery.adapters.models import resolve_model

    path = resolve_model("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def recomputed(hf_model, row: dict):
    """Teacher-forced log-softmax (fp32) at each answer position, and the prompt ids."""
    import torch

    model, tok = hf_model
    prompt = tok.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=True, return_dict=False)
    ids = torch.tensor([list(prompt) + list(row["kd_token_ids"])])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    start = len(prompt)
    return logp[start - 1: start - 1 + len(row["kd_token_ids"])]  # row t predicts answer token t


def check_exact(hf_model, rows: list[dict]) -> dict:
    import torch

    diffs, swaps, positions = [], 0, 0
    for row in rows:
        logp = recomputed(hf_model, row)
        assert len(row["kd_topk_ids"]) == len(row["kd_token_ids"]) == logp.shape[0]
        for t, (ids, lps) in enumerate(zip(row["kd_topk_ids"], row["kd_topk_logprobs"])):
            positions += 1
            assert len(ids) == K and lps == sorted(lps, reverse=True)
            top = torch.topk(logp[t], K)
            kth = top.values[-1].item()
            ref = set(top.indices.tolist())
            for i in set(ids) ^ ref:  # in one top-K but not the other: only near the K-th value
                assert abs(logp[t, i].item() - kth) <= TIE, f"position {t}: id {i} is not a near-tie"
                swaps += 1
            for i, lp in zip(ids, lps):
                diffs.append(abs(logp[t, i].item() - lp))
            diffs.append(abs(logp[t, row["kd_token_ids"][t]].item() - row["kd_token_logprobs"][t]))
    assert max(diffs) <= LOGPROB_ATOL, f"max |diff| {max(diffs):.3f}"
    assert sum(diffs) / len(diffs) <= MEAN_ATOL, f"mean |diff| {sum(diffs) / len(diffs):.3f}"
    return {"positions": positions, "max": max(diffs), "mean": sum(diffs) / len(diffs), "swaps": swaps}


@pytest.fixture(scope="module")
def kd_build(prefect_api, tmp_path_factory):
    from flows.distill import distill

    out = tmp_path_factory.mktemp("kd") / "ds"
    result = distill(build_recipe(kd_recipe(out)))
    return result, out


def test_generated_soft_targets_are_the_teachers(kd_build, hf_model):
    result, out = kd_build
    rows = rows_of(out)
    assert len(rows) == result["summary"]["kept"] >= 3
    stats = check_exact(hf_model, rows)
    assert stats["positions"] >= 40
    print("generation exactness:", stats)


def test_storage_is_compact_readable_and_recorded(kd_build):
    import polars as pl

    _, out = kd_build
    manifest = json.loads((out / "manifest.json").read_text())
    kd = manifest["kd"]
    assert kd["top_k"] == K and kd["distribution"] == "raw_logprobs" and kd["logprob_dtype"] == "float16"
    assert kd["tokenizer"]["vocab_size"] == 49152 and len(kd["tokenizer"]["sha256"]) == 64
    assert kd["tokenizer"]["path"] == "kd/tokenizer.json" and "kd/tokenizer_config.json" in kd["tokenizer"]["files"]
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from distillery.adapters.models import resolve_model

    teacher = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    stored = AutoTokenizer.from_pretrained(out / "kd")  # the teacher's own Hugging Face tokenizer, as shipped
    raw = Tokenizer.from_file(str(out / "kd" / "tokenizer.json"))
    for row in rows_of(out):
        ids = teacher(row["response"], add_special_tokens=False)["input_ids"]
        assert stored(row["response"], add_special_tokens=False)["input_ids"] == ids == raw.encode(row["response"], add_special_tokens=False).ids
    assert kd["entries"] == sum(len(p) for r in rows_of(out) for p in r["kd_topk_ids"])
    assert 0 < kd["bytes_per_entry"] < 6  # int32 id + float16 before compression
    frame = pl.read_parquet(out / "data")  # plain polars, no custom code
    assert frame.schema["kd_topk_ids"] == pl.List(pl.List(pl.Int32))
    assert frame.schema["kd_topk_logprobs"] == pl.List(pl.List(pl.Float16))
    schema = pq.read_schema(out / manifest["shards"][0]["path"])
    assert str(schema.field("kd_token_logprobs").type) == "list<element: halffloat>"
    shown = subprocess.run([sys.executable, "-m", "distillery.commands.cli", "inspect", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert shown.returncode == 0 and f"soft targets: top-{K} raw_logprobs as float16" in shown.stdout


def test_score_targets_on_human_answers(prefect_api, hf_model, tmp_path):
    """The seed tasks' own human-written outputs, teacher-forced: the same kind of rows, just as exact."""
    from flows.score_targets import score_targets

    data = kd_recipe(tmp_path / "scored")
    data["flow"] = "score_targets"
    data["source"].update(limit=6, response_column="instances.0.output")
    result = score_targets(build_recipe(data))
    rows = rows_of(tmp_path / "scored")
    seeds = {json.loads(line)["id"]: json.loads(line) for line in SEEDS.read_text().splitlines()}
    assert len(rows) + result["summary"]["rejected"] == 6
    assert {"load", "render", "given", "score-teacher"} <= set(result["summary"]["staged_shards"])
    assert "judge" not in result["summary"]["staged_shards"]
    for row in rows:
        assert row["response"] == seeds[row["seed_id"]]["instances"][0]["output"].strip()
        assert row["messages"][-1]["content"] == row["response"]
    print("teacher-forced exactness:", check_exact(hf_model, rows))


def test_teacher_forcing_reproduces_generation(kd_build, prefect_api, tmp_path):
    """Scoring the generated answers again gives the targets generation stored (same engine, raw logprobs)."""
    from distillery.adapters.engine import EngineSpec, get_engine
    from distillery.recipe import TeacherConfig

    _, out = kd_build
    rows = rows_of(out)
    engine = get_engine(EngineSpec.from_teacher(TeacherConfig(max_model_len=2048)))
    scored = engine.score([r["messages"] for r in rows], K, [r["kd_token_ids"] for r in rows])
    diffs, same_top1 = [], 0
    for row, s in zip(rows, scored):
        assert s["kd_token_ids"] == row["kd_token_ids"]
        for t in range(len(row["kd_token_ids"])):
            mine = dict(zip(row["kd_topk_ids"][t], row["kd_topk_logprobs"][t]))
            theirs = dict(zip(s["kd_topk_ids"][t], s["kd_topk_logprobs"][t]))
            diffs += [abs(mine[i] - theirs[i]) for i in mine.keys() & theirs.keys()]
            diffs.append(abs(s["kd_token_logprobs"][t] - row["kd_token_logprobs"][t]))
            same_top1 += row["kd_topk_ids"][t][0] == s["kd_topk_ids"][t][0]
    positions = sum(len(r["kd_token_ids"]) for r in rows)
    # Prefill (scoring) and decode (generation) run the same bf16 math in different kernels and orders.
    print(f"forced vs generated: max {max(diffs):.3f}, mean {sum(diffs) / len(diffs):.4f}, top-1 equal {same_top1}/{positions}")
    assert max(diffs) <= LOGPROB_ATOL and sum(diffs) / len(diffs) <= MEAN_ATOL
    assert same_top1 >= 0.95 * positions


def test_kd_check_accepts_the_teacher_and_refuses_another_vocabulary(kd_build, tmp_path):
    from distillery.adapters.models import resolve_model

    _, out = kd_build
    cli = [sys.executable, "-m", "distillery.commands.cli", "kd-check", str(out), "--student"]
    same = subprocess.run([*cli, resolve_model("smollm2-135m-instruct")], capture_output=True, text=True, cwd=ROOT)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "kd-check: ok" in same.stdout.lower()

    from transformers import AutoTokenizer

    other = tmp_path / "student"
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    tok.add_tokens(["<extra_kd_token_1>", "<extra_kd_token_2>"])
    tok.save_pretrained(other)
    differ = subprocess.run([*cli, str(other)], capture_output=True, text=True, cwd=ROOT)
    assert differ.returncode == 1
    assert "2" in differ.stdout and "refus" in differ.stdout.lower()


def test_kd_loss_falls_on_a_stored_batch(kd_build):
    """A tiny KD loop on CPU: forward KL over the stored top-K plus cross-entropy on the stored
    tokens, the default model as the student."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillery.adapters.models import resolve_model
    from distillery.kd_loss import batch_from_rows, kd_loss

    _, out = kd_build
    rows = rows_of(out)[:2]
    path = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    student = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    last = student.model.layers[-1]
    with torch.no_grad():  # a student that is not the teacher: perturb its last block
        for param in last.parameters():
            param.add_(0.02 * torch.randn_like(param))
    batch = batch_from_rows(rows, tok)
    for name, param in student.named_parameters():  # train the last block only: seconds, not minutes, on CPU
        param.requires_grad = name.startswith(f"model.layers.{student.config.num_hidden_layers - 1}.")
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-4)
    losses = []
    for _ in range(4):
        loss, parts = kd_loss_step(student, batch, kd_loss)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def kd_loss_step(student, batch, kd_loss):
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return kd_loss(batch["gather"](logits), batch["topk_ids"], batch["topk_logprobs"], batch["target_ids"], batch["mask"])


def test_two_teachers_merge_into_one_renormalized_mixture(prefect_api, tmp_path):
    """Two teachers on one model (different system prompts): every answer is scored by both and
    the stored targets are their weighted mixture, checked against the two scorings."""
    import math

    from distillery.adapters.engine import EngineSpec, get_engine
    from distillery.kd import merge
    from distillery.recipe import TeacherConfig
    from flows.distill import distill
    from distillery.kd import conversation

    data = kd_recipe(tmp_path / "merged")
    data["source"]["limit"] = 2
    data["extra_teachers"] = [{"name": "terse", "system_prompt": "Answer in one short sentence."}]
    data["kd"]["teacher_weights"] = {"teacher": 3.0, "terse": 1.0}
    data["dedup"] = {"enabled": False}  # both teachers answer the same prompts
    distill(build_recipe(data))
    manifest = json.loads((tmp_path / "merged" / "manifest.json").read_text())
    staged = manifest["summary"]["staged_shards"]
    assert {"score-teacher", "score-terse", "kd-merge"} <= set(staged), staged  # mixed in stages, before dedup
    assert manifest["kd"]["teacher_weights"] == {"teacher": 3.0, "terse": 1.0}
    assert manifest["kd"]["distribution"] == "raw_logprobs"
    rows = rows_of(tmp_path / "merged")
    assert {r["teacher"] for r in rows} == {"teacher", "terse"}
    engine = get_engine(EngineSpec.from_teacher(TeacherConfig(max_model_len=2048)))
    # Scored as the flow scores them (one batch per teacher, rows in stored order), so the
    # bf16 arithmetic is the same and the mixtures must agree up to float16 storage.
    ids = [r["kd_token_ids"] for r in rows]
    system = build_recipe(data).teacher.system_prompt  # the default teacher's own system prompt
    plain = engine.score([conversation(r, system) for r in rows], K, ids)
    terse = engine.score([conversation(r, "Answer in one short sentence.") for r in rows], K, ids)
    for n, row in enumerate(rows):
        expected = merge([plain[n], terse[n]], [3.0, 1.0])
        for t in range(len(row["kd_token_ids"])):
            assert K <= len(row["kd_topk_ids"][t]) <= 2 * K
            assert sum(math.exp(x) for x in row["kd_topk_logprobs"][t]) == pytest.approx(1.0, abs=0.02)
            assert set(row["kd_topk_ids"][t]) == set(expected["kd_topk_ids"][t])
            got = dict(zip(row["kd_topk_ids"][t], row["kd_topk_logprobs"][t]))
            for i, lp in zip(expected["kd_topk_ids"][t], expected["kd_topk_logprobs"][t]):
                assert got[i] == pytest.approx(lp, abs=1e-3 + abs(lp) * 2 ** -7)


def test_teachers_with_different_tokenizers_are_refused_before_generating(prefect_api, tmp_path):
    from transformers import AutoTokenizer

    from distillery.adapters.models import resolve_model
    from flows.distill import distill
    from tasks.kd import TokenizersDiffer

    base = Path(resolve_model("smollm2-135m-instruct"))
    other = tmp_path / "other-teacher"
    other.mkdir()
    for f in base.iterdir():
        if not f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "added_tokens")):
            (other / f.name).symlink_to(f)
    tok = AutoTokenizer.from_pretrained(base)
    tok.add_tokens(["<other_teacher_token>"])
    tok.save_pretrained(other)
    data = kd_recipe(tmp_path / "refused")
    data["extra_teachers"] = [{"name": "other", "model": str(other)}]
    data["kd"]["teacher_weights"] = {"teacher": 1.0, "other": 1.0}
    state = distill(build_recipe(data), return_state=True)
    with pytest.raises(TokenizersDiffer, match="1 ids differ"):
        state.result()
    assert not (tmp_path / "refused").exists()


def test_an_answer_near_max_model_len_is_scored_whole(prefect_api, hf_model, tmp_path):
    """Teacher forcing a ~1,900-token answer in a 2,048-token context: every position gets its
    top-K, still exact; one that does not fit is quarantined, not truncated."""
    from flows.score_targets import score_targets

    _, tok = hf_model
    records = [json.loads(line) for line in SEEDS.read_text().splitlines()]
    text = " ".join(r["instances"][0]["output"] for r in records if r["instances"][0]["output"])
    words = text.split()
    long_answer = " ".join(words[:1])
    while len(tok(long_answer)["input_ids"]) < 1900:
        long_answer = " ".join(words[: len(long_answer.split()) + 50])
    too_long = long_answer + " " + " ".join(words[:400])
    src = tmp_path / "long.jsonl"
    src.write_text("\n".join(json.dumps({"id": i, "instruction": "Repeat the following text.", "output": a})
                             for i, a in (("fits", long_answer), ("too_long", too_long))) + "\n")
    data = kd_recipe(tmp_path / "long")
    data["flow"] = "score_targets"
    data["source"] = {"uri": str(src), "instruction_column": "instruction", "input_column": None, "id_column": "id",
                      "response_column": "output"}
    data["dedup"] = {"enabled": False}
    result = score_targets(build_recipe(data))
    assert result["summary"]["rejected_by_reason"] == {"prompt_too_long": 1}
    (row,) = rows_of(tmp_path / "long")
    assert row["seed_id"] == "fits" and len(row["kd_token_ids"]) >= 1900
    assert all(len(ids) == K for ids in row["kd_topk_ids"])
    check_exact(hf_model, [row])
