"""Teachers and judges behind a real `vllm serve` (the default model, on 127.0.0.1, with an
API key), against the in-process engine path, through a fault-injecting proxy, with the
server killed mid-build, and a batch file round-tripped through `vllm run-batch`."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import procs
from conftest import ROOT, published, tiny_recipe_dict
from endpoints import FaultProxy, VllmServer, run_batch

pytestmark = pytest.mark.engine

KEY = "sk-distillery-test-" + secrets.token_hex(12)
NAME = "smollm2"
SEEDS = 24


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """One `vllm serve` for the module, its API key required."""
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    vllm = VllmServer(model_dir, NAME, log, extra_args=["--api-key", KEY], api_key=KEY, lasting=True)
    vllm.start()
    try:
        yield vllm
    finally:
        vllm.stop()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("DISTILLERY_TEST_KEY", KEY)


@pytest.fixture(scope="module")
def seeds(seed_records, tmp_path_factory) -> Path:
    """Real seeds, and one too long for the server's context (nothing counts it locally: the
    server answers 400 and the row is quarantined with its words)."""
    long = {"id": "planted_too_long", "instruction": "Summarize: " + "The committee met again about the budget. " * 400,
            "instances": []}
    path = tmp_path_factory.mktemp("endpoint-seeds") / "seeds.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [*seed_records[:SEEDS], long]) + "\n")
    return path


def endpoint(base_url: str, **extra) -> dict:
    return {"base_url": base_url, "model": NAME, "api_key_env": "DISTILLERY_TEST_KEY", "max_concurrency": 8,
            "timeout_seconds": 120, "backoff_seconds": 0.2, **extra}


def recipe_dict(seeds: Path, out: Path, base_url: str | None, **extra) -> dict:
    data = tiny_recipe_dict(str(seeds), str(out))
    data["name"] = f"endpoint-{out.name}"
    data["teacher"]["batch_size"] = 8
    data["output"]["stage_rows"] = 10
    # these tests count every answer that crossed the wire as kept; what the answers say is the guard tests' business
    data["guards"] = {"identity": {"enabled": False}, "repetition": {"enabled": False}}
    if base_url:
        data["teacher"]["endpoint"] = endpoint(base_url, **extra)
    return data


def build(data: dict):
    from distillery.recipe import build_recipe
    from flows.distill import distill

    state = distill(build_recipe(data), return_state=True)
    return state, state.result()


def cli(*args: str, home: Path, env: dict | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    """`distillery ...` in a process of its own, on Prefect's ephemeral API kept under `home`
    (two calls with one home share its result store: the batch cache)."""
    merged = {**os.environ, "DISTILLERY_TEST_KEY": KEY, "PREFECT_HOME": str(home / "prefect"),
              "PREFECT_LOCAL_STORAGE_PATH": str(home / "results"), **(env or {})}
    merged.pop("PREFECT_API_URL", None)
    return procs.run([sys.executable, "-m", "distillery.commands.cli", *args], timeout=timeout, cwd=ROOT, env=merged)


@pytest.fixture(scope="module")
def engine_build(prefect_api, seeds, tmp_path_factory):
    out = tmp_path_factory.mktemp("engine-path") / "ds"
    data = recipe_dict(seeds, out, None)
    _, result = build(data)
    return result, out


def test_a_build_through_vllm_serve_matches_the_engine_path(prefect_api, server, key, seeds, engine_build, tmp_path, caplog):
    import logging

    from test_s3_e2e import flow_logs

    caplog.set_level(logging.DEBUG)
    out = tmp_path / "ds"
    data = recipe_dict(seeds, out, server.base_url, price_input_per_million=0.15, price_output_per_million=0.60)
    state, result = build(data)
    s = result["summary"]
    engine_result, engine_out = engine_build
    e = engine_result["summary"]

    # the same rows, schema and accounting as the engine path
    manifest, kept, rejected = published(out)
    _, engine_kept, engine_rejected = published(engine_out)
    assert pq.read_schema(out / manifest["shards"][0]["path"]) == pq.read_schema(engine_out / json.loads(
        (engine_out / "manifest.json").read_text())["shards"][0]["path"])
    assert s["rows_in"] == e["rows_in"] == SEEDS + 1
    assert s["rows_in"] * 1 - s["not_generated"] == s["generated"] == s["kept"] + s["rejected_after_generation"]
    assert len({r["id"] for r in kept}) == len(kept)
    # the over-long seed: the engine path's own count rejects it at render; the server, at generate
    assert {r["seed_id"]: r["reason"] for r in engine_rejected}["planted_too_long"] == "prompt_too_long"
    refused = [r for r in rejected if r["seed_id"] == "planted_too_long"]
    assert [r["reason"] for r in refused] == ["endpoint_error"] and refused[0]["stage"] == "generate-teacher"
    assert refused[0]["detail"].startswith("HTTP 400: ") and "context" in refused[0]["detail"]
    assert {r["teacher_model"] for r in kept} == {NAME} and {r["judge_model"] for r in kept} == {NAME}
    assert all(r["judge_score"] is not None for r in kept)

    # temperature 0, seed 0: the server answers as the in-process engine does
    ours = {r["seed_id"]: r["response"] for r in kept + [r for r in rejected if r.get("response")]}
    theirs = {r["seed_id"]: r["response"] for r in engine_kept + [r for r in engine_rejected if r.get("response")]}
    common = sorted(set(ours) & set(theirs))
    share = sum(ours[k] == theirs[k] for k in common) / len(common)
    print(f"\nanswers identical to the in-process engine's: {share:.1%} of {len(common)}")
    assert len(common) >= SEEDS - 2 and share >= 0.9

    # the cost, from the server's token counts at the recipe's prices
    cost = s["cost"]
    assert set(cost["by"]) == {"teacher 'teacher'", "judge"}
    teacher = cost["by"]["teacher 'teacher'"]
    assert teacher["prompt_tokens"] == s["prompt_tokens"] and teacher["completion_tokens"] == s["completion_tokens"]
    assert teacher["usd"] == pytest.approx((s["prompt_tokens"] * 0.15 + s["completion_tokens"] * 0.60) / 1e6, abs=1e-6)
    assert "Cost: $" in (out / "README.md").read_text()

    # no gpu slot for endpoint batches, and the endpoint's own limit exists
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
        limit = client.read_global_concurrency_limit_by_name(f"endpoint-127.0.0.1-{server.port}-v1-{NAME}")
    calls = [r for r in runs if r.name.startswith("endpoint-generate")]
    assert calls and all("gpu" not in r.tags for r in calls)
    assert not [r for r in runs if "gpu" in r.tags]  # the judge on the endpoint takes no gpu slot either
    assert limit.limit == 8

    # the key is nowhere: files written, logs, the run's parameters
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    logs = flow_logs(state.state_details.flow_run_id, "dataset written to")
    assert "dataset written to" in logs
    assert KEY.encode() not in written and KEY not in logs and KEY not in caplog.text


def test_faults_on_the_wire_lose_and_duplicate_nothing(prefect_api, server, key, seeds, tmp_path):
    plan = {"429": 0.1, "500": 0.1, "drop": 0.05, "stall": 0.04}
    with FaultProxy(server.base_url, plan, seed=7, retry_after=0.5, stall_seconds=30) as proxy:
        data = recipe_dict(seeds, tmp_path / "ds", proxy.base_url, timeout_seconds=10, max_retries=8)
        _, result = build(data)
        faults, forwarded = proxy.faults(), proxy.forwarded_bodies()
    s = result["summary"]
    manifest, kept, rejected = published(tmp_path / "ds")
    assert all(faults[k] > 0 for k in plan), faults
    assert s["rows_in"] == SEEDS + 1 and s["generated"] == SEEDS
    assert s["generated"] == s["kept"] + s["rejected_after_generation"] == len(kept) + len(rejected) - s["rejected_at_generation"]
    assert s["rejected_by_reason"].get("endpoint_error") == 1  # only the over-long seed
    assert len({r["id"] for r in kept}) == len(kept)
    assert max(forwarded.values()) == 1  # no request answered twice: retries only for those that failed
    assert len(forwarded) == SEEDS + s["kept"] + s["rejected_by_reason"].get("low_score", 0)  # every answer and judgement once


def test_server_killed_mid_build_then_the_rerun_sends_only_unanswered_batches(prefect_api, server, key, seeds, tmp_path):
    recipe = tmp_path / "recipe.json"
    with FaultProxy(server.base_url) as proxy:
        data = recipe_dict(seeds, tmp_path / "ds", proxy.base_url, max_retries=2, max_concurrency=2)
        data["judge"]["enabled"] = False
        data["teacher"]["batch_size"] = 4
        recipe.write_text(json.dumps(data))  # YAML is a superset of JSON

        def kill_when_half_answered():
            while len(proxy.forwarded_bodies()) < SEEDS // 2:
                time.sleep(0.05)
            server.stop()

        killer = threading.Thread(target=kill_when_half_answered, daemon=True)
        killer.start()
        first = cli("run", str(recipe), "--no-progress", home=tmp_path)
        killer.join(60)
        answered_first = set(proxy.forwarded_bodies())
        lines = [l for l in first.stderr.splitlines() if l.startswith("distillery: error:")]
        assert first.returncode != 0
        assert len(lines) == 1 and proxy.base_url in lines[0] and "after 2 retries" in lines[0], first.stderr[-3000:]
        assert KEY not in first.stderr + first.stdout

        server.start()
        second = cli("run", str(recipe), "--no-progress", home=tmp_path)
        assert second.returncode == 0, second.stderr[-3000:]
        answered = proxy.forwarded_bodies()
    resent = [b for b in answered_first if answered[b] > 1]
    assert len(resent) <= 4  # at most the batch in flight when the server died: its answers were not kept
    assert len(answered) == SEEDS  # every prompt answered in the end (the over-long one is refused, 400)
    _, kept, rejected = published(tmp_path / "ds")
    assert len(kept) == SEEDS and len({r["id"] for r in kept}) == SEEDS
    assert [r["reason"] for r in rejected] == ["endpoint_error"]


def test_a_wrong_key_and_an_unreachable_url_fail_in_one_line_before_generation(server, seeds, tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(recipe_dict(seeds, tmp_path / "ds", server.base_url)))
    wrong = cli("run", str(recipe), "--no-progress", home=tmp_path, env={"DISTILLERY_TEST_KEY": "sk-wrong-" + secrets.token_hex(8)})
    line = [l for l in wrong.stderr.splitlines() if l.startswith("distillery: error:")]
    assert wrong.returncode == 2 and len(line) == 1
    assert "teacher 'teacher'" in line[0] and server.base_url in line[0] and "refused the API key" in line[0]
    assert "sk-wrong-" not in wrong.stderr + wrong.stdout
    recipe.write_text(json.dumps(recipe_dict(seeds, tmp_path / "ds", "http://127.0.0.1:9/v1")))
    gone = cli("run", str(recipe), "--no-progress", home=tmp_path)
    line = [l for l in gone.stderr.splitlines() if l.startswith("distillery: error:")]
    assert gone.returncode == 2 and len(line) == 1 and "cannot reach http://127.0.0.1:9/v1" in line[0]
    assert not (tmp_path / "ds").exists()  # nothing written: checked before the load stage


def test_a_batch_file_round_trips_through_vllm_run_batch(model_dir, seeds, tmp_path):
    recipe = tmp_path / "recipe.json"
    data = recipe_dict(seeds, tmp_path / "ds", "http://127.0.0.1:9/v1")  # never called: the answers come from the file
    data["judge"]["enabled"] = False
    data["kd"] = {"top_k": 4}
    recipe.write_text(json.dumps(data))
    requests = tmp_path / "requests.jsonl"
    made = cli("batch-file", str(recipe), "--to", str(requests), home=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    lines = [json.loads(l) for l in requests.read_text().splitlines()]
    assert len(lines) == SEEDS + 1 and {l["url"] for l in lines} == {"/v1/chat/completions"}
    assert len({l["custom_id"] for l in lines}) == len(lines)
    assert all(l["body"]["top_logprobs"] == 4 and l["body"]["return_tokens_as_token_ids"] for l in lines)

    results = tmp_path / "results.jsonl"
    answers = run_batch(model_dir, NAME, requests, results, tmp_path / "run-batch.log")
    assert {a["custom_id"] for a in answers} == {l["custom_id"] for l in lines}
    trimmed = tmp_path / "results-trimmed.jsonl"  # one answer lost on the way: quarantined, not dropped
    trimmed.write_text("\n".join(results.read_text().splitlines()[1:]) + "\n")

    done = cli("run", str(recipe), "--responses", str(trimmed), "--no-progress", home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest, kept, rejected = published(tmp_path / "ds")
    s = manifest["summary"]
    reasons = sorted(r["reason"] for r in rejected)
    assert reasons == ["batch_error", "batch_missing"]  # the over-long seed (a 400 in the file), the lost answer
    assert s["rows_in"] == len(kept) + len(rejected) == SEEDS + 1
    assert all(len(r["kd_token_ids"]) == r["completion_tokens"] and len(r["kd_topk_ids"][0]) == 4 for r in kept)
