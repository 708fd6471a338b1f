"""The `self_instruct` flow: Self-Instruct (Wang et al., 2023), the method behind Alpaca.

Rounds until `self_instruct.target` new instructions are kept (a round's surplus is
rejected as 'over_target', unanswered): each round sends
`requests_per_round` prompts, each showing the teacher 8 pool tasks (6 human, 2
machine-written), and parses the tasks it continues the list with. Candidates are
filtered (length, the paper's keyword blacklist, punctuation, novelty against the
whole pool: ROUGE-L < 0.7 with a MinHash prefilter); kept ones join the pool.

Then the teacher writes an input for every new instruction (input first, shown pool
tasks with their inputs; `<noinput>` when it needs none), and the instructions with
their inputs go through the common stages (teacher answers, dedup, judge, shards):
Alpaca's (instruction, input, output) rows. Every row records its lineage, every
rejected candidate its reason.
"""

from __future__ import annotations

import json
import random
from collections import Counter

from prefect import flow, get_run_logger

from distillery.errors import DistilleryError
from distillery.recipes.rounds import Rounds, Verdict
from distillery.recipes.self_instruct import (
    INPUT_STOP,
    NoveltyIndex,
    SelfInstructRecipe,
    basic_filter,
    check_input,
    input_request,
    parse,
    parse_input,
    pick_context,
    pick_examples,
    request,
)
from flows.build import start_synthesis, synthesizing, unchanged
from flows.staged import staged_synthesis
from tasks.synthesis import run_batches


class SelfInstructError(DistilleryError):
    """A Self-Instruct build that cannot make progress as configured."""


def synthesize(recipe: SelfInstructRecipe, pool: list[dict], given: list[dict], stages: dict[str, float]
               ) -> tuple[list[dict], list[dict], list[dict]]:
    """(new seeds, rejected candidates, per-round counts); `given` are the candidates from
    `candidates_uri`, filtered first as round 0. Runs inside a flow."""
    cfg = recipe.self_instruct
    rng = random.Random(cfg.seed)
    novelty = NoveltyIndex(threshold=cfg.rouge_threshold)
    for seed in pool:
        novelty.add(seed["instruction"], seed["seed_id"])
    human = [(s["seed_id"], s["instruction"]) for s in pool]
    machine: list[tuple[str, str]] = []
    found = Rounds()

    def judge_round(number: int, proposals: list[tuple[str, dict]], too_long: int = 0) -> None:
        """proposals: (instruction, lineage)."""
        def ident() -> str:
            return f"self-instruct-r{number}-{len(found.kept) + len(found.rejected)}"

        def verdict(proposal: tuple[str, dict]) -> Verdict:
            if len(found.kept) >= cfg.target:  # the round's surplus: not filtered, not answered
                return Verdict(False, "over_target", f"self_instruct.target ({cfg.target}) was reached earlier in round {number}")
            v = basic_filter(proposal[0], cfg.min_words, cfg.max_words)
            return novelty.check(proposal[0]) if v.keep else v

        def keep(proposal: tuple[str, dict], v: Verdict) -> dict:
            text, lineage = proposal
            novelty.add(text, ident())
            machine.append((ident(), text))
            return {"seed_id": ident(), "instruction": text, "input": "", "lineage": json.dumps(lineage)}

        def reject(proposal: tuple[str, dict], v: Verdict) -> dict:
            return {"seed_id": ident(), "prompt": proposal[0], "lineage": json.dumps(proposal[1])}

        found.check(number, proposals, verdict, keep, reject, requests_too_long=too_long)

    if cfg.candidates_uri:
        judge_round(0, [(s["instruction"], {"recipe": "self_instruct", "round": 0, "source": cfg.candidates_uri, "row": s["seed_id"]})
                        for s in given])
    params = {"n": 1, "temperature": cfg.temperature, "top_p": recipe.sampling.top_p, "max_tokens": cfg.max_tokens}
    for number in range(1, cfg.max_rounds + 1):
        if len(found.kept) >= cfg.target:
            break
        id_of = {t: i for i, t in [*human, *machine]}
        contexts = []
        for _ in range(cfg.requests_per_round):
            shown = pick_context([t for _, t in human], [t for _, t in machine], rng, cfg.human_in_context, cfg.machine_in_context)
            contexts.append((shown, [id_of[t] for t in shown]))
        conversations = [request(shown)[0] for shown, _ in contexts]
        out = run_batches(conversations, recipe, {**params, "seed": cfg.seed * 1_000_003 + number}, "propose-instructions",
                          stages, continue_final=True)
        proposals = [(inst, {"recipe": "self_instruct", "round": number, "in_context": shown_ids, "source": "teacher"})
                     for (_, shown_ids), o in zip(contexts, out) for inst in parse(o.get("response", ""))]
        errors = [o["error"] for o in out if o.get("error")]
        if len(errors) == len(out):
            raise SelfInstructError(f"self_instruct: no proposal prompt of round {number} fits the teacher's context ({errors[0]}); "
                                    "raise teacher.max_model_len, lower self_instruct.max_tokens, or use shorter seed tasks")
        judge_round(number, proposals, len(errors))
    return found.kept, found.rejected, found.rounds


