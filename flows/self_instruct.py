"""The `self_instruct` flow: Self-Instruct (Wang et al., 2023), the method behind Alpaca.

Rounds until `self_instruct.target` new instructions are kept: each round sends
`requests_per_round` prompts, each showing the teacher 8 pool tasks (6 human, 2
machine-written), and parses the tasks it continues the list with. Candidates are
filtered (length, the paper's keyword blacklist, punctuation, novelty against the
whole pool: ROUGE-L < 0.7 with a MinHash prefilter); kept ones join the pool. The
new instructions then go through the common stages (teacher answers, dedup, judge,
shards); every row records its lineage, every rejected candidate its reason.
"""

from __future__ import annotations

import json
import random
from collections import Counter

from prefect import flow, get_run_logger, task

from distillery.adapters.storage import read_many, storage_options
from distillery.errors import DistilleryError
from distillery.recipe import SelfInstructRecipe
from distillery.self_instruct import NoveltyIndex, basic_filter, parse, pick_context, request
from distillery.sources import ParsedSource, parse_sources
from flows.distill import finish_rows, publish_rows, start_build, timed, unchanged
from tasks.synthesis import run_batches


@task(name="load-candidates")
def load_candidates(uri: str, storage) -> ParsedSource:
    files = read_many(uri, "candidates file", storage.retries, storage.retry_backoff_seconds,
                      **storage_options(storage.credentials_block, storage.endpoint_url))
    return parse_sources(files, instruction_column="instruction", input_column=None, id_column=None)


class SelfInstructError(DistilleryError):
    """A Self-Instruct build that cannot make progress as configured."""


def synthesize(recipe: SelfInstructRecipe, pool: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(new seeds, rejected candidates, per-round counts). Runs inside a flow."""
    cfg = recipe.self_instruct
    rng = random.Random(cfg.seed)
    novelty = NoveltyIndex(threshold=cfg.rouge_threshold)
    for seed in pool:
        novelty.add(seed["instruction"], seed["seed_id"])
    human = [(s["seed_id"], s["instruction"]) for s in pool]
    machine: list[tuple[str, str]] = []
    kept, rejected, rounds = [], [], []

    def judge_round(number: int, proposals: list[tuple[str, dict]], too_long: int = 0) -> None:
        reasons: Counter[str] = Counter()
        before = len(kept)
        for text, lineage in proposals:
            ident = f"self-instruct-r{number}-{len(kept) + len(rejected)}"
            verdict = basic_filter(text, cfg.min_words, cfg.max_words)
            if verdict.keep:
                verdict = novelty.check(text)
            if not verdict.keep:
                reasons[verdict.reason] += 1
                rejected.append({"seed_id": ident, "stage": "synthesize", "reason": verdict.reason, "detail": verdict.detail,
                                 "prompt": text, "lineage": json.dumps(lineage)})
                continue
            novelty.add(text, ident)
            machine.append((ident, text))
            kept.append({"seed_id": ident, "instruction": text, "input": "", "lineage": json.dumps(lineage)})
        rounds.append({"round": number, "proposed": len(proposals), "kept": len(kept) - before,
                       "rejected_by_reason": dict(sorted(reasons.items())), "requests_too_long": too_long})

    if cfg.candidates_uri:
        given = load_candidates(cfg.candidates_uri, recipe.storage)
        judge_round(0, [(s["instruction"], {"recipe": "self_instruct", "round": 0, "source": cfg.candidates_uri, "row": s["seed_id"]})
                        for s in given.seeds])
    params = {"n": 1, "temperature": cfg.temperature, "top_p": recipe.sampling.top_p, "max_tokens": cfg.max_tokens}
    for number in range(1, cfg.max_rounds + 1):
        if len(kept) >= cfg.target:
            break
        id_of = {t: i for i, t in [*human, *machine]}
        contexts = []
        for _ in range(cfg.requests_per_round):
            shown = pick_context([t for _, t in human], [t for _, t in machine], rng, cfg.human_in_context, cfg.machine_in_context)
            contexts.append((shown, [id_of[t] for t in shown]))
        conversations = [request(shown)[0] for shown, _ in contexts]
        out = run_batches(conversations, recipe, {**params, "seed": cfg.seed * 1_000_003 + number}, "propose-instructions",
                          continue_final=True)
        proposals = [(inst, {"recipe": "self_instruct", "round": number, "in_context": shown_ids, "source": "teacher"})
                     for (_, shown_ids), o in zip(contexts, out) for inst in parse(o.get("response", ""))]
        errors = [o["error"] for o in out if o.get("error")]
        if len(errors) == len(out):
            raise SelfInstructError(f"self_instruct: no proposal prompt of round {number} fits the teacher's context ({errors[0]}); "
                                    "raise teacher.max_model_len, lower self_instruct.max_tokens, or use shorter seed tasks")
        judge_round(number, proposals, len(errors))
    return kept, rejected, rounds


@flow(name="self_instruct", log_prints=True, validate_parameters=True)
def self_instruct(recipe: SelfInstructRecipe) -> dict:
    """Bootstrap new instructions from the seed pool, answer them, and publish the dataset."""
    logger = get_run_logger()
    b, pool = start_build(recipe)
    if b.published:
        return unchanged(recipe, b.published)
    with timed(b.stages, "synthesize"):
        new, rejected, rounds = synthesize(recipe, pool.seeds)
    logger.info("self-instruct: %d new instructions in %d rounds (target %d)", len(new), len(rounds), recipe.self_instruct.target)
    # Every proposed candidate is a row in: kept ones go on to the teacher, the rest are rejected with their reason.
    b = finish_rows(recipe, b, ParsedSource(seeds=new, rejects=rejected, digest=pool.digest))
    synthesis = {"pool": len(pool.seeds), "pool_rejects": len(pool.rejects), "target": recipe.self_instruct.target, "rounds": rounds}
    return publish_rows(recipe, b, extra={"synthesis": synthesis}, diversity_of="prompt",
                        seed_texts=[s["instruction"] for s in pool.seeds])
