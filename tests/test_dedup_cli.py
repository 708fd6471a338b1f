"""`distillery dedup` on real seed tasks with planted copies, JSONL and Parquet, with an index:
the input's own columns and ids come out as they went in, plus the dedup_* columns."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import ROOT, read_seeds

DEDUP_KEPT = ["dedup_cluster"]
DEDUP_REJECTED = ["dedup_reason", "dedup_duplicate_of", "dedup_similarity"]


def dedup(*args):
    return subprocess.run([sys.executable, "-m", "distillery.commands.cli", "dedup", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


BROKEN = '{"id": "broken", "instruction": '


def planted_jsonl(path):
    """The 175 seed tasks, two copies of seed 0 (one with a mixed-type `extra` field), a row
    without text, a line that is not JSON and one in Latin-1."""
    seeds = read_seeds()
    lines = [json.dumps(s) for s in seeds]
    lines.append(json.dumps({**seeds[0], "id": "zz_copy_exact", "instruction": seeds[0]["instruction"].upper(), "extra": 5}))
    lines.append(json.dumps({**seeds[0], "id": "zz_copy_near", "instruction": seeds[0]["instruction"] + " Please answer briefly.", "extra": "five"}))
    lines.append(json.dumps({**seeds[1], "id": "no_text", "instruction": ""}))
    lines.append(BROKEN)
    data = ("\n".join(lines) + "\n").encode() + b'{"id": "latin1", "instruction": "caf\xe9 cr\xe8me br\xfbl\xe9e recipe for four people"}\n'
    path.write_bytes(data)
    return len(lines) + 1


def test_jsonl_keeps_the_users_columns_and_ids(tmp_path):
    src = tmp_path / "seeds.jsonl"
    total = planted_jsonl(src)
    seeds = read_seeds()
    index = tmp_path / "index"
    args = ["--column", "instruction", "--ngram", "3", "--index", str(index)]  # no --id-column: `id` is there
    run = dedup(str(src), *args, "--update-index", "--output", str(tmp_path / "one"))
    assert run.returncode == 0, run.stderr[-2000:]
    kept_table = pq.read_table(tmp_path / "one" / "kept.parquet")
    rejected_table = pq.read_table(tmp_path / "one" / "rejected.parquet")
    kept, rejected = kept_table.to_pylist(), rejected_table.to_pylist()
    assert len(kept) + len(rejected) == total

    users = list(seeds[0]) + ["extra"]  # top-level fields in order of first appearance
    assert kept_table.column_names == users + DEDUP_KEPT
    assert rejected_table.column_names == users + DEDUP_REJECTED + ["dedup_raw"]
    schema = kept_table.schema
    assert schema.field("id").type == pa.string() and schema.field("is_classification").type == pa.bool_()
    assert schema.field("instances").type == pa.list_(pa.struct([("input", pa.string()), ("output", pa.string())]))
    assert schema.field("extra").type == pa.string()  # 5 in one row, "five" in another: JSON text
    by_id = {r["id"]: r for r in kept + rejected}
    assert (by_id["zz_copy_exact"]["extra"], by_id["zz_copy_near"]["extra"], by_id["seed_task_0"]["extra"]) == ("5", '"five"', None)
    for seed in seeds:  # every seed row comes back field for field
        assert {k: by_id[seed["id"]][k] for k in seed} == seed

    reasons = {r["id"]: r["dedup_reason"] for r in rejected}
    assert reasons == {"zz_copy_exact": "exact_duplicate", "zz_copy_near": "near_duplicate", "no_text": "empty_field", None: "malformed_json"}
    assert {r["dedup_duplicate_of"] for r in rejected if r["dedup_reason"].endswith("duplicate")} == {"seed_task_0"}
    assert "seed_task_0" in {k["id"] for k in kept}
    assert [r["dedup_raw"] for r in rejected if r["dedup_reason"] == "malformed_json"] == [BROKEN]
    assert all(k["dedup_cluster"] == k["id"] for k in kept)
    assert "ids:       column 'id'" in run.stdout
    assert "non-UTF-8 rows (bytes replaced): 1" in run.stdout
    assert "index rows: 0 before, now 176" in run.stdout  # 175 seeds + the latin-1 row

    again = dedup(str(src), *args, "--output", str(tmp_path / "two"))
    assert again.returncode == 0, again.stderr[-2000:]
    second = pq.read_table(tmp_path / "two" / "rejected.parquet").to_pylist()
    assert pq.read_table(tmp_path / "two" / "kept.parquet").num_rows == 0
    assert sum(r["dedup_reason"] == "seen_in_index" for r in second) == 178  # everything with text
    assert {r["dedup_duplicate_of"] for r in second if r["id"] in ("seed_task_0", "zz_copy_exact")} == {"seed_task_0"}

    bad = dedup(str(src), *args[:-2], "--index", str(index), "--num-perm", "64", "--output", str(tmp_path / "three"))
    assert bad.returncode == 2 and "num_perm=128 there vs 64 here" in bad.stderr and "Traceback" not in bad.stderr


def test_jsonl_row_numbers_when_asked(tmp_path):
    src = tmp_path / "seeds.jsonl"
    total = planted_jsonl(src)
    run = dedup(str(src), "--column", "instruction", "--ngram", "3", "--id-column", "", "--output", str(tmp_path / "o"))
    assert run.returncode == 0, run.stderr[-2000:]
    kept = pq.read_table(tmp_path / "o" / "kept.parquet")
    rejected = pq.read_table(tmp_path / "o" / "rejected.parquet").to_pylist()
    assert kept.num_rows + len(rejected) == total
    assert kept.column_names[-2:] == ["dedup_row_id", "dedup_cluster"] and kept.column("id")[0].as_py() == "seed_task_0"
    copy = next(r for r in rejected if r["id"] == "zz_copy_exact")
    assert (copy["dedup_row_id"], copy["dedup_duplicate_of"]) == ("row-000000000175", "row-000000000000")
    assert "ids:       row numbers (dedup_row_id)" in run.stdout


def typed_parquet(path, seeds):
    """Seed tasks with typed columns: an int64 id, int32, float, list, struct; the last row an exact copy
    of row 3 with a better score."""
    rows = [
        {"id": 1000 + i, "prompt": s["instruction"], "score": 5.0, "votes": i, "tags": [len(s["name"]), i],
         "source": {"name": s["name"], "classification": s["is_classification"]}}
        for i, s in enumerate(seeds)
    ]
    rows.append({**rows[3], "id": 2000, "score": 9.0, "tags": []})
    schema = pa.schema([
        ("id", pa.int64()), ("prompt", pa.string()), ("score", pa.float64()), ("votes", pa.int32()), ("tags", pa.list_(pa.int64())),
        ("source", pa.struct([("name", pa.string()), ("classification", pa.bool_())])),
    ])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return rows, schema


def test_parquet_keeps_its_schema_ids_and_uses_scores(tmp_path):
    seeds = read_seeds()[:50]
    rows, schema = typed_parquet(tmp_path / "in.parquet", seeds)
    run = dedup(str(tmp_path / "in.parquet"), "--column", "prompt", "--score-column", "score", "--output", str(tmp_path / "o"))
    assert run.returncode == 0, run.stderr[-2000:]
    kept = pq.read_table(tmp_path / "o" / "kept.parquet")
    rejected = pq.read_table(tmp_path / "o" / "rejected.parquet")
    assert kept.num_rows + rejected.num_rows == len(rows)
    assert kept.schema.remove_metadata() == pa.schema(list(schema) + [pa.field("dedup_cluster", pa.string())])
    assert rejected.schema.remove_metadata() == pa.schema(
        list(schema) + [pa.field("dedup_reason", pa.string()), pa.field("dedup_duplicate_of", pa.string()), pa.field("dedup_similarity", pa.float32())]
    )
    assert kept.select(schema.names).to_pylist() == [r for r in rows if r["id"] != 1003]  # the copy with score 9 is kept
    dropped = rejected.to_pylist()
    assert [(r["id"], r["dedup_reason"], r["dedup_duplicate_of"]) for r in dropped] == [(1003, "exact_duplicate", "2000")]
    assert {k: dropped[0][k] for k in schema.names} == rows[3]
    assert "ids:       column 'id'" in run.stdout


def test_dedup_columns_never_overwrite_the_users(tmp_path):
    seeds = read_seeds()[:5]
    pq.write_table(pa.table({"prompt": [s["instruction"] for s in seeds], "dedup_cluster": ["x"] * 5}), tmp_path / "in.parquet")
    run = dedup(str(tmp_path / "in.parquet"), "--column", "prompt", "--output", str(tmp_path / "o"))
    assert run.returncode == 2 and "column(s) dedup_cluster use the dedup_* names" in run.stderr and "Traceback" not in run.stderr
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": s["instruction"], "dedup_reason": "mine"}) + "\n" for s in seeds))
    run = dedup(str(tmp_path / "in.jsonl"), "--column", "text", "--output", str(tmp_path / "o"))
    assert run.returncode == 2 and "column(s) dedup_reason use the dedup_* names" in run.stderr


def test_missing_input_and_column(tmp_path):
    gone = dedup(str(tmp_path / "nope.jsonl"), "--column", "x", "--output", str(tmp_path / "o"))
    assert gone.returncode == 2 and "does not exist" in gone.stderr
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"instruction": "hello there"}) + "\n")
    wrong = dedup(str(src), "--column", "prompt", "--output", str(tmp_path / "o"))
    assert wrong.returncode == 2 and "'prompt' not found" in wrong.stderr


def test_jsonl_field_types_widen_across_batches_or_fall_back_to_json_text():
    from distillery.json_columns import FieldTypes

    fields = FieldTypes()
    batches = [
        [{"n": 1, "meta": {"a": 1}, "tags": [], "empty": {}, "big": 1, "late": None}],
        [{"n": 2.5, "meta": {"b": "x"}, "tags": ["t"], "empty": {}, "big": 2**70, "late": None}, {"n": None, "late": [1, 2]}],
    ]
    for batch in batches:
        fields.observe(batch)
    schema = fields.finish()
    assert schema == pa.schema([
        ("n", pa.float64()), ("meta", pa.struct([("a", pa.int64()), ("b", pa.string())])), ("tags", pa.list_(pa.string())),
        ("empty", pa.string()), ("big", pa.string()), ("late", pa.list_(pa.int64())),
    ])
    rows = [row for batch in batches for row in fields.table([*batch, None]).to_pylist()]
    assert rows[0] == {"n": 1.0, "meta": {"a": 1, "b": None}, "tags": [], "empty": "{}", "big": "1", "late": None}
    assert rows[2] == {"n": 2.5, "meta": {"a": None, "b": "x"}, "tags": ["t"], "empty": "{}", "big": str(2**70), "late": None}
    assert rows[3]["late"] == [1, 2] and rows[3]["n"] is None and rows[3]["meta"] is None
    assert rows[1] == rows[4] == dict.fromkeys(schema.names)  # a line that did not parse: all null


def test_update_index_writes_parts_of_bounded_size(tmp_path, monkeypatch):
    from distillery.commands import dedup_job
    from distillery.dedup import DedupParams

    monkeypatch.setattr(dedup_job, "_INDEX_PART_ROWS", 50)
    src = tmp_path / "seeds.jsonl"
    src.write_text("".join(json.dumps(s) + "\n" for s in read_seeds()))
    index, params = tmp_path / "index", DedupParams(ngram=3)
    first = dedup_job.run_dedup(str(src), "instruction", str(tmp_path / "one"), params, index_uri=str(index), update_index=True)
    meta = json.loads((index / "index.json").read_text())
    assert [p["rows"] for p in meta["parts"]] == [50, 50, 50, first.kept - 150] and meta["rows"] == first.kept == first.index_rows_after
    again = dedup_job.run_dedup(str(src), "instruction", str(tmp_path / "two"), params, index_uri=str(index))
    assert again.index_rows_before == first.kept and again.rejected["seen_in_index"] == first.kept and again.kept == 0
