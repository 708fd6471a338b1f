"""Judged rows per second for the three absolute-judging methods, on the same rows
and the same judge model (the default SmolLM2-135M-Instruct on vLLM):

  free_text   unconstrained answer, then parsed
  structured  answer held to the format by vLLM structured outputs (regex)
  logprob     one output token after "Score: ", expected value over digit logprobs

    .venv/bin/python bench/judge.py --rows 128
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--answer-tokens", type=int, default=64, help="max tokens of the answers being judged")
    ap.add_argument("--judge-tokens", type=int, default=64, help="max tokens of a free-text/structured judgement")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "judge.json"))
    args = ap.parse_args()

    from generation import make_rows

    from distillery.adapters.engine import EngineSpec, close_engines, get_engine
    from distillery.judge import absolute_messages, apply_judgements
    from distillery.recipe import JudgeConfig, TeacherConfig
    from tasks.judge import judge_params

    teacher = TeacherConfig(batch_size=max(args.rows, 1))
    engine = get_engine(EngineSpec.from_teacher(teacher))
    rows = make_rows(args.rows)
    answers = engine.chat([r["messages"] for r in rows], {"n": 1, "temperature": 0.7, "top_p": 0.95, "max_tokens": args.answer_tokens, "seed": 0})
    rows = [{**r, "response": a[0]["response"]} for r, a in zip(rows, answers)]

    results = {}
    for method in ("free_text", "structured", "logprob"):
        config = JudgeConfig(method=method, max_tokens=args.judge_tokens)
        params, extra = judge_params(config)
        convs = [absolute_messages(config.rubric, r["prompt"], r["response"], (), method) for r in rows]
        engine.chat(convs[:4], params, **extra)  # warm-up (grammar compilation for structured)
        engine.llm.reset_prefix_cache()
        start = time.perf_counter()
        outputs = engine.chat(convs, params, **extra)
        judged = apply_judgements(rows, [o[0] for o in outputs], "smollm2-135m-instruct", (), method)
        seconds = time.perf_counter() - start
        scores = [j["judge_score"] for j in judged]
        results[method] = {
            "seconds": round(seconds, 2),
            "rows_per_s": round(len(rows) / seconds, 1),
            "parse_failures": sum(s is None for s in scores),
            "output_tokens": sum(o[0]["completion_tokens"] for o in outputs),
        }
        print(f"{method:11s} {results[method]['rows_per_s']:8.1f} rows/s  parse failures {results[method]['parse_failures']:3d}/{len(rows)}  output tokens {results[method]['output_tokens']}", flush=True)
    base = results["free_text"]["rows_per_s"]
    for method in results:
        results[method]["speed_vs_free_text"] = round(results[method]["rows_per_s"] / base, 2)
    print("ratios vs free text:", {m: r["speed_vs_free_text"] for m, r in results.items()})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": args.rows, **results}, indent=2))
    close_engines()


if __name__ == "__main__":
    main()
