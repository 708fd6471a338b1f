"""`distillery dedup` on real seed tasks with planted copies, JSONL and Parquet, with an index."""

import json
import subprocess
import sys

import polars as pl
import pyarrow.parquet as pq

from conftest import ROOT, read_seeds


def dedup(*args):
    return subprocess.run([sys.executable, "-m", "distillery.cli", "dedup", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def planted_jsonl(path):
    seeds = read_seeds()
    lines = [json.dumps(s) for s in seeds]
    lines.append(json.dumps({**seeds[0], "id": "zz_copy_exact", "instruction": seeds[0]["instruction"].upper()}))
    lines.append(json.dumps({**seeds[0], "id": "zz_copy_near", "instruction": seeds[0]["instruction"] + " Please answer briefly."}))
    lines.append(json.dumps({**seeds[1], "id": "no_text", "instruction": ""}))
    lines.append('{"id": "broken", "instruction": ')
    data = ("\n".join(lines) + "\n").encode() + b'{"id": "latin1", "instruction": "caf\xe9 cr\xe8me br\xfbl\xe9e recipe for four people"}\n'
    path.write_bytes(data)
    return len(lines) + 1


def test_jsonl_dedup_and_index(tmp_path):
    src = tmp_path / "seeds.jsonl"
    total = planted_jsonl(src)
    index = tmp_path / "index"
    args = ["--column", "instruction", "--id-column", "id", "--ngram", "3", "--index", str(index)]
    run = dedup(str(src), *args, "--update-index", "--output", str(tmp_path / "one"))
    assert run.returncode == 0, run.stderr[-2000:]
    kept = pq.read_table(tmp_path / "one" / "kept.parquet").to_pylist()
    rejected = pq.read_table(tmp_path / "one" / "rejected.parquet").to_pylist()
    assert len(kept) + len(rejected) == total
    reasons = {r["id"]: r["reason"] for r in rejected}
    assert reasons == {"zz_copy_exact": "exact_duplicate", "zz_copy_near": "near_duplicate", "no_text": "empty_field", "row-000000000178": "malformed_json"}
    assert {r["duplicate_of"] for r in rejected if r["reason"].endswith("duplicate")} == {"seed_task_0"}
    assert all(k["dedup_cluster"] == k["id"] for k in kept)
    assert "non-UTF-8 rows (bytes replaced): 1" in run.stdout
    assert "index rows: 0 before, now 176" in run.stdout  # 175 seeds + the latin-1 row
    assert json.loads(kept[0]["record"])["id"] == "seed_task_0"

    again = dedup(str(src), *args, "--output", str(tmp_path / "two"))
    assert again.returncode == 0, again.stderr[-2000:]
    second = pq.read_table(tmp_path / "two" / "rejected.parquet").to_pylist()
    assert pq.read_table(tmp_path / "two" / "kept.parquet").num_rows == 0
    assert sum(r["reason"] == "seen_in_index" for r in second) == 178  # everything with text

    bad = dedup(str(src), *args[:-2], "--index", str(index), "--num-perm", "64", "--output", str(tmp_path / "three"))
    assert bad.returncode == 2 and "num_perm=128 there vs 64 here" in bad.stderr and "Traceback" not in bad.stderr


def test_parquet_keeps_columns_and_uses_scores(tmp_path):
    seeds = read_seeds()[:50]
    rows = [{"prompt": s["instruction"], "score": 5.0} for s in seeds]
    rows.append({"prompt": seeds[3]["instruction"], "score": 9.0})  # exact copy with a better score
    src = tmp_path / "in.parquet"
    pl.DataFrame(rows).write_parquet(src)
    run = dedup(str(src), "--column", "prompt", "--score-column", "score", "--output", str(tmp_path / "o"))
    assert run.returncode == 0, run.stderr[-2000:]
    kept = pq.read_table(tmp_path / "o" / "kept.parquet")
    rejected = pq.read_table(tmp_path / "o" / "rejected.parquet").to_pylist()
    assert kept.column_names == ["prompt", "score", "row_id", "dedup_cluster"]
    assert [(r["row_id"], r["reason"], r["duplicate_of"]) for r in rejected] == [("row-000000000003", "exact_duplicate", "row-000000000050")]


def test_missing_input_and_column(tmp_path):
    gone = dedup(str(tmp_path / "nope.jsonl"), "--column", "x", "--output", str(tmp_path / "o"))
    assert gone.returncode == 2 and "does not exist" in gone.stderr
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"instruction": "hello there"}) + "\n")
    wrong = dedup(str(src), "--column", "prompt", "--output", str(tmp_path / "o"))
    assert wrong.returncode == 2 and "'prompt' not found" in wrong.stderr