def write_inputs(recipe: SelfInstructRecipe, new: list[dict], pool: list[dict], stages: dict[str, float]
                 ) -> tuple[list[dict], list[dict], dict]:
    """Input-first instances: the teacher writes each new instruction's input (or <noinput>).
    Returns (instructions with their inputs, rejected ones, counts). Runs inside a flow."""
    cfg = recipe.self_instruct
    rng = random.Random(cfg.seed * 1_000_003 - 1)
    shown = [pick_examples(pool, rng, cfg.input_examples) for _ in new]
    params = {"n": 1, "temperature": cfg.input_temperature, "top_p": recipe.sampling.top_p, "max_tokens": cfg.input_max_tokens,
              "seed": cfg.seed, "stop": list(INPUT_STOP)}
    out = run_batches([input_request(ex, row["instruction"]) for row, ex in zip(new, shown)], recipe, params, "write-inputs",
                      stages, continue_final=True)
    kept, rejected, reasons = [], [], Counter()
    for row, examples, o in zip(new, shown, out):
        lineage = {**json.loads(row["lineage"]), "input_examples": [t["seed_id"] for t in examples]}
        if o.get("error"):
            verdict = Verdict(False, "input_prompt_too_long", o["error"])
            text = ""
        else:
            text = parse_input(o["response"])
            verdict = check_input(row["instruction"], text, o["finish_reason"], cfg.rouge_threshold)
        if not verdict.keep:
            reasons[verdict.reason] += 1
            raw = (o.get("response") or "")[:300]
            rejected.append({"seed_id": row["seed_id"], "stage": "synthesize", "reason": verdict.reason,
                             "detail": f"{verdict.detail}; input written: {raw!r}", "prompt": row["instruction"],
                             "lineage": json.dumps(lineage)})
            continue
        lineage["input"] = "teacher" if text else "none"
        kept.append({**row, "input": text, "lineage": json.dumps(lineage)})
    counts = {"asked": len(new), "with_input": sum(1 for r in kept if r["input"]), "no_input": sum(1 for r in kept if not r["input"]),
              "rejected_by_reason": dict(sorted(reasons.items()))}
    return kept, rejected, counts


@flow(name="self_instruct", log_prints=True, validate_parameters=True)
def self_instruct(recipe: SelfInstructRecipe) -> dict:
    """Bootstrap new instructions from the seed pool, write their inputs, answer them, and publish the dataset."""
    logger = get_run_logger()
    cfg = recipe.self_instruct
    b, pool, given = start_synthesis(recipe, cfg.candidates_uri)
    if b.published:
        return unchanged(recipe, b.published)
    if not pool.seeds:
        raise SelfInstructError(f"self_instruct: {recipe.source.uri} has no usable seed task ({len(pool.rejects)} rejected); "
                                "the pool needs at least one instruction")
    with synthesizing(b.stages):
        new, rejected, rounds = synthesize(recipe, pool.seeds, given.seeds, b.stages)
        inputs = None
        if cfg.generate_inputs and new:
            if not any((s.get("input") or "").strip() for s in pool.seeds):
                logger.warning("self-instruct: no seed task in %s has an input (source.input_column: %s), so the input "
                               "examples all say <noinput>", recipe.source.uri, recipe.source.input_column)
            new, no_input, inputs = write_inputs(recipe, new, pool.seeds, b.stages)
            rejected += no_input
    logger.info("self-instruct: %d new instructions in %d rounds (target %d)%s", len(new), len(rounds), cfg.target,
                f"; inputs: {inputs}" if inputs else "")
    synthesis = {"pool": len(pool.seeds), "pool_rejects": len(pool.rejects), "candidate_rejects": len(given.rejects),
                 "target": cfg.target, "rounds": rounds, "inputs": inputs}
    # Rows in: every proposed candidate (kept ones go on to the teacher, the rest are rejected with
    # their reason), plus every unusable seed or candidate record (rejected at load).
    return staged_synthesis(recipe, b, new, [*pool.rejects, *given.rejects, *rejected], extra={"synthesis": synthesis},
                            diversity_of="instruction", seed_texts=[s["instruction"] for s in pool.seeds])
