"""`distillery` command line: run a recipe, inspect a dataset, prepare the default model."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from distillery.errors import DistilleryError


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed run's traceback; for input errors the message is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], DistilleryError):
            record.exc_info = None
            record.exc_text = None
        return True


class _ClearProgressLine(logging.Filter):
    """A log line printed while a progress line is half drawn would run into it."""

    def __init__(self, progress) -> None:
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self.progress.clear_line()
        return True


def _console_handlers() -> list[logging.Handler]:
    names = ("prefect", "prefect.flow_runs", "prefect.task_runs", "")
    return list(dict.fromkeys(h for name in names for h in logging.getLogger(name).handlers))


def _quiet_user_errors() -> None:
    flt = _NoTracebackForUserErrors()
    for handler in _console_handlers():
        handler.addFilter(flt)


# Seconds the CLI waits for Prefect's local (ephemeral) API to come up. Prefect's
# default of 20 s is missed on a busy 2-core machine.
EPHEMERAL_STARTUP_SECONDS = "180"


def quiet_third_party() -> None:
    """Hide warnings the user can do nothing about (vLLM's Triton and LD_PRELOAD notes,
    torch's C++ NUMA notice, FutureWarnings, loading bars). `--verbose` keeps them.
    Set before vLLM or torch is imported: they read these once."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' bars; our progress line is not tqdm
    os.environ.setdefault("DISTILLERY_QUIET", "1")  # the engine adapter: no weight-loading bars
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("default", module="distillery")


def _no_local_api(err: RuntimeError) -> DistilleryError | None:
    if "ephemeral Prefect API server" not in str(err):
        return None
    waited = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_SECONDS)
    return DistilleryError(
        f"Prefect's local API did not start within {waited} s (a busy machine?); nothing was built. "
        "Start a server that stays up (`distillery serve`, or `prefect server start`) and point runs at it: "
        "`export PREFECT_API_URL=http://127.0.0.1:4200/api`, then run again; "
        "or give the local API longer with PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=600"
    )


def cmd_run(args: argparse.Namespace) -> int:
    from distillery.recipe import load_recipe

    if not args.verbose:
        quiet_third_party()
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_SECONDS)
    recipe = load_recipe(args.recipe, args.set)
    if args.responses and recipe.flow != "distill":
        raise DistilleryError(f"--responses builds flow 'distill'; the recipe's flow is {recipe.flow!r}")
    # Prefect is imported only once the recipe is valid.
    from distillery.recipe import flow_for

    build = flow_for(recipe)

    from prefect.logging.configuration import setup_logging

    setup_logging()
    _quiet_user_errors()
    if not args.verbose:
        # Prefect's logging setup leaves vLLM's loggers to the root handler.
        for name in ("vllm", "torch", "transformers"):
            logging.getLogger(name).setLevel(logging.ERROR)
    from distillery import progress
    from distillery.adapters.engine import close_engines
    from distillery.report import format_summary

    if not args.no_progress:
        shown = progress.Progress(sys.stderr, tty=sys.stderr.isatty())
        progress.install(shown)
        for handler in _console_handlers():
            handler.addFilter(_ClearProgressLine(shown))
    try:
        result = build(recipe, responses=args.responses) if args.responses else build(recipe)
    except RuntimeError as err:
        raise (_no_local_api(err) or err) from None
    finally:
        progress.install(None)
        close_engines()

    if "report" in result:  # an evaluation or a verifiable build: its report says it all
        print(f"\n{result['output']}  (run {result['run_id']})\n")
        print(result["report"])
        return 0
    if result.get("unchanged"):
        print(f"\ndataset: {result['output']} is already this build (run {result['run_id']}); nothing to do")
    else:
        print(f"\ndataset: {result['output']}  (run {result['run_id']})")
    print(format_summary(result["summary"]))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """`distillery eval KIND [RECIPE]`: `distillery run` with flow eval_KIND."""
    args.set = [f"flow=eval_{args.kind}", *args.set]
    args.responses = None
    return cmd_run(args)


