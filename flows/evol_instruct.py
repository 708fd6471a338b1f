"""The `evol_instruct` flow: Evol-Instruct (WizardLM; Xu et al., 2023).

Every seed starts a chain. Each generation (`evol.depth` of them) rewrites every chain's
current prompt once, with an operation drawn per chain: in-depth (add a constraint,
deepen, concretize, more reasoning steps, complicate the input) or, with probability
`evol.breadth_share`, in-breadth (a new, rarer prompt in the same domain); one engine
batch per generation, cached. Failed evolutions are eliminated with their reason (stage
'synthesize': empty / too short or long / cut off, copies the template's words, no
information gain over the parent); the chain then keeps its parent, which is evolved
again, by a fresh operation, in the next generation (the paper puts failed ones back in the pool).

Which evolutions become rows: every surviving evolution, of every generation (the paper
merges all epochs). The seeds themselves do not: they are the input, not the output.

Refusals (check (c): the teacher's answer says sorry and is short) are checked on the
judged answers (the `refusal` stage, between the judge and the score filter): the
response that would be published is the one inspected, and no prompt is answered twice. A refused prompt is
rejected at stage 'filter' with reason 'refusal'. Its chain is not rolled back (the
check runs after evolution): a later generation may have evolved from it.

`evol.candidates_uri` adds evolved prompts from elsewhere, each with its parent: they go
through the same elimination as generation 0 and are not evolved further.
"""

from __future__ import annotations

import json
import random
from collections import Counter

from prefect import flow, get_run_logger

from distillery.recipes.evol import EvolInstructRecipe, choose_operation, eliminate, evolution_messages, parse_evolved
from distillery.prompts import user_text
from distillery.recipes.rounds import Rounds, Verdict
from distillery.stages.synthesis import Refusals
from flows.build import start_synthesis, synthesizing, unchanged
from flows.staged import staged_row_schema, staged_synthesis
from tasks.synthesis import run_batches


def evolve(recipe: EvolInstructRecipe, pool: list[dict], given: list[dict], stages: dict[str, float]
           ) -> tuple[list[dict], list[dict], list[dict]]:
    """(evolved seeds, eliminated candidates, per-generation counts). Runs inside a flow."""
    cfg = recipe.evol
    found = Rounds()
    limits = {"min_words": cfg.min_words, "max_words": cfg.max_words, "threshold": cfg.no_gain_threshold}

    def verdict(item: tuple) -> Verdict:
        _, text, parent, finish, error, _ = item
        if error:
            return Verdict(False, "prompt_too_long", error)
        if not parent.strip():
            return Verdict(False, "no_parent", "the candidate names no parent prompt to compare with")
        return eliminate(text, parent, finish_reason=finish, **limits)

    def keep(item: tuple, v: Verdict) -> dict:
        return {"seed_id": item[0], "instruction": item[1], "input": "", "lineage": json.dumps(item[5])}

    def reject(item: tuple, v: Verdict) -> dict:
        return {"seed_id": item[0], "prompt": item[1], "lineage": json.dumps(item[5])}

    def judge_round(number: int, items: list[tuple[str, str, str, str | None, str | None, dict]]) -> list[bool]:
        """items: (id, evolved text, parent text, finish_reason, error, lineage); True where kept."""
        return found.check(number, items, verdict, keep, reject)

    if given:  # a candidate whose parent is a seed of the pool is linked to it
        seed_of = {user_text(s["instruction"], s.get("input", "")): s["seed_id"] for s in pool}
        judge_round(0, [(f"evol-given-{n}", parse_evolved(c["instruction"]), c["input"], None, None,
                         {"recipe": "evol_instruct", "root": seed_of.get(c["input"]), "parent": seed_of.get(c["input"]),
                          "operation": "given", "depth": 1, "generation": 0, "source": cfg.candidates_uri, "row": c["seed_id"]})
                        for n, c in enumerate(given)])

    # A chain: the root seed, and its current (last surviving) prompt, with that prompt's id and depth.
    chains = [{"root": s["seed_id"], "id": s["seed_id"], "text": user_text(s["instruction"], s.get("input", "")), "depth": 0}
              for s in pool]
    params = {"n": 1, "temperature": cfg.temperature, "top_p": recipe.sampling.top_p, "max_tokens": cfg.max_tokens}
    for generation in range(1, cfg.depth + 1):
        ops = [choose_operation(random.Random(f"{cfg.seed}/{c['root']}/{generation}"), cfg.operations, cfg.breadth_share)
               for c in chains]
        convs = [evolution_messages(op, c["text"]) for op, c in zip(ops, chains)]
        out = run_batches(convs, recipe, {**params, "seed": cfg.seed * 1_000_003 + generation}, "evolve-instructions", stages)
        items = []
        for c, op, o in zip(chains, ops, out):
            lineage = {"recipe": "evol_instruct", "root": c["root"], "parent": c["id"], "operation": op,
                       "depth": c["depth"] + 1, "generation": generation, "source": "teacher"}
            items.append((f"evol-{c['root']}-g{generation}", parse_evolved(o.get("response") or ""), c["text"],
                          o.get("finish_reason"), o.get("error"), lineage))
        for c, ok, (ident, text, *_rest) in zip(chains, judge_round(generation, items), items):
            if ok:  # the chain moves on; a failed evolution leaves it at its parent
                c.update(id=ident, text=text, depth=c["depth"] + 1)
    return found.kept, found.rejected, found.rounds


@flow(name="evol_instruct", log_prints=True, validate_parameters=True)
def evol_instruct(recipe: EvolInstructRecipe) -> dict:
    """Evolve the seed pool's instructions, eliminate failed evolutions, answer and publish the rest."""
    logger = get_run_logger()
    cfg = recipe.evol
    b, pool, given = start_synthesis(recipe, cfg.candidates_uri, "parent")
    if b.published:
        return unchanged(recipe, b.published)
    with synthesizing(b.stages):
        new, eliminated, rounds = evolve(recipe, pool.seeds, given.seeds, b.stages)
    logger.info("evol-instruct: %d evolved prompts kept from %d candidates over %d generations",
                len(new), len(new) + len(eliminated), cfg.depth)
    depths = Counter(json.loads(s["lineage"])["depth"] for s in new)
    synthesis = {"pool": len(pool.seeds), "pool_rejects": len(pool.rejects), "candidate_rejects": len(given.rejects),
                 "depth": cfg.depth, "rounds": rounds, "kept_by_depth": {str(k): v for k, v in sorted(depths.items())}}
    # Rows in: every evolution candidate, plus every unusable seed or candidate record (rejected at load).
    # Refusals are checked on the judged answers, before the score filter.
    refusals = Refusals(cfg.refusal_max_words, staged_row_schema(recipe))
    return staged_synthesis(recipe, b, new, [*pool.rejects, *given.rejects, *eliminated], extra={"synthesis": synthesis},
                            diversity_of="prompt", seed_texts=[user_text(s["instruction"], s.get("input", "")) for s in pool.seeds],
                            after_judge=refusals)
