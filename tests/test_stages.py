"""Stages over shards, without the engine: streaming load, render, dedup across shards,
resume by shard, checksums, accounting, and publishing from a stream of tables."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SEEDS
from distillery.adapters.storage import open_dataset
from distillery.dedup import DedupParams, deduplicate_rows
from distillery.prompts import render_messages
from distillery.shards import ShardSpec
from distillery.sources import SourceError, SourceFile, StreamedSource, parse_sources, stream_sources
from distillery.stages.contract import Record, ShardOutput
from distillery.stages.dedup import ApplyDrops, Signatures, drop_map, drops_digest, find_duplicates
from distillery.stages.executor import AccountingError, read_table, run_shard, stage_source, totals
from distillery.stages.prompts import PROMPT_SCHEMA, SEED_SCHEMA, Render
from distillery.stages.publish import Stream, covering, plan

PARAMS = DedupParams(threshold=0.7, ngram=3)
ROOT_DIR = "_temporary/t"


def seed_bytes() -> bytes:
    """The 175 seeds, a malformed line in the middle, and 20 seeds again under new ids
    (exact duplicate prompts)."""
    lines = SEEDS.read_bytes().splitlines()
    again = [json.dumps({**json.loads(x), "id": f"again_{i}"}).encode() for i, x in enumerate(lines[:20])]
    return b"\n".join(lines[:90] + [b'{"id": "broken", "instruction": '] + lines[90:] + again) + b"\n"


def files_of(data: bytes, name: str = "seeds.jsonl") -> list[SourceFile]:
    return [SourceFile(name, len(data), lambda: io.BytesIO(data))]


OPTIONS = {"input_column": "instances.0.input", "id_column": "id"}


@pytest.mark.parametrize("shard_rows", [1, 7, 64, 10_000])
def test_streamed_load_equals_the_whole_file_parse(shard_rows):
    data = seed_bytes()
    whole = parse_sources([("seeds.jsonl", data)], **OPTIONS)
    seen = StreamedSource()
    shards = list(stream_sources(files_of(data), shard_rows, seen, **OPTIONS))
    assert [s for seeds, _, _ in shards for s in seeds] == whole.seeds
    assert sorted(map(json.dumps, [r for _, rej, _ in shards for r in rej])) == sorted(map(json.dumps, whole.rejects))
    assert all(n <= shard_rows for _, _, n in shards) and sum(n for _, _, n in shards) == whole.rows_in == 196
    assert seen.digest == whole.digest and (seen.seeds, seen.rejects) == (195, 1)


def test_streamed_load_names_files_and_checks_columns():
    data = SEEDS.read_bytes()
    two = [SourceFile(f"s3://b/part-{i}.jsonl", len(data), lambda: io.BytesIO(data)) for i in (1, 2)]
    shards = list(stream_sources(two, 100, StreamedSource(), input_column="instances.0.input"))
    seeds = [s for chunk, _, _ in shards for s in chunk]
    assert seeds[0]["seed_id"] == "part-1.jsonl:row-1" and seeds[175]["seed_id"] == "part-2.jsonl:row-1"
    with pytest.raises(SourceError, match="column 'nope' not found"):
        list(stream_sources(files_of(data), 50, StreamedSource(), input_column="nope"))


def build_stages(store, data: bytes, system: str | None = "Be brief.", params: DedupParams = PARAMS, shard_rows: int = 40):
    """load -> render -> signatures -> find_duplicates -> dedup, as a flow runs them.
    Returns {stage: (records, shards run)}."""
    loaded, _ = stage_source(store, ROOT_DIR, "load", f"k{shard_rows}", stream_sources(files_of(data), shard_rows, StreamedSource(), **OPTIONS), SEED_SCHEMA)

    def run(stage, inputs, extra=()):
        out = [run_shard(store, ROOT_DIR, stage, i, files, extra) for i, files in enumerate(inputs)]
        return [r for r, _ in out], sum(ran for _, ran in out)

    rendered = run(Render(system), [[r.files[0]] for r in loaded])
    sigs = run(Signatures("prompt", params), [[r.files[0]] for r in rendered[0]])
    drops, counts = find_duplicates((read_table(store, r.files[0]) for r in sigs[0]), params, "prompt")
    apply = ApplyDrops(drop_map(drops), PROMPT_SCHEMA.append(pa.field("dedup_cluster", pa.string())), drops_digest(drops))
    deduped = run(apply, [[r.files[0]] for r in rendered[0]], [drops_digest(drops)])
    return {"load": (loaded, None), "render": rendered, "signatures": sigs, "dedup": deduped, "counts": counts,
            "drops": drops_digest(drops)}


def staged_rows(store, records: list[Record], which: int = 0) -> list[dict]:
    return [row for r in records for row in read_table(store, r.files[which]).to_pylist()]


def test_dedup_across_shards_equals_dedup_of_all_rows_at_once(tmp_path):
    store = open_dataset(str(tmp_path))
    data = seed_bytes()
    stages = build_stages(store, data)
    parsed = parse_sources([("seeds.jsonl", data)], **OPTIONS)
    rows = [{**r, "id": r["seed_id"]} for r in render_messages(parsed.seeds, "Be brief.")]
    kept, rejected, _ = deduplicate_rows(rows, "prompt", PARAMS)

    records = stages["dedup"][0]
    assert len(records) == 5  # 196 records in shards of 40
    assert [r["seed_id"] for r in staged_rows(store, records)] == [r["id"] for r in kept]
    assert [r["dedup_cluster"] for r in staged_rows(store, records)] == [r["dedup_cluster"] for r in kept]
    staged_rejects = [(r["seed_id"], r["reason"], r["detail"], r["duplicate_of"]) for r in staged_rows(store, records, 1)]
    assert staged_rejects == [(r["id"], r["reason"], r["detail"], r["duplicate_of"]) for r in rejected]
    assert {r[1] for r in staged_rejects} == {"exact_duplicate"} and len(staged_rejects) == 20
    assert stages["counts"] == {"rows": 195, "dropped": 20, "clusters": 20}
    # every row accounted for, per stage and in total
    load = totals(stages["load"][0])
    assert (load["rows_in"], load["rows"], load["rejected_by_reason"]) == (196, 195, {"malformed_json": 1})
    dedup = totals(records)
    assert (dedup["rows_in"], dedup["rows"], dedup["rejected"]) == (195, 175, 20)


def test_a_rerun_skips_every_finished_shard(tmp_path):
    store = open_dataset(str(tmp_path))
    data = seed_bytes()
    first = build_stages(store, data)
    again = build_stages(store, data)
    assert [again[name][1] for name in ("render", "signatures", "dedup")] == [0, 0, 0]
    assert [r.key for r in again["dedup"][0]] == [r.key for r in first["dedup"][0]]


def test_a_killed_stage_redoes_only_its_unfinished_shards(tmp_path):
    store = open_dataset(str(tmp_path))
    data = seed_bytes()
    build_stages(store, data)
    # as if killed while writing shard 3 of render, and before shards 1 and 4 of signatures finished
    (tmp_path / ROOT_DIR / "render" / "part-00003.done.json").unlink()
    for shard in (1, 4):
        (tmp_path / ROOT_DIR / "signatures" / f"part-{shard:05d}.done.json").unlink()
    again = build_stages(store, data)
    assert again["render"][1] == 1
    assert again["signatures"][1] == 2
    assert again["dedup"][1] == 0  # same rows in, same drop list: nothing downstream changed


def test_a_corrupt_staged_shard_is_found_by_its_checksum_and_redone(tmp_path):
    store = open_dataset(str(tmp_path))
    data = seed_bytes()
    before = build_stages(store, data)
    part = tmp_path / ROOT_DIR / "render" / "part-00002.parquet"
    part.write_bytes(part.read_bytes()[:-100])  # bytes cut off
    again = build_stages(store, data)
    assert again["render"][1] == 1
    assert pq.read_table(part).num_rows == before["render"][0][2].rows_out  # redone, whole again
    assert again["dedup"][1] == 0


def test_a_changed_setting_redoes_only_the_stages_it_affects(tmp_path):
    store = open_dataset(str(tmp_path))
    seed = max((json.loads(x) for x in SEEDS.read_text().splitlines()), key=lambda r: len(r["instruction"]))
    near = {**seed, "id": "planted_near", "instruction": seed["instruction"].rsplit(" ", 1)[0] + " quickly."}
    data = seed_bytes() + json.dumps(near).encode() + b"\n"
    first = build_stages(store, data, params=DedupParams(threshold=0.95, ngram=3))
    looser = build_stages(store, data, params=DedupParams(threshold=0.7, ngram=3))
    assert (looser["render"][1], looser["signatures"][1]) == (0, 0)  # the threshold changes the LSH, not signatures
    assert looser["counts"]["dropped"] > first["counts"]["dropped"] and looser["drops"] != first["drops"]
    assert looser["dedup"][1] == 5  # a new drop list: every shard's verdicts redone
    other = build_stages(store, data, system="Answer in French.")
    assert (other["render"][1], other["signatures"][1], other["dedup"][1]) == (5, 5, 5)


def test_a_stage_that_loses_rows_stops_the_build(tmp_path):
    class Lossy:
        name, schema, fanout = "lossy", PROMPT_SCHEMA, 1

        def settings(self):
            return {}

        def code(self):
            return [Lossy.run]

        def run(self, rows, shard):
            return ShardOutput(rows[1:])

    store = open_dataset(str(tmp_path))
    stages = build_stages(store, seed_bytes())
    with pytest.raises(AccountingError, match="40 rows in, 39 out, 0 rejected"):
        run_shard(store, ROOT_DIR, Lossy(), 0, [stages["render"][0][0].files[0]])


@pytest.mark.parametrize("sizes,per_shard", [([5, 0, 7, 3], 4), ([10], 10), ([], 4), ([1] * 9, 2), ([9], 100)])
def test_planned_shards_are_read_from_the_parts_that_hold_them(sizes, per_shard):
    schema = pa.schema([pa.field("x", pa.int64())])
    start, parts = 0, []
    for n in sizes:
        table = pa.table({"x": list(range(start, start + n))}, schema=schema)
        parts.append((lambda t=table: t, n))
        start += n
    stream = Stream(parts, "data", "train", schema)
    plans = plan(stream.rows, per_shard, "data", "train")
    got = [pa.concat_tables([schema.empty_table(), *stream.pieces(p)]) for p in plans]
    assert [t.num_rows for t in got] == [p.rows for p in plans]
    assert [x for t in got for x in t.column("x").to_pylist()] == list(range(start))
    assert covering([5, 0, 7, 3], 3, 9) == [(0, 3, 2), (2, 0, 4)]
    if sizes:  # a part that holds other rows than its record says is refused
        short = Stream([(lambda: schema.empty_table(), n) for n in sizes], "data", "train", schema)
        with pytest.raises(RuntimeError, match="its record says"):
            [t for p in plans for t in short.pieces(p)]


def test_publishing_a_stream_gives_the_shards_publishing_a_table_does(tmp_path):
    from distillery.recipe import Recipe
    from distillery.report import build_manifest, summarize
    from distillery.schema import rejects_table
    from tasks.write import publish, publish_stream

    rows = [{"x": i, "text": f"row {i} " * (i % 7)} for i in range(103)]
    schema = pa.schema([pa.field("x", pa.int64()), pa.field("text", pa.string())])
    table = pa.Table.from_pylist(rows, schema=schema)
    spec = ShardSpec(rows_per_shard=25)

    def make(data, rejects):
        return build_manifest("t", "r", "2026-12-03T00:00:00+00:00", Recipe().model_dump(mode="json"), {}, data, rejects,
                              summarize(103, 1, 103, rows, [], {}), {}, key="k", attempt="a")

    empty = rejects_table([])
    whole = publish(open_dataset(str(tmp_path / "whole")), [(table, "data", "train"), (empty, "rejected", "rejected")], spec, make, None, "a")
    parts = [(lambda t=t: t, t.num_rows) for t in (table.slice(0, 10), table.slice(10, 60), table.slice(70))]
    streamed = publish_stream(open_dataset(str(tmp_path / "streamed")), [Stream(parts, "data", "train", schema),
                              Stream([], "rejected", "rejected", empty.schema)], spec, make, None, "a")
    assert [(e["path"], e["rows"]) for e in streamed["shards"]] == [(e["path"], e["rows"]) for e in whole["shards"]]
    for entry in whole["shards"]:
        assert pq.read_table(tmp_path / "streamed" / entry["path"]).equals(pq.read_table(tmp_path / "whole" / entry["path"]))
    assert streamed["columns"] == whole["columns"] and streamed["summary"]["lengths"] == whole["summary"]["lengths"]
    assert not (tmp_path / "streamed" / "_temporary").exists()


def test_two_builds_into_one_output_publish_one_and_tell_the_other(tmp_path):
    """Builds A and B of one recipe into one output share its staging area; A publishes
    first and clears it. B then either finds a staged shard gone, or (if it had read them
    all) is refused at publish: one dataset, A's, and a clear conflict for B."""
    from distillery.adapters.storage import PublishConflict
    from distillery.recipe import Recipe
    from distillery.report import MANIFEST, build_manifest, summarize
    from distillery.schema import rejects_table
    from distillery.stages.executor import StagedShardMissing
    from tasks.write import STAGING, publish_stream

    store = open_dataset(str(tmp_path))
    data = seed_bytes()
    a = build_stages(store, data)
    b = build_stages(store, data)  # started beside A: A's finished shards serve B too
    assert [b[name][1] for name in ("render", "signatures", "dedup")] == [0, 0, 0]
    schema = read_table(store, a["dedup"][0][0].files[0]).schema
    read_by_b = [read_table(store, r.files[0]) for r in b["dedup"][0][:-1]]  # all but B's last shard

    def publish(run_id: str, tables: list[pa.Table]) -> dict:
        rows = [row for t in tables for row in t.to_pylist()]

        def make(data_, rejects):
            return build_manifest("t", run_id, "2026-12-03T00:00:00+00:00", Recipe().model_dump(mode="json"), {}, data_, rejects,
                                  summarize(len(rows), 1, len(rows), rows, [], {}), {}, key=run_id, attempt=run_id)

        streams = [Stream([(lambda t=t: t, t.num_rows) for t in tables], "data", "train", schema),
                   Stream([], "rejected", "rejected", rejects_table([]).schema)]
        return publish_stream(store, streams, ShardSpec(rows_per_shard=50), make, None, run_id)

    manifest = publish("run-A", [read_table(store, r.files[0]) for r in a["dedup"][0]])
    store.remove_tree(STAGING)  # as the flow does once A is published
    with pytest.raises(StagedShardMissing, match="another build into the same output probably published"):
        read_table(store, b["dedup"][0][-1].files[0])
    with pytest.raises(PublishConflict, match="another writer published run run-A"):
        publish("run-B", read_by_b)
    assert json.loads(store.read(MANIFEST))["run_id"] == "run-A"
    published = [row["seed_id"] for e in manifest["shards"] if e["path"].startswith("data/")
                 for row in pq.read_table(tmp_path / e["path"]).to_pylist()]
    assert len(published) == 175 and len(set(published)) == 175  # A's rows, each once; nothing of B's
    assert not (tmp_path / STAGING).exists() or not any((tmp_path / STAGING).iterdir())


