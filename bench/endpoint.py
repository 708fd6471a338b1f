"""Endpoint teachers: the same prompts through the in-process vLLM engine, through a real
`vllm serve` with Distillery's endpoint client, and through vLLM's own `vllm bench serve`
against that server.

One set of prompts (the 175 seed tasks, then variants), chat messages with one user turn
and no system prompt, greedy (temperature 0, top_p 1), the same max_tokens everywhere and
no ignore_eos, so each path generates what the model says and the completion token
totals show that the work matches. Paths run one after another, never together: the
in-process engine first, closed before the server starts. Each path is warmed up, and
the prefix cache is reset before every timed run (the server's through its dev-mode
/reset_prefix_cache). At each concurrency, Distillery's client and `vllm bench serve`
run back to back.

Reports completion tokens/s of each run, each endpoint run against the in-process
engine, and Distillery's client against `vllm bench serve` at the same concurrency.
Target: at the best concurrency, Distillery's client reaches >= 90% of `vllm bench serve`.

    .venv/bin/python bench/endpoint.py
    .venv/bin/python bench/endpoint.py --prompts 256 --max-tokens 128 --concurrency 1,8,32,64 --prompts-at-1 0

Concurrency 1 sends only the first 32 prompts by default (`--prompts-at-1`): the server
decodes ~40 tokens/s for a single request on 2 cores, so all 256 one at a time would add
about 15 minutes; the defaults take about 14 minutes on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "smollm2-135m-instruct"
NAME = "bench-smollm2"  # the served model name
TARGET = 0.90


def make_prompts(count: int) -> list[str]:
    """The seed tasks' user turns (instruction, then the first instance's input), then the
    seeds again from the start with a variant suffix, so every prompt is distinct."""
    from distillery.prompts import user_text

    path = ROOT / "data" / "self_instruct_seed_tasks.jsonl"
    seeds = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            instances = row.get("instances") or [{}]
            seeds.append(user_text(row["instruction"], instances[0].get("input", "")))
    prompts = []
    for i in range(count):
        text = seeds[i % len(seeds)]
        if i >= len(seeds):
            text = f"{text}\n\n(Variant {i // len(seeds)})"
        prompts.append(text)
    return prompts


def free_port(avoid: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def http(method: str, url: str, timeout: float = 10.0) -> tuple[int, str]:
    import httpx

    try:
        r = httpx.request(method, url, timeout=timeout)
        return r.status_code, r.text
    except httpx.HTTPError as err:
        return 0, f"{err.__class__.__name__}: {err}"


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Server:
    """`vllm serve` in its own process group: started, waited for (/health), killed."""

    def __init__(self, model_dir: str, port: int, omp_threads: int, log: Path, extra: list[str]):
        self.origin = f"http://127.0.0.1:{port}"
        self.log = log
        self.argv = [sys.executable, "-m", "distillery.vllm_cli", "serve", model_dir, "--host", "127.0.0.1",
                     "--port", str(port), "--served-model-name", NAME, "--dtype", "bfloat16",
                     "--max-model-len", "2048", "--seed", "0", *extra]
        self.env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                    "OMP_NUM_THREADS": str(omp_threads),
                    # for POST /reset_prefix_cache between timed runs
                    "VLLM_SERVER_DEV_MODE": "1"}
        self.env.pop("LD_PRELOAD", None)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 600.0) -> float:
        t0 = time.perf_counter()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, start_new_session=True)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.proc.returncode} before /health answered; "
                                   f"last lines of {self.log}:\n{tail(self.log)}")
            if http("GET", f"{self.origin}/health", 5.0)[0] == 200:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"vllm serve not healthy after {timeout:.0f} s; last lines of {self.log}:\n{tail(self.log)}")
            time.sleep(1.0)

    def reset_prefix_cache(self) -> None:
        for _ in range(20):  # fails while blocks are held (a request still finishing)
            status, text = http("POST", f"{self.origin}/reset_prefix_cache", 30.0)
            if status == 200 and json.loads(text).get("success"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"POST {self.origin}/reset_prefix_cache did not succeed: {status} {text[:200]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # the group may outlive its leader for a moment (engine core, workers)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None


def run_inprocess(convs: list[list[dict]], sampling: dict) -> dict:
    from distillery.adapters.engine import Engine, EngineSpec

    t0 = time.perf_counter()
    engine = Engine(EngineSpec(model=MODEL))
    start = time.perf_counter() - t0
    try:
        engine.chat(convs[:4], sampling)  # warm-up
        engine.llm.reset_prefix_cache()
        t0 = time.perf_counter()
        rows = engine.chat(convs, sampling)
        secs = time.perf_counter() - t0
    finally:
        engine.close()
    toks = sum(r[0]["completion_tokens"] for r in rows)
    return {"path": "in-process engine", "concurrency": None, "prompts": len(convs), "seconds": secs,
            "completion_tokens": toks, "tokens_per_second": toks / secs, "engine_start_seconds": start,
            "texts": [r[0]["response"] for r in rows]}


def run_client(base_url: str, convs: list[list[dict]], sampling: dict, concurrency: int) -> dict:
    from distillery.adapters.endpoint import EndpointEngine, EndpointSpec
    from distillery.endpoints import EndpointConfig

    config = EndpointConfig(base_url=base_url, model=NAME, max_concurrency=concurrency, tokenizer=None)
    client = EndpointEngine(EndpointSpec.of("bench", config), shared_limits=False)
    try:
        t0 = time.perf_counter()
        rows = client.chat(convs, sampling)
        secs = time.perf_counter() - t0
        requests = client.requests
    finally:
        client.close()
    errors = [r[0]["error"] for r in rows if "error" in r[0]]
    if errors:
        raise RuntimeError(f"Distillery client at concurrency {concurrency}: {len(errors)} rows failed, first: {errors[0]}")
    toks = sum(r[0]["completion_tokens"] for r in rows)
    return {"path": "Distillery client", "concurrency": concurrency, "prompts": len(convs), "seconds": secs,
            "completion_tokens": toks, "tokens_per_second": toks / secs, "requests": requests,
            "texts": [r[0]["response"] for r in rows]}


def run_vllm_bench(origin: str, model_dir: str, dataset: Path, prompts: int, max_tokens: int, concurrency: int,
                   workdir: Path) -> dict:
    name = f"vllm-bench-c{concurrency}.json"
    log = workdir / f"vllm-bench-c{concurrency}.log"
    argv = [sys.executable, "-m", "distillery.vllm_cli", "bench", "serve",
            "--backend", "openai-chat", "--base-url", origin, "--endpoint", "/v1/chat/completions",
            "--model", NAME, "--tokenizer", model_dir,
            "--dataset-name", "custom", "--dataset-path", str(dataset), "--disable-shuffle",
            # the server applies the chat template, as for the other paths; by default the
            # custom dataset would render it into the prompt text and the server again
            "--skip-chat-template",
            "--custom-output-len", str(max_tokens), "--num-prompts", str(prompts),
            "--max-concurrency", str(concurrency), "--request-rate", "inf", "--num-warmups", "0",
            "--temperature", "0", "--top-p", "1.0", "--extra-body", json.dumps({"seed": 0}), "--seed", "0",
            "--disable-tqdm", "--save-result", "--save-detailed", "--result-dir", str(workdir), "--result-filename", name]
    env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    env.pop("LD_PRELOAD", None)
    with open(log, "wb") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"vllm bench serve (concurrency {concurrency}) exited with {proc.returncode}; "
                           f"last lines of {log}:\n{tail(log)}")
    result = json.loads((workdir / name).read_text())
    if result.get("failed"):
        errors = [e for e in result.get("errors") or [] if e]
        raise RuntimeError(f"vllm bench serve (concurrency {concurrency}): {result['failed']} requests failed, "
                           f"first: {errors[:1]}")
    return {"path": "vllm bench serve", "concurrency": concurrency, "prompts": result["completed"],
            "seconds": result["duration"], "completion_tokens": result["total_output_tokens"],
            "tokens_per_second": result["output_throughput"], "texts": result.get("generated_texts") or []}


def cpu_seconds(sessions: set[int]) -> tuple[float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds of the live processes in
    `sessions` with their waited-for children): the difference between two readings is what
    other work used, short-lived processes included."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        cpu = [int(v) for v in f.readline().split()[1:]]
    busy = sum(cpu[:8]) - cpu[3] - cpu[4]  # all but idle and iowait (guest time is in user)
    ours = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) in sessions:  # session id; then utime, stime, cutime, cstime
            ours += sum(int(v) for v in fields[11:15])
    return busy / tick, ours / tick


class Others:
    """Average cores other processes used during a block (0 on a quiet machine)."""

    def __init__(self, sessions: set[int]):
        self.sessions = sessions

    def __enter__(self):
        self.cpu, self.t0 = cpu_seconds(self.sessions), time.perf_counter()
        return self

    def __exit__(self, *exc):
        (busy0, ours0), (busy1, ours1) = self.cpu, cpu_seconds(self.sessions)
        self.cores = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / (time.perf_counter() - self.t0)


def same(a: list[str], b: list[str]) -> int:
    return sum(x == y for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--concurrency", default="1,8,32,64", help="comma-separated concurrency levels")
    ap.add_argument("--prompts-at-1", type=int, default=32,
                    help="prompts (the first N) for the concurrency-1 runs: one request at a time is slow on CPU; "
                         "0 for all")
    ap.add_argument("--skip-inprocess", action="store_true", help="no in-process engine run (no ratio to it)")
    ap.add_argument("--server-threads", type=int, default=os.cpu_count(),
                    help="OMP_NUM_THREADS for the server (vLLM serve otherwise drops Torch to 1 thread)")
    ap.add_argument("--server-arg", action="append", default=[], help="extra `vllm serve` argument (repeatable)")
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "endpoint.json"))
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]

    from distillery.adapters.models import resolve_model

    model_dir = resolve_model(MODEL)
    prompts = make_prompts(args.prompts)
    convs = [[{"role": "user", "content": p}] for p in prompts]
    sampling = {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": args.max_tokens, "seed": 0}
    workdir = Path(tempfile.mkdtemp(prefix="bench-endpoint-"))
    print(f"work files (server log, vllm bench results): {workdir}", flush=True)

    runs: list[dict] = []
    inproc = None
    mine_sessions = {os.getsid(0)}
    if not args.skip_inprocess:
        with Others(mine_sessions) as others:
            inproc = run_inprocess(convs, sampling)
        inproc["other_cores"] = others.cores
        runs.append(inproc)
        print(f"in-process: {inproc['completion_tokens']} tokens in {inproc['seconds']:.1f} s "
              f"= {inproc['tokens_per_second']:.1f} tokens/s (other processes: {inproc['other_cores']:.2f} cores)", flush=True)

    datasets = {}
    for count in {args.prompts, *([min(args.prompts_at_1, args.prompts)] if args.prompts_at_1 and 1 in levels else [])}:
        datasets[count] = workdir / f"prompts-{count}.jsonl"
        datasets[count].write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts[:count]))

    def interrupted(signum, frame):  # so that `finally` stops the server (vLLM replaces SIGINT's handler)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    port = free_port(avoid={18123})
    server = Server(model_dir, port, args.server_threads, workdir / "vllm-serve.log", args.server_arg)
    base_url = f"{server.origin}/v1"
    try:
        server_start = server.start()
        mine_sessions.add(server.proc.pid)
        print(f"vllm serve on port {port} healthy after {server_start:.0f} s (OMP_NUM_THREADS={args.server_threads})",
              flush=True)
        run_client(base_url, convs[:8], sampling, 8)  # warm-up: the server's first requests
        for c in levels:
            count = min(args.prompts_at_1, args.prompts) if (c == 1 and args.prompts_at_1) else args.prompts
            server.reset_prefix_cache()
            with Others(mine_sessions) as others:
                mine = run_client(base_url, convs[:count], sampling, c)
            mine["other_cores"] = others.cores
            runs.append(mine)
            server.reset_prefix_cache()
            with Others(mine_sessions) as others:  # includes its ~10 s start, not in its duration
                theirs = run_vllm_bench(server.origin, model_dir, datasets[count], count, args.max_tokens, c, workdir)
            theirs["other_cores"] = others.cores
            runs.append(theirs)
            for r in (mine, theirs):
                print(f"{r['path']:>18} c={c:<3} {r['completion_tokens']:>6} tokens in {r['seconds']:6.1f} s "
                      f"= {r['tokens_per_second']:6.1f} tokens/s (other processes: {r['other_cores']:.2f} cores)", flush=True)
    finally:
        server.stop()

    # ratios
    by = {(r["path"], r["concurrency"]): r for r in runs}
    for r in runs:
        r["ratio_to_inprocess"] = round(r["tokens_per_second"] / inproc["tokens_per_second"], 3) if inproc else None
        r["ratio_to_vllm_bench"] = None
        if r["path"] == "Distillery client":
            other = by[("vllm bench serve", r["concurrency"])]
            r["ratio_to_vllm_bench"] = round(r["tokens_per_second"] / other["tokens_per_second"], 3)
            r["same_texts_as_vllm_bench"] = same(r["texts"], other["texts"])
        if inproc and r is not inproc:
            r["same_texts_as_inprocess"] = same(r["texts"], inproc["texts"][: r["prompts"]])
    bench_runs = [r for r in runs if r["path"] == "vllm bench serve"]
    mine_runs = [r for r in runs if r["path"] == "Distillery client"]
    best_c = max(bench_runs, key=lambda r: r["tokens_per_second"])["concurrency"]
    best_mine = max(mine_runs, key=lambda r: r["tokens_per_second"])
    best_bench = by[("vllm bench serve", best_c)]
    at_best = by[("Distillery client", best_c)]["ratio_to_vllm_bench"]
    best_vs_best = round(best_mine["tokens_per_second"] / best_bench["tokens_per_second"], 3)

    import vllm

    report = {
        "prompts": args.prompts,
        "prompts_at_concurrency_1": min(args.prompts_at_1, args.prompts) if args.prompts_at_1 else args.prompts,
        "max_tokens": args.max_tokens,
        "concurrency": levels,
        "sampling": sampling,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "vllm": vllm.__version__,
        "model": MODEL,
        "server_argv": server.argv[1:],
        "server_omp_num_threads": args.server_threads,
        "server_start_seconds": round(server_start, 1),
        "best_concurrency": best_c,
        "ratio_to_vllm_bench_at_best_concurrency": at_best,
        "best_vs_best": best_vs_best,
        "best_distillery_concurrency": best_mine["concurrency"],
        "target": TARGET,
        "target_met": max(at_best, best_vs_best) >= TARGET,
        "runs": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k != "texts"} for r in runs],
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))

    print()
    print(f"{'path':<20}{'conc':>5}{'prompts':>8}{'tokens':>8}{'seconds':>9}{'tok/s':>8}{'/inproc':>9}{'/vllm bench':>12}")
    for r in runs:
        ri = f"{r['ratio_to_inprocess']:.2f}" if r["ratio_to_inprocess"] is not None else "-"
        rb = f"{r['ratio_to_vllm_bench']:.2f}" if r["ratio_to_vllm_bench"] is not None else "-"
        print(f"{r['path']:<20}{r['concurrency'] or '-':>5}{r['prompts']:>8}{r['completion_tokens']:>8}"
              f"{r['seconds']:>9.1f}{r['tokens_per_second']:>8.1f}{ri:>9}{rb:>12}")
    print(f"best vllm bench concurrency {best_c}: Distillery/vllm bench = {at_best:.2f}; best vs best = {best_vs_best:.2f} "
          f"(target >= {TARGET:.2f}: {'met' if report['target_met'] else 'NOT met'})")
    print(f"results: {args.output}")
    shutil.rmtree(workdir, ignore_errors=True)  # kept when a run fails, for its logs


if __name__ == "__main__":
    main()
