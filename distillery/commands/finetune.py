"""`distillery finetune`: TRL's SFT on a published build, for a given number of steps, saved as a
model folder that vLLM (and so every evaluation flow) opens like any other local model.

Sized for the loop eval -> build -> fine-tune -> eval, not for a production run: one process,
no distributed setup. On a CPU machine it trains the default 135M model a few dozen steps in
minutes; on a GPU the same call uses it (TRL/transformers pick the device). TRL, datasets and
accelerate are the `train` extra (`pip install distillery[train]`).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass

from distillery.errors import DistilleryError


@dataclass
class FinetuneConfig:
    dataset: str  # a published build's folder (its data/ shards), or a JSONL/Parquet file with `messages`
    model: str = "smollm2-135m-instruct"
    output: str = "out/student"
    steps: int = 30
    learning_rate: float = 1e-4
    batch_size: int = 4
    max_length: int = 256
    seed: int = 0


def _load(dataset: str, cache_dir: str):
    from datasets import load_dataset

    if os.path.isdir(dataset):
        return load_dataset(dataset, split="train", cache_dir=cache_dir)
    kind = "parquet" if dataset.endswith((".parquet", ".pq")) else "json"
    return load_dataset(kind, data_files=dataset, split="train", cache_dir=cache_dir)


def finetune(cfg: FinetuneConfig) -> dict:
    """Train, save to cfg.output (model, tokenizer, distillery-finetune.json), return what happened."""
    try:
        from trl import SFTConfig, SFTTrainer
    except ImportError:
        raise DistilleryError("distillery finetune needs TRL: pip install 'distillery[train]' (trl, datasets, accelerate)") from None
    from distillery.adapters.models import resolve_model

    if not os.path.exists(cfg.dataset):
        raise DistilleryError(f"finetune: dataset {cfg.dataset} does not exist; give a published build's folder or a JSONL/Parquet file with a messages column")
    ds = _load(cfg.dataset, os.path.join(cfg.output, ".datasets-cache"))
    if "messages" not in ds.column_names:
        raise DistilleryError(f"finetune: {cfg.dataset} has no 'messages' column (columns: {ds.column_names}); train on a distill build or an OpenAI-format export")
    ds = ds.select_columns(["messages"])
    if len(ds) == 0:
        raise DistilleryError(f"finetune: {cfg.dataset} holds no rows")
    args = SFTConfig(
        output_dir=os.path.join(cfg.output, ".trainer"), max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
        max_length=cfg.max_length, learning_rate=cfg.learning_rate, lr_scheduler_type="constant", logging_steps=max(1, cfg.steps // 10),
        report_to=[], save_strategy="no", seed=cfg.seed, bf16=False, gradient_checkpointing=False, dataloader_num_workers=0,
        disable_tqdm=True,
    )
    started = time.perf_counter()
    trainer = SFTTrainer(model=resolve_model(cfg.model), args=args, train_dataset=ds)
    result = trainer.train()
    trainer.save_model(cfg.output)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if not losses or not all(math.isfinite(x) for x in losses):
        raise DistilleryError(f"finetune: the training loss is not finite ({losses[-3:]}); lower --lr")
    info = {"base_model": cfg.model, "dataset": cfg.dataset, "rows": len(ds), "steps": result.global_step,
            "learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size, "max_length": cfg.max_length,
            "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4), "seconds": round(time.perf_counter() - started, 1)}
    with open(os.path.join(cfg.output, "distillery-finetune.json"), "w") as fh:
        json.dump(info, fh, indent=2)
    return info
