"""The `textbook` flow: textbook sections and solved exercises (Phi-1; Gunasekar et al.,
2023, "Textbooks Are All You Need").

The seeds are every topic crossed with every audience (no source file: `source` is
unused). Each pair gives one row asking for a textbook section, and one request for
`textbook.exercises_per_section` exercises (one engine batch for all pairs, cached). The
exercises are parsed and checked (empty, word bounds, cut off by max_tokens, more than
were asked for), each rejected one with its reason at stage 'synthesize'; each kept one
becomes a row asking the teacher for a worked solution. Exercises given in the recipe
(`textbook.extra_exercises`) are checked the same way first, as round 0.

Sections and exercises then go through the common stages (teacher answers, dedup, judge,
shards). The judge's default rubric is the Phi-1 filter (educational value for a student
of the topic); `judge.min_score` keeps the rows it values. Every row's lineage records
its topic, audience and kind (section or exercise).
"""

from __future__ import annotations

import hashlib
import json

from prefect import flow, get_run_logger

from distillery.recipes.rounds import Rounds, Verdict
from distillery.recipes.textbook import TextbookRecipe, check_exercise, exercise_seed, exercises_request, section_seed, seed_pairs, split_exercises
from flows.build import open_build, synthesizing, unchanged
from flows.staged import staged_synthesis
from tasks.synthesis import run_batches


def write_exercises(recipe: TextbookRecipe, pairs: list[dict], stages: dict[str, float]) -> tuple[list[dict], list[dict], list[dict]]:
    """(exercise seeds, rejected exercises, per-round counts). Runs inside a flow."""
    cfg = recipe.textbook
    checked = Rounds()

    def verdict(item: tuple) -> Verdict:
        _, _, text, _, _, reason, detail = item
        return Verdict(False, reason, detail) if reason is not None else check_exercise(text, cfg.min_words, cfg.max_words)

    def keep(item: tuple, v: Verdict) -> dict:
        seed_id, pair, text, source, index, _, _ = item
        return exercise_seed(pair, text, seed_id, source, index)

    def reject(item: tuple, v: Verdict) -> dict:
        seed_id, pair, text, source, index, _, _ = item
        return {"seed_id": seed_id, "prompt": text, "lineage": exercise_seed(pair, text, seed_id, source, index)["lineage"]}

    def check_round(number: int, items: list[tuple]) -> None:
        """items: (id, pair, exercise text, source, index, reason or None, detail)."""
        checked.check(number, items, verdict, keep, reject)

    if cfg.extra_exercises:
        check_round(0, [(f"textbook-given-{n}", {"pair": "given", "topic": e.topic, "audience": e.audience},
                         e.exercise.strip(), "recipe", n, None, None) for n, e in enumerate(cfg.extra_exercises)])
    if cfg.exercises_per_section == 0:
        return checked.kept, checked.rejected, checked.rounds
    params = {"n": 1, "temperature": cfg.temperature, "top_p": recipe.sampling.top_p, "max_tokens": cfg.max_tokens,
              "seed": cfg.seed}
    out = run_batches([exercises_request(p, cfg.exercises_per_section) for p in pairs], recipe, params, "propose-exercises", stages,
                      continue_final=True)
    items = []
    for pair, o in zip(pairs, out):
        request_id = f"textbook-{pair['pair']}-exercises"
        if o.get("error"):
            items.append((request_id, pair, "", "teacher", None, "prompt_too_long", o["error"]))
            continue
        found = split_exercises(o["response"])
        if not found:  # the request itself is the row that failed
            items.append((request_id, pair, o["response"].strip(), "teacher", None, "no_exercises",
                          "no 'Exercise N:' item could be parsed from the teacher's reply"))
        for k, (text, ended) in enumerate(found, start=1):
            ident = f"textbook-{pair['pair']}-ex{k}"
            if k > cfg.exercises_per_section:
                items.append((ident, pair, text, "teacher", k, "over_count",
                              f"exercise {k} of {len(found)}; {cfg.exercises_per_section} were asked for"))
            elif not ended and o.get("finish_reason") == "length":
                items.append((ident, pair, text, "teacher", k, "truncated", "the teacher hit max_tokens inside this exercise"))
            else:
                items.append((ident, pair, text, "teacher", k, None, None))
    check_round(1, items)
    return checked.kept, checked.rejected, checked.rounds


@flow(name="textbook", log_prints=True, validate_parameters=True)
def textbook(recipe: TextbookRecipe) -> dict:
    """Write textbook sections and solved exercises for every topic and audience, judged for educational value."""
    logger = get_run_logger()
    cfg = recipe.textbook
    pairs = seed_pairs(cfg.topics, cfg.audiences)
    sections = [section_seed(p) for p in pairs]
    # What the build reads is the recipe itself: the digest is over its seeds.
    digest = hashlib.sha256(json.dumps([pairs, [e.model_dump() for e in cfg.extra_exercises]], sort_keys=True).encode()).hexdigest()
    b = open_build(recipe, digest)
    if b.published:
        return unchanged(recipe, b.published)
    with synthesizing(b.stages):
        exercises, rejected, rounds = write_exercises(recipe, pairs, b.stages)
    logger.info("textbook: %d pairs, %d sections, %d exercises kept, %d rejected", len(pairs), len(sections), len(exercises), len(rejected))
    synthesis = {"pairs": len(pairs), "sections": len(sections), "exercises_asked": len(pairs) * cfg.exercises_per_section,
                 "exercises_kept": len(exercises), "rounds": rounds}
    # Rows in: every section prompt, every exercise the teacher or the recipe wrote, every request that gave none.
    return staged_synthesis(recipe, b, [*sections, *exercises], rejected, extra={"synthesis": synthesis}, diversity_of="response")
