"""KD training side without vLLM: the reference loss, batch alignment of stored soft targets,
a short CPU training loop on the default model, and the pure modules' imports."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from distillery.adapters.tokenizers import load_tokenizer
from distillery.kd_loss import IGNORE_INDEX, KdBatchError, batch_from_rows, kd_loss, prompt_ids, response_logits

MODEL = "smollm2-135m-instruct"
KD_TYPES = {
    "kd_token_ids": pa.list_(pa.int32()),
    "kd_token_logprobs": pa.list_(pa.float16()),
    "kd_topk_ids": pa.list_(pa.list_(pa.int32())),
    "kd_topk_logprobs": pa.list_(pa.list_(pa.float16())),
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MODEL)


# ---------------------------------------------------------------- kd_loss


def brute_force(student_logits, topk_ids, topk_logprobs, target_ids, mask, alpha, temperature):
    """The loss with explicit loops and math.* only."""
    b_, t_, v_ = student_logits.shape
    kls, ces = [], []
    for b in range(b_):
        for t in range(t_):
            if not mask[b][t]:
                continue
            z = [float(x) for x in student_logits[b, t]]
            ids = [int(i) for i in topk_ids[b, t]]
            tl = [float(x) for x in topk_logprobs[b, t]]
            # teacher renormalized over K at temperature
            tz = [x / temperature for x in tl]
            tsum = sum(math.exp(x) for x in tz)
            p = [math.exp(x) / tsum for x in tz]
            # student: full softmax at temperature, restricted to the K ids, renormalized
            sz = [x / temperature for x in z]
            full = sum(math.exp(x) for x in sz)
            q_full = [math.exp(sz[i]) / full for i in ids]
            q = [x / sum(q_full) for x in q_full]
            kls.append(sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q)))
            ce_norm = sum(math.exp(x) for x in z)
            ces.append(-(z[int(target_ids[b, t])] - math.log(ce_norm)))
    kl, ce = sum(kls) / len(kls), sum(ces) / len(ces)
    return alpha * kl * temperature**2 + (1 - alpha) * ce, kl, ce


def random_case(seed=0, b=2, t=3, v=11, k=4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g, dtype=torch.float64) * 2
    teacher_full = torch.log_softmax(torch.randn(b, t, v, generator=g, dtype=torch.float64) * 2, -1)
    topk_lp, topk_ids = teacher_full.topk(k, dim=-1)
    target = torch.randint(0, v, (b, t), generator=g)
    return logits, topk_ids, topk_lp, target


@pytest.mark.parametrize("alpha,temperature", [(0.5, 1.0), (0.3, 2.0), (1.0, 0.7), (0.0, 1.0)])
def test_kd_loss_equals_brute_force(alpha, temperature):
    logits, topk_ids, topk_lp, target = random_case()
    mask = torch.tensor([[True, True, True], [True, True, False]])
    loss, parts = kd_loss(logits, topk_ids, topk_lp, target, mask, alpha=alpha, temperature=temperature)
    want, kl, ce = brute_force(logits, topk_ids, topk_lp, target, mask.tolist(), alpha, temperature)
    assert torch.isfinite(loss)
    assert abs(float(loss) - want) < 1e-5
    assert abs(parts["kl"] - kl) < 1e-5 and abs(parts["ce"] - ce) < 1e-5


def test_kd_loss_is_differentiable_and_float32_friendly():
    logits, topk_ids, topk_lp, target = random_case(seed=1)
    logits = logits.float().requires_grad_()
    loss, _ = kd_loss(logits, topk_ids, topk_lp.half(), target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_kl_is_zero_when_the_student_matches_the_teacher_on_the_support():
    logits, topk_ids, topk_lp, target = random_case(seed=2)
    student = torch.randn_like(logits) * 5  # anything off the support
    student.scatter_(-1, topk_ids, topk_lp)  # on the support: the teacher's logprobs (any shift cancels)
    for temperature in (1.0, 2.0):
        _, parts = kd_loss(student + 3.0, topk_ids, topk_lp, target, temperature=temperature)
        assert abs(parts["kl"]) < 1e-9
    _, parts = kd_loss(logits, topk_ids, topk_lp, target)
    assert parts["kl"] > 1e-3


def test_kd_loss_ignores_masked_positions():
    logits, topk_ids, topk_lp, target = random_case(seed=3)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    loss, parts = kd_loss(logits, topk_ids, topk_lp, target, mask)
    logits2, ids2, lp2, target2 = logits.clone(), topk_ids.clone(), topk_lp.clone(), target.clone()
    for b, t in ((0, 1), (1, 2)):
        logits2[b, t] = torch.randn(logits.shape[-1], dtype=logits.dtype) * 50
        ids2[b, t] = torch.arange(topk_ids.shape[-1])
        lp2[b, t] = -torch.rand(topk_ids.shape[-1], dtype=lp2.dtype) * 30
        target2[b, t] = 0
    loss2, parts2 = kd_loss(logits2, ids2, lp2, target2, mask)
    assert float(loss2) == pytest.approx(float(loss), abs=1e-12) and parts2 == pytest.approx(parts)
    none, _ = kd_loss(logits, topk_ids, topk_lp, target, torch.zeros_like(mask))
    assert float(none) == 0.0


# ---------------------------------------------------------------- batch_from_rows


def parquet_roundtrip(rows: list[dict]) -> list[dict]:
    """Rows through a Parquet file with the declared KD column types, as a trainer reads them back."""
    msg = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    schema = pa.schema([("id", pa.string()), ("messages", msg)] + [(name, typ) for name, typ in KD_TYPES.items()])
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    buf.seek(0)
    table = pq.read_table(buf)
    assert table.schema.field("kd_topk_logprobs").type == pa.list_(pa.list_(pa.float16()))
    return table.to_pylist()


def fake_kd_row(tokenizer, rid: str, question: str, answer: str, k: int = 3) -> dict:
    ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    return {
        "id": rid,
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        "kd_token_ids": ids,
        "kd_token_logprobs": [-0.5 - 0.01 * t for t in range(len(ids))],
        "kd_topk_ids": [[i] + [(i + j) % 49152 for j in range(1, k)] for i in ids],
        "kd_topk_logprobs": [[-0.5 - 0.25 * j for j in range(k)] for _ in ids],
    }


def test_batch_from_rows_alignment(tokenizer):
    rows = parquet_roundtrip([
        fake_kd_row(tokenizer, "a", "Name a primary colour.", "Red is a primary colour."),
        fake_kd_row(tokenizer, "b", "Say hi in French, please, and nothing else at all.", "Bonjour!"),
    ])
    batch = batch_from_rows(rows, tokenizer)
    assert batch["topk_logprobs"].dtype == torch.float32 and batch["topk_ids"].dtype == torch.long
    lengths = [len(r["kd_token_ids"]) for r in rows]
    assert batch["target_ids"].shape == (2, max(lengths)) and batch["topk_ids"].shape == (2, max(lengths), 3)
    for b, row in enumerate(rows):
        prompt = prompt_ids(tokenizer, row["messages"][:-1])
        p, ids = len(prompt), row["kd_token_ids"]
        assert int(batch["prompt_lens"][b]) == p and int(batch["response_lens"][b]) == len(ids)
        # the prompt ends with the assistant header: the response starts right after it
        assert tokenizer.decode(prompt[-4:], skip_special_tokens=False) == "<|im_start|>assistant\n"
        assert batch["input_ids"][b, :p].tolist() == prompt
        for t, token in enumerate(ids):
            assert int(batch["input_ids"][b, p + t]) == token  # input_ids[prompt_len + t] == kd_token_ids[t]
            assert int(batch["positions"][b, t]) == p + t - 1  # logits there predict target t
            assert int(batch["target_ids"][b, t]) == token
            assert int(batch["labels"][b, p + t]) == token
            assert batch["topk_ids"][b, t].tolist() == row["kd_topk_ids"][t]
            assert batch["topk_logprobs"][b, t].tolist() == pytest.approx(row["kd_topk_logprobs"][t], abs=1e-3)
        assert batch["mask"][b].tolist() == [True] * len(ids) + [False] * (max(lengths) - len(ids))
        assert (batch["labels"][b, :p] == IGNORE_INDEX).all() and (batch["labels"][b, p + len(ids):] == IGNORE_INDEX).all()
        assert batch["attention_mask"][b].sum() == p + len(ids)
        assert (batch["input_ids"][b, p + len(ids):] == tokenizer.pad_token_id).all()
    # the response ids are the stored ones, not a re-encoding of the text: change the text, nothing moves
    edited = [dict(r, messages=r["messages"][:-1] + [{"role": "assistant", "content": "something else"}]) for r in rows]
    assert torch.equal(batch_from_rows(edited, tokenizer)["input_ids"], batch["input_ids"])
    # response_logits picks row b's logits at positions[b, t]
    fake = torch.arange(2 * batch["input_ids"].shape[1], dtype=torch.float32).view(2, -1, 1).expand(-1, -1, 5)
    got = response_logits(fake, batch["positions"])
    assert got.shape == (2, max(lengths), 5)
    assert got[1, 0, 0] == fake[1, batch["prompt_lens"][1] - 1, 0]
    assert torch.equal(batch["gather"](fake), got)


def test_batch_from_rows_max_len_and_bad_rows(tokenizer):
    row = fake_kd_row(tokenizer, "a", "Q?", "One two three four five six seven.")
    p = len(prompt_ids(tokenizer, row["messages"][:-1]))
    batch = batch_from_rows([row], tokenizer, max_len=p + 3)
    assert batch["input_ids"].shape == (1, p + 3) and batch["mask"].sum() == 3
    assert batch["target_ids"][0].tolist() == row["kd_token_ids"][:3]
    with pytest.raises(KdBatchError, match="row a: the prompt alone"):
        batch_from_rows([row], tokenizer, max_len=p)
    with pytest.raises(KdBatchError, match="row a: kd_topk_ids is null; the dataset was built without kd.top_k"):
        batch_from_rows([dict(row, kd_topk_ids=None)], tokenizer)
    with pytest.raises(KdBatchError, match="row a: kd columns disagree in length"):
        batch_from_rows([dict(row, kd_token_logprobs=row["kd_token_logprobs"][:-1])], tokenizer)


# ---------------------------------------------------------------- a CPU training loop


def teacher_rows(model, tokenizer, qa: list[tuple[str, str]], k: int = 5) -> list[dict]:
    """Teacher-forced top-k soft targets of `model` on the given answers, laid out as Parquet rows.

    Positions are computed here by hand (not by batch_from_rows): the logits
    at index P + t - 1 of prompt + answer are the distribution over answer token t.
    """
    rows = []
    with torch.no_grad():
        for i, (question, answer) in enumerate(qa):
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            prompt = prompt_ids(tokenizer, messages[:-1])
            ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
            logprobs = torch.log_softmax(model(torch.tensor([prompt + ids])).logits[0].float(), -1)
            p = len(prompt)
            at = logprobs[p - 1 : p - 1 + len(ids)]
            top_lp, top_ids = at.topk(k, dim=-1)
            rows.append({
                "id": f"r{i}",
                "messages": messages,
                "kd_token_ids": ids,
                "kd_token_logprobs": at.gather(-1, torch.tensor(ids).unsqueeze(-1)).squeeze(-1).tolist(),
                "kd_topk_ids": top_ids.tolist(),
                "kd_topk_logprobs": top_lp.tolist(),
            })
    return parquet_roundtrip(rows)


def test_kd_training_loop_on_the_default_model(model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        model.eval()
        rows = teacher_rows(model, tokenizer, [
            ("What is the capital of France?", "The capital of France is Paris."),
            ("Give one word for happy.", "Joyful."),
        ])
        batch = batch_from_rows(rows, tokenizer)
        # sanity: the teacher's own top-1 mostly is the stored token; its logprob matches the stored one
        assert (batch["topk_ids"][..., 0] == batch["target_ids"])[batch["mask"]].float().mean() > 0.3

        # the student: the teacher with its last block perturbed. Only that block
        # trains (the rest is frozen) so that 5 steps stay cheap on a shared CPU.
        model.requires_grad_(False)
        block = model.model.layers[-1]
        with torch.no_grad():
            for param in block.parameters():
                if param.dim() == 2:
                    param.add_(torch.randn_like(param) * param.std() * 0.5)
        block.requires_grad_(True)
        model.train()
        optimizer = torch.optim.AdamW(block.parameters(), lr=1e-4)
        losses, kls = [], []
        for step in range(5):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            logits = batch["gather"](out.logits)
            loss, parts = kd_loss(logits, batch["topk_ids"], batch["topk_logprobs"], batch["target_ids"], batch["mask"], alpha=0.5)
            if step == 0:
                # HF's own shifted CE over `labels` is our CE on the gathered positions: the alignment agrees
                assert parts["ce"] == pytest.approx(float(out.loss.detach()), rel=1e-4)
                assert parts["kl"] > 1e-3
            assert torch.isfinite(loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            kls.append(parts["kl"])
        print(f"kd training: losses {[round(x, 4) for x in losses]}, kl {[round(x, 4) for x in kls]}")
        assert all(math.isfinite(x) for x in losses)
        assert losses[-1] < losses[0], losses
        assert kls[-1] < kls[0], kls
    finally:
        torch.set_num_threads(threads)


def test_pure_modules_import_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys, distillery.tokenizer_id, distillery.kd_loss\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'fsspec', 'prefect', 'vllm', 'numpy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]", out.stdout
