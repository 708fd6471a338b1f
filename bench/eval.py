"""Judged pairs per second of the pairwise judge with and without the rubric as a shared
prefix (vLLM's automatic prefix caching), on the same pairs and the same engine:

  shared     `distillery.judge.pairwise_messages`: system message, rubric, then the item,
             as the flows build it; every prompt starts with the same ~700 tokens
  unshared   the same text with the item first and the rubric after it, so no two prompts
             share more than the system message (less than one KV-cache block)

Pairs: real seed tasks (instruction + first instance's input), each with its own
human-written output and the output of another seed task; judged in both orders
(2 prompts a pair), greedy, output held to A / B / tie (structured outputs).
One engine, prefix caching on; each condition warmed up once, then the two are timed
alternately (shared, unshared, shared, unshared) with the prefix cache reset before every
timed run, and the best run of each is reported.

    nice .venv/bin/python bench/eval.py --pairs 64
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEEDS = ROOT / "data" / "self_instruct_seed_tasks.jsonl"

# MT-Bench / AlpacaEval-style pairwise rubric (657 tokens with SmolLM2's tokenizer).
RUBRIC = """You will compare two responses, A and B, written by AI assistants for the same user instruction. Decide which response better satisfies the user, following the procedure and criteria below exactly.

How to compare:
1. Read the instruction and any input carefully. Work out what the user actually needs: the task, the expected form of the answer, any constraints on length, style, format or language, and any facts the answer must rely on.
2. Before looking at the responses, think about what an excellent answer would contain, so that you judge the responses against the task and not against each other's wording.
3. Read response A in full, then response B in full. Note for each where it succeeds and where it fails.
4. Compare them criterion by criterion, in the order of importance given below. A serious failure on an earlier criterion outweighs small advantages on later ones.

Criteria, most important first:
- Instruction following: does the response do what was asked, all of it, and respect every explicit constraint (number of items, length, format, tone, audience)? A response that answers a different question is worse than a short response that answers the right one.
- Correctness and honesty: are the facts, calculations, code and reasoning correct? Does it avoid inventing sources, numbers or details? Does it admit uncertainty when the answer is not known, instead of guessing confidently? Penalize any factual error in proportion to how much it would mislead the user.
- Helpfulness: does it solve the user's problem in a way the user can act on? Prefer concrete, specific and relevant content over generic advice. For open-ended requests, prefer answers that are thoughtful and complete; for closed questions, prefer the direct answer.
- Depth and completeness: does it cover the points an expert would expect, with appropriate detail, without padding? Missing an essential step is worse than missing a nice-to-have remark.
- Clarity and organization: is it easy to read, well structured, and free of repetition and irrelevant text? Formatting should help the reader, not decorate.
- Safety: harmful, deceptive or inappropriate content makes a response worse regardless of its other qualities.

Biases to avoid:
- Position: the order in which the responses appear must not influence your decision. Response A is not better because it comes first, nor worse.
- Length: a longer response is not better because it is longer. Extra text that adds no value, restates the question or pads the answer counts against it. A short response that is complete and correct can be the better one.
- Style: confident tone, polished formatting or the use of lists and headings do not make content correct. Judge the substance.
- Names and self-description: ignore any claims a response makes about its own quality or about the other response.

Tie rule: answer "tie" only when the two responses are of genuinely equal quality after applying every criterion above, or when both fail the instruction equally badly. If one is even slightly better on the most important criterion where they differ, choose it. Do not use "tie" to avoid a decision.
"""


def load_pairs(n: int) -> list[dict]:
    """n seed tasks, each with its own output (`own`) and another seed task's output (`other`)."""
    tasks = []
    for line in SEEDS.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        inst = row["instances"][0]
        if not inst.get("output", "").strip():
            continue
        prompt = row["instruction"] + (f"\n\n{inst['input']}" if inst.get("input", "").strip() else "")
        tasks.append({"id": row["id"], "prompt": prompt, "output": inst["output"]})
    if n > len(tasks):
        raise SystemExit(f"--pairs {n}: only {len(tasks)} seed tasks have an output")
    half = len(tasks) // 2  # the other answer comes from a seed task far away in the file
    return [{"id": t["id"], "prompt": t["prompt"], "own": t["output"], "other": tasks[(i + half) % len(tasks)]["output"]}
            for i, t in enumerate(tasks[:n])]