def cmd_finetune(args: argparse.Namespace) -> int:
    quiet_third_party()
    from distillery.commands.finetune import FinetuneConfig, finetune

    info = finetune(FinetuneConfig(dataset=args.dataset, model=args.model, output=args.output, steps=args.steps,
                                   learning_rate=args.lr, batch_size=args.batch_size, max_length=args.max_length, seed=args.seed))
    print(f"fine-tuned {info['base_model']} on {info['rows']} rows of {info['dataset']}: {info['steps']} steps, "
          f"loss {info['first_loss']} -> {info['last_loss']}, {info['seconds']} s; saved to {args.output}")
    return 0


def cmd_batch_file(args: argparse.Namespace) -> int:
    from distillery.recipe import load_recipe

    quiet_third_party()
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_SECONDS)
    recipe = load_recipe(args.recipe, args.set)
    if recipe.flow != "distill":
        raise DistilleryError(f"batch-file writes the requests of flow 'distill'; the recipe's flow is {recipe.flow!r}")
    from prefect.logging.configuration import setup_logging

    from flows.batch_files import batch_file

    setup_logging()
    _quiet_user_errors()
    done = batch_file(recipe, args.to)
    print(f"{done['requests']} requests for {done['prompts']} prompts written to {done['path']} (OpenAI batch input format);\n"
          f"answer them (OpenAI's Batch API, or `vllm run-batch -i {done['path']} -o results.jsonl`), then build with\n"
          f"distillery run {args.recipe or ''} --responses results.jsonl".replace("  ", " "))
    return 0


def _kd_check(args: argparse.Namespace) -> int:
    from distillery.adapters.tokenizers import cmd_kd_check

    return cmd_kd_check(args)


def cmd_inspect(args: argparse.Namespace) -> int:
    from distillery.commands.inspect import inspect_dataset

    report, ok = inspect_dataset(args.output, rows=args.rows)
    print(report)
    return 0 if ok else 1


def cmd_dedup(args: argparse.Namespace) -> int:
    from distillery.dedup import DedupParams
    from distillery.commands.dedup_job import run_dedup

    if args.update_index and not args.index:
        print("distillery: error: --update-index needs --index DIR", file=sys.stderr)
        return 2
    if not 0.0 < args.threshold < 1.0:
        print(f"distillery: error: --threshold {args.threshold} must be between 0 and 1 (exclusive)", file=sys.stderr)
        return 2
    params = DedupParams(num_perm=args.num_perm, threshold=args.threshold, ngram=args.ngram, shingle=args.shingle)
    stats = run_dedup(
        args.input, args.column, args.output, params, id_column=args.id_column, score_column=args.score_column,
        index_uri=args.index, update_index=args.update_index, batch_rows=args.batch_rows,
    )
    print(f"kept rows: {args.output.rstrip('/')}/kept.parquet, rejected rows: {args.output.rstrip('/')}/rejected.parquet")
    print(stats.report())
    return 0


