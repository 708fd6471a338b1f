"""bench/scale.py part 2: generation, the in-memory path against the staged path, side by
side in one process on one engine (same prompts, same settings, prefix cache reset before
each side, every batch really generated: the batch cache is bypassed)."""

from __future__ import annotations

import os
import tempfile
import time

os.environ["PREFECT_TASKS_REFRESH_CACHE"] = "true"  # every batch must generate


def side_by_side(rows: int, max_tokens: int = 4, stage_rows: int = 5_000, repeats: int = 1,
                 paths: tuple[str, ...] = ("in-memory", "staged")) -> dict:
    """Completions per second of each path in `paths` (alternating, `repeats` times), wall
    seconds, and this process's peak RSS (engine included)."""
    from prefect import flow

    from distillery.adapters.engine import EngineSpec, get_engine, prompt_lengths
    from distillery.adapters.storage import open_dataset
    from distillery.generation import sampling_kwargs
    from distillery.recipe import build_recipe
    from distillery.schema import ROW_SCHEMA
    from distillery.stages.engine import Fit, Generate, staged_schema
    from distillery.stages.staged import encode
    from distillery.stages.contract import StagedFile
    from distillery.stages.prompts import PROMPT_SCHEMA
    from generation import make_rows
    from tasks.generate import EngineBatches, generate
    from tasks.stages import run_stage

    recipe = build_recipe({"sampling": {"max_tokens": max_tokens, "temperature": 0.0, "seed": 0}, "judge": {"enabled": False}})
    teacher, s = recipe.teacher, recipe.sampling
    prompts = make_rows(rows, system=None)
    spec = EngineSpec.from_teacher(teacher)
    params = sampling_kwargs(s.n, s.temperature, s.top_p, s.max_tokens, s.seed)
    store = open_dataset(tempfile.mkdtemp(prefix="distillery-scale-engine-"))
    inputs = []
    for i in range(0, rows, stage_rows):  # the prompts as the render stage leaves them
        data, sha = encode(prompts[i : i + stage_rows], PROMPT_SCHEMA)
        path = f"_temporary/b/render/part-{i // stage_rows:05d}.parquet"
        store.write(path, data)
        inputs.append([StagedFile(path, sha, len(data), len(prompts[i : i + stage_rows]))])
    staged = staged_schema(ROW_SCHEMA)

    sides = [side + " " * k for k in range(repeats) for side in paths]  # alternating

    @flow(name="bench-scale-engine")
    def both() -> dict:
        engine = get_engine(spec)
        times = {}
        for side in sides:
            engine.llm.reset_prefix_cache()
            started = time.perf_counter()
            if side.strip() == "in-memory":
                out, _, _ = generate(prompts, teacher, recipe.teachers())
                done = len(out)
            else:  # the length check too, as generate() does it inside
                root = f"_temporary/{side.strip()}-{len(times)}"
                fit = Fit(tuple((n, m, sy, p.max_tokens) for n, m, sy, p in recipe.teachers()), teacher.max_model_len, count=prompt_lengths)
                fitted = run_stage(store, root, fit, inputs)
                stage = Generate(teacher.name, teacher.model, teacher.system_prompt, params, spec.__dict__, teacher.batch_size,
                                 staged, complete=EngineBatches(teacher.name, spec, params))
                results = run_stage(store, root, stage, [[r.files[0]] for r, _ in fitted], in_flow=True)
                done = sum(r.rows_out for r, _ in results)
            times[side] = (time.perf_counter() - started, done)
        return times

    times = both()
    per_side = {}
    for side, (seconds, done) in times.items():
        per_side.setdefault(side.strip(), []).append(done / seconds)
    best = {side: max(v) for side, v in per_side.items()}
    from distillery.adapters.worker import peak_rss_mib

    return {"engine_rows": rows, "max_tokens": max_tokens, "stage_rows": stage_rows,
            "completions_per_second": {k: [round(x, 1) for x in v] for k, v in per_side.items()},
            "seconds": {side.strip(): round(seconds, 1) for side, (seconds, _) in times.items()},
            "peak_rss_mib": peak_rss_mib(),
            "staged_vs_in_memory": round(best["staged"] / best["in-memory"], 4) if len(best) == 2 else None}