def item_first_messages(rubric: str, prompt: str, first: str, second: str) -> list[dict]:
    """`pairwise_messages`' content with the item first and the rubric after it: the prompts
    share only the system message, so prefix caching has nothing to reuse."""
    from distillery.judge import JUDGE_SYSTEM, fence

    user = (
        f"{fence('INSTRUCTION', prompt)}\n\n{fence('RESPONSE A', first)}\n\n{fence('RESPONSE B', second)}\n\n"
        f"{rubric}\nTwo responses answer the same instruction. Which is better? Reply with exactly "
        "one of: A, B, tie."
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def conversations(pairs: list[dict], build) -> list[list[dict]]:
    convs = []
    for p in pairs:  # both orders, as `pairwise_verdicts` asks them
        convs.append(build(RUBRIC, p["prompt"], p["own"], p["other"]))
        convs.append(build(RUBRIC, p["prompt"], p["other"], p["own"]))
    return convs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="recipe model name (resolve_model)")
    ap.add_argument("--rounds", type=int, default=2, help="timed runs of each condition, alternating")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / f"eval-{time.strftime('%Y%m%d')}.json"))
    args = ap.parse_args()

    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from distillery.adapters.engine import EngineSpec, close_engines, get_engine
    from distillery.judge import PAIRWISE_CHOICES, pairwise_messages, swap_verdict

    pairs = load_pairs(args.pairs)
    conditions = {"shared": conversations(pairs, pairwise_messages), "unshared": conversations(pairs, item_first_messages)}

    started = time.perf_counter()
    engine = get_engine(EngineSpec(model=args.model, max_model_len=4096))
    engine_start_s = time.perf_counter() - started
    llm = engine.llm
    cache_config = llm.llm_engine.vllm_config.cache_config
    caching = bool(cache_config.enable_prefix_caching)
    print(f"engine: {args.model} started in {engine_start_s:.1f} s; enable_prefix_caching={caching}, "
          f"block_size={cache_config.block_size}", flush=True)
    if not caching:
        raise SystemExit("prefix caching is off in this engine; the comparison would measure nothing")

    tok = engine.tokenizer
    rubric_tokens = len(tok.encode(RUBRIC, add_special_tokens=False))
    lengths = {name: engine.count_prompt_tokens(convs) for name, convs in conditions.items()}
    shared_head = engine.count_prompt_tokens([pairwise_messages(RUBRIC, "", "", "")])[0]
    print(f"{len(pairs)} pairs, {2 * len(pairs)} prompts a condition; rubric {rubric_tokens} tokens; "
          f"mean prompt tokens: " + ", ".join(f"{k} {sum(v) / len(v):.0f}" for k, v in lengths.items()), flush=True)

    params = SamplingParams(n=1, temperature=0.0, max_tokens=4, structured_outputs=StructuredOutputsParams(choice=PAIRWISE_CHOICES))

    def run(convs):
        return llm.chat(convs, params, use_tqdm=False)

    for name, convs in conditions.items():  # warm-up: grammar compilation, first batch shapes
        run(convs[:8])
    runs: dict[str, list[dict]] = {name: [] for name in conditions}
    verdicts: dict[str, list[str]] = {}
    for r in range(args.rounds):
        for name, convs in conditions.items():
            llm.reset_prefix_cache()  # each timed run gains only from sharing within its own batch
            start = time.perf_counter()
            outputs = run(convs)
            seconds = time.perf_counter() - start
            prompt_tokens = sum(len(o.prompt_token_ids) for o in outputs)
            cached = sum(o.num_cached_tokens or 0 for o in outputs)
            answers = [o.outputs[0].text for o in outputs]
            verdicts[name] = [swap_verdict(answers[2 * k], answers[2 * k + 1]) for k in range(len(pairs))]
            runs[name].append({
                "seconds": round(seconds, 3),
                "pairs_per_s": round(len(pairs) / seconds, 2),
                "prompt_tokens": prompt_tokens,
                "cached_tokens": cached,
                "cache_hit_rate": round(cached / prompt_tokens, 4),
                "answers": {c: answers.count(c) for c in PAIRWISE_CHOICES},
            })
            print(f"  round {r + 1} {name:8s} {seconds:6.1f} s  {len(pairs) / seconds:6.2f} pairs/s  "
                  f"cache hit {cached / prompt_tokens:6.1%}", flush=True)

    results = {}
    for name, rs in runs.items():
        best = min(rs, key=lambda x: x["seconds"])
        results[name] = {
            "best_seconds": best["seconds"],
            "pairs_per_s": best["pairs_per_s"],
            "prompts_per_s": round(2 * len(pairs) / best["seconds"], 2),
            "prompt_tokens_mean": round(sum(lengths[name]) / len(lengths[name]), 1),
            "prompt_tokens_per_s": round(best["prompt_tokens"] / best["seconds"], 0),
            "cache_hit_rate": best["cache_hit_rate"],
            "verdicts": {v: verdicts[name].count(v) for v in ("x", "y", "tie", "inconsistent")},
            "runs": rs,
        }
    ratio = round(results["shared"]["pairs_per_s"] / results["unshared"]["pairs_per_s"], 2)

    print()
    print(f"| condition | pairs/s (best of {args.rounds}) | prompt tokens per item (mean) | prefix-cache hit rate | verdicts own/other/tie/inconsistent |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, r in results.items():
        v = r["verdicts"]
        print(f"| {name} | {r['pairs_per_s']:.2f} | {r['prompt_tokens_mean']:.0f} | {r['cache_hit_rate']:.1%} | "
              f"{v['x']}/{v['y']}/{v['tie']}/{v['inconsistent']} |")
    print(f"shared / unshared: {ratio}x")

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "model": args.model,
        "pairs": len(pairs),
        "prompts_per_condition": 2 * len(pairs),
        "rounds": args.rounds,
        "enable_prefix_caching": caching,
        "block_size": cache_config.block_size,
        "rubric_tokens": rubric_tokens,
        "shared_head_tokens": shared_head,  # system message + rubric + fixed wording, empty item
        "engine_start_s": round(engine_start_s, 1),
        "results": results,
        "ratio_shared_over_unshared": ratio,
    }, indent=2))
    print(f"written {args.out}")
    close_engines()


if __name__ == "__main__":
    main()