def cmd_guard_identity(args: argparse.Namespace) -> int:
    from distillery.commands.guard_job import run_identity_guard
    from distillery.guards.identity import DEFAULT_VENDORS, IdentityGuard

    vendors = tuple(dict.fromkeys([*DEFAULT_VENDORS, *args.vendor]))
    guard = IdentityGuard(name=args.name, maker=args.maker, vendors=vendors)
    stats = run_identity_guard(args.input, args.column, args.output, guard, args.action, args.batch_rows)
    print(f"kept rows: {args.output.rstrip('/')}/kept.parquet, rejected rows: {args.output.rstrip('/')}/rejected.parquet")
    print(stats.report())
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    from distillery.adapters.prefect_api import trigger

    run = trigger(args.deployment, args.set, wait=args.wait, idempotency_key=args.idempotency_key, timeout=args.timeout)
    state = run.state.type.value if run.state else "UNKNOWN"
    print(f"flow run {run.id} ({run.name}): {state}")
    if args.wait and state != "COMPLETED":
        print(f"distillery: error: flow run {run.id} ended {state}: {run.state.message if run.state else ''}", file=sys.stderr)
        return 1
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import time

    from distillery.adapters import prefect_api as api

    env = api.server_env(args.port, args.home)
    log = open(args.log, "ab") if args.log else None
    server = api.start_server(env, args.port, log)
    worker = None
    try:
        api.prepare(env)
        worker = api.start_worker(env, log)
        print(f"Prefect UI: http://127.0.0.1:{args.port}  (API {env['PREFECT_API_URL']}); work pool {api.POOL}; Ctrl-C stops it all", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while server.poll() is None and worker.poll() is None:
            time.sleep(1)
        print("distillery: error: the Prefect server or worker exited; see its log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping the worker, then the server", flush=True)
        return 0
    finally:
        api.stop(*(p for p in (worker, server) if p is not None))


def cmd_export(args: argparse.Namespace) -> int:
    from distillery.commands.export import export_dataset

    done = export_dataset(args.output, args.format, args.to)
    print(f"exported {done['rows']} rows as {args.format} to {done['path']}")
    return 0


def cmd_prepare_model(args: argparse.Namespace) -> int:
    from distillery.adapters.models import prepare_default_model

    print(prepare_default_model())
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    """The warm engine actors on a Ray cluster: list them, or stop them for good."""
    from distillery.adapters.ray_engines import connect, list_engines, stop_engines

    connect(args.address or os.environ.get("RAY_ADDRESS") or "auto", args.namespace or "distillery")
    if args.action == "ls":
        engines = list_engines(args.namespace)
        if args.json:
            print(json.dumps(engines, indent=1))
        for e in [] if args.json else engines:
            print(f"{e['namespace']}/{e['name']}  {e['state']}  restarts={e['restarts']}  pid={e['pid']}  node={e['node']}")
        if not engines and not args.json:
            print("no engines on this cluster" + (f" in namespace {args.namespace!r}" if args.namespace else ""))
        return 0
    if not args.names and not args.all:
        raise DistilleryError("engines stop: name the engines to stop (see `distillery engines ls`), or pass --all")
    stopped = stop_engines(None if args.all else args.names, args.namespace or "distillery")
    print(f"stopped {len(stopped)} engine(s)" + (": " + ", ".join(stopped) if stopped else ""))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from distillery.recipe import Recipe

    print(json.dumps(Recipe.model_json_schema(), indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distillery", description="Build distillation datasets with a teacher model.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the distill flow on a recipe")
    run.add_argument("recipe", nargs="?", help="recipe YAML (defaults apply when omitted)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field, e.g. sampling.temperature=0.2")
    run.add_argument("--verbose", "-v", action="store_true", help="show vLLM, torch and transformers warnings and loading bars")
    run.add_argument("--no-progress", action="store_true", help="no progress lines for engine start, generation and judging")
    run.set_defaults(func=cmd_run)
    run.add_argument("--responses", metavar="FILE", help="build from an OpenAI batch output file (of `distillery batch-file`'s "
                     "requests) instead of calling the teachers; missing or failed answers are quarantined rows")

    ev = sub.add_parser("eval", help="evaluate models: pairwise win rate, response similarity, identity, verifiable accuracy",
                        description="Runs the eval_KIND flow on the recipe (an EvalRecipe: candidates, baseline, judge); writes "
                        "eval/*.parquet, report.md and manifest.json to output.uri and prints the report.")
    ev.add_argument("kind", choices=["pairwise", "rse", "identity", "accuracy"])
    ev.add_argument("recipe", nargs="?", help="recipe YAML (defaults apply when omitted)")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field, e.g. source.limit=20")
    ev.add_argument("--verbose", "-v", action="store_true", help="show vLLM, torch and transformers warnings")
    ev.add_argument("--no-progress", action="store_true", help="no progress lines")
    ev.set_defaults(func=cmd_eval)
    ft = sub.add_parser("finetune", help="TRL SFT on a published build for N steps; saves a model folder the flows can open")
    ft.add_argument("dataset", help="a published build's folder, or a JSONL/Parquet file with a messages column")
    ft.add_argument("--model", default="smollm2-135m-instruct", help="the model to start from: the default model or a local folder")
    ft.add_argument("--output", required=True, help="folder to save the fine-tuned model to")
    ft.add_argument("--steps", type=int, default=30, help="optimizer steps")
    ft.add_argument("--lr", type=float, default=1e-4, help="learning rate (constant)")
    ft.add_argument("--batch-size", type=int, default=4, help="rows per step")
    ft.add_argument("--max-length", type=int, default=256, help="tokens per row (longer rows are cut)")
    ft.add_argument("--seed", type=int, default=0)
    ft.set_defaults(func=cmd_finetune)

    bf = sub.add_parser("batch-file", help="write a recipe's teacher requests as an OpenAI batch input file (JSONL)")
    bf.add_argument("recipe", nargs="?", help="recipe YAML (defaults apply when omitted)")
    bf.add_argument("--to", required=True, help="the requests file to write (a path or s3:// URI)")
    bf.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    bf.set_defaults(func=cmd_batch_file)

    ins = sub.add_parser("inspect", help="summarize a dataset and check it against its manifest")
    ins.add_argument("output", help="dataset folder or URI")
    ins.add_argument("--rows", type=int, default=3, help="sample rows to print")
    ins.set_defaults(func=cmd_inspect)
    dd = sub.add_parser(
        "dedup", help="exact + MinHash-LSH dedup of a JSONL or Parquet file on one column",
        description="Writes every input row, with the input's own columns, to kept.parquet or rejected.parquet. "
        "Parquet in: the same schema out. JSONL in: each top-level field becomes a column of the type its values "
        "share (nested objects and lists stay nested); a field whose values share no type (a number in one row, "
        "a string in another) becomes a string column of each value as JSON text. Then the dedup columns: "
        "dedup_cluster (kept), dedup_reason, dedup_duplicate_of, dedup_similarity (rejected), dedup_raw (rejected, "
        "JSONL: the line of a malformed_json row), dedup_row_id (both, when no id column is used). Cluster and "
        "duplicate_of name rows by the id column's values, as text. An input with a dedup_* column is refused.",
    )
    dd.add_argument("input", help="JSONL or Parquet file (local path or s3://)")
    dd.add_argument("--column", required=True, help="text column to compare (dotted path for nested JSONL)")
    dd.add_argument("--output", required=True, help="folder for kept.parquet and rejected.parquet")
    dd.add_argument("--id-column", help="row id column (dotted path for nested JSONL); default: `id` when the input "
                    "has it, else row numbers (dedup_row_id); --id-column '' forces row numbers")
    dd.add_argument("--score-column", help="score column: the highest score represents a cluster")
    dd.add_argument("--threshold", type=float, default=0.8, help="Jaccard threshold (default 0.8)")
    dd.add_argument("--ngram", type=int, default=5, help="shingle size (default 5)")
    dd.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (default 128)")
    dd.add_argument("--shingle", choices=["word", "char"], default="word", help="word or char n-grams (default word)")
    dd.add_argument("--index", help="cross-run index folder or s3:// prefix to dedup against")
    dd.add_argument("--update-index", action="store_true", help="add this run's kept rows to --index")
    dd.add_argument("--batch-rows", type=int, help="rows read per batch (default: 10000 for Parquet; for JSONL, the "
                    "lines of each 4 MiB read)")
    dd.set_defaults(func=cmd_dedup)
    guard = sub.add_parser("guard", help="the build's guards on any file: `guard identity`")
    gsub = guard.add_subparsers(dest="guard", required=True)
    gid = gsub.add_parser(
        "identity", help="reject rows whose answers claim another model's identity (I am ChatGPT, trained by OpenAI)",
        description="Writes every input row, with the input's own columns, to kept.parquet (plus guard_flags) or "
        "rejected.parquet (plus guard_reason, guard_matched, guard_language; guard_raw for a malformed JSONL line). "
        "A messages column is checked on its assistant turns only; a text column as one answer.",
    )
    gid.add_argument("input", help="JSONL or Parquet file (local path or s3://)")
    gid.add_argument("--column", required=True, help="the answer text, or a list of chat messages (dotted path for nested JSONL)")
    gid.add_argument("--output", required=True, help="folder for kept.parquet and rejected.parquet")
    gid.add_argument("--name", help="the student's own name: never a leak")
    gid.add_argument("--maker", help="the student's own maker: never a leak")
    gid.add_argument("--vendor", action="append", default=[], help="another model or vendor name to guard against (repeatable)")
    gid.add_argument("--action", choices=["reject", "flag"], default="reject", help="reject leaks (default) or keep them flagged")
    gid.add_argument("--batch-rows", type=int, default=10_000, help="rows read per batch (default 10000)")
    gid.set_defaults(func=cmd_guard_identity)
    trig = sub.add_parser("trigger", help="run a deployment (its default recipe plus --set overrides)")
    trig.add_argument("deployment", help="FLOW/DEPLOYMENT, e.g. distill/distill-demo")
    trig.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    trig.add_argument("--wait", action="store_true", help="wait until the run is final; exit 1 unless Completed")
    trig.add_argument("--idempotency-key", help="a second trigger with the same key starts no second run")
    trig.add_argument("--timeout", type=float, help="with --wait: give up waiting after this many seconds")
    trig.set_defaults(func=cmd_trigger)
    srv = sub.add_parser("serve", help="a local Prefect server, process work pool, worker and the deployments")
    srv.add_argument("--port", type=int, default=4200)
    srv.add_argument("--home", help="PREFECT_HOME for the server's database (default: Prefect's)")
    srv.add_argument("--log", help="append the server's and worker's output to this file")
    srv.set_defaults(func=cmd_serve)
    exp = sub.add_parser("export", help="write a dataset as openai / alpaca / sharegpt / hf")
    exp.add_argument("output", help="dataset folder or URI (a finished build)")
    exp.add_argument("--format", required=True, choices=["openai", "alpaca", "sharegpt", "hf"])
    exp.add_argument("--to", required=True, help="file (openai: .jsonl, alpaca/sharegpt: .json) or folder (hf)")
    exp.set_defaults(func=cmd_export)
    kdc = sub.add_parser("kd-check", help="does a student's tokenizer match the teacher's that wrote a KD dataset?")
    kdc.add_argument("output", help="dataset folder or URI built with kd.top_k")
    kdc.add_argument("--student", required=True, help="the student model's folder (or a tokenizer folder)")
    kdc.set_defaults(func=_kd_check)
    prep = sub.add_parser("prepare-model", help="convert the shipped default model to safetensors (once)")
    prep.set_defaults(func=cmd_prepare_model)
    eng = sub.add_parser("engines", help="the warm engines (Ray actors) of execution.backend=ray: ls, or stop")
    eng.add_argument("action", choices=["ls", "stop"])
    eng.add_argument("names", nargs="*", help="stop: the engines to stop (as `ls` names them)")
    eng.add_argument("--all", action="store_true", help="stop: every engine in the namespace")
    eng.add_argument("--address", help="the Ray cluster (default: RAY_ADDRESS, else 'auto')")
    eng.add_argument("--namespace", help="ls: only this namespace (default: all); stop: default 'distillery'")
    eng.add_argument("--json", action="store_true", help="ls: print JSON")
    eng.set_defaults(func=cmd_engines)
    schema = sub.add_parser("recipe-schema", help="print the recipe's JSON schema")
    schema.set_defaults(func=cmd_schema)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # The ephemeral Prefect server phones home unless told not to; these
    # machines may have no route out, and a data tool should not call out anyway.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client-side usage data, likewise
    # Storage retries and other distillery.* log lines go to the run's logs (UI and console).
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "distillery")
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except DistilleryError as err:
        print(f"distillery: error: {err}", file=sys.stderr)
        return 2


# Commands that only read and write files: no Prefect run, no engine.
_NATIVE_EXIT = {"inspect", "dedup", "guard", "export", "kd-check", "recipe-schema"}


def entry() -> None:
    """The `distillery` program. Read-only commands leave without native teardown.

    pyarrow's thread pools are sometimes torn down mid-flight while the
    interpreter finalizes, which aborts a finished command with
    "terminate called without an active exception" (apache/arrow#34314): the
    output is complete but the exit status is -6. After such a command, run the
    atexit hooks, flush, and leave with its own status instead.
    """
    argv = sys.argv[1:]
    code = main(argv)
    if argv and argv[0] in _NATIVE_EXIT:
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be said
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