class StandInEngine:
    """A test double for the engine around which the engine stages are written: answers
    every conversation with its last message reversed, scores by length."""

    def __init__(self):
        self.batches: list[int] = []

    def chat(self, conversations, params, **extra):
        self.batches.append(len(conversations))
        if extra.get("regex"):  # the judge: a score that depends on the row
            return [[{"response": f"Score: {1 + len(c[-1]['content']) % 10}\nRationale: length", "finish_reason": "stop"}] for c in conversations]
        return [[{"response": c[-1]["content"][::-1], "finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 2}
                 for _ in range(params["n"])] for c in conversations]

    def count_prompt_tokens(self, conversations):
        return [len(c[-1]["content"].split()) for c in conversations]


def test_engine_stages_account_for_every_row_with_a_stand_in_engine():
    from datetime import datetime, timezone

    from distillery.generation import attach_completions
    from distillery.judge import absolute_regex
    from distillery.stages.engine import Filter, Fit, Generate, Judge, score_counts, staged_schema
    from distillery.schema import ROW_SCHEMA

    seeds = [json.loads(x) for x in SEEDS.read_text().splitlines()][:12]
    rows = render_messages([{"seed_id": s["id"], "instruction": s["instruction"], "input": ""} for s in seeds], None)
    engine = StandInEngine()
    fit = Fit((("t", "m", None, 4),), max_model_len=20, count=lambda model, convs: engine.count_prompt_tokens(convs))
    fitted = fit.run(rows, 0)
    assert len(fitted.rows) + len(fitted.rejected) == 12 and fitted.rejected
    assert all(r["reason"] == "prompt_too_long" and r["stage"] == "render" for r in fitted.rejected)

    def complete(batch):
        return attach_completions(batch, engine.chat([r["messages"] for r in batch], params), "t", "m", params, datetime.now(timezone.utc)), 0.5

    params = {"n": 2, "temperature": 0.0, "top_p": 1.0, "max_tokens": 4, "seed": 0}
    generate = Generate("t", "m", None, params, {}, batch_size=4, schema=staged_schema(ROW_SCHEMA), complete=complete)
    out = generate.run(fitted.rows, 0)
    assert len(out.rows) == 2 * len(fitted.rows) and generate.fanout == 2
    assert out.facts["completion_tokens"] == 2 * len(out.rows) and out.facts["engine_seconds"] == 0.5 * -(-len(fitted.rows) // 4)
    assert out.rows[0]["response"] == out.rows[0]["prompt"][::-1]

    judge = Judge("m", "rubric", (), "structured", {"n": 1, "temperature": 0.0, "max_tokens": 8}, {"regex": absolute_regex(())},
                  batch_size=5, max_model_len=60, schema=staged_schema(ROW_SCHEMA), open_engine=lambda: engine)
    judged = judge.run(out.rows, 0)
    assert len(judged.rows) + len(judged.rejected) == len(out.rows)
    counts = score_counts(judged.facts)
    assert sum(counts.values()) == len(judged.rows) and set(counts) <= set(range(1, 11))
    kept = Filter(5, staged_schema(ROW_SCHEMA)).run(judged.rows, 0)
    assert len(kept.rows) + len(kept.rejected) == len(judged.rows)
    assert all(r["judge_score"] >= 5 for r in kept.rows) and all(r["reason"] == "low_score" for r in kept.rejected)
    assert kept.facts["scored"] == len(kept.rows)
