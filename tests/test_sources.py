import json

import polars as pl
import pytest

from distillery.sources import SourceError, parse_source

from conftest import SEEDS


def parse(data: bytes, uri="seeds.jsonl", **kw):
    kw.setdefault("instruction_column", "instruction")
    return parse_source(data, uri, **kw)


def test_real_seed_file_parses_every_task():
    parsed = parse(SEEDS.read_bytes(), input_column="instances.0.input", id_column="id")
    assert parsed.rows_in == 175 and len(parsed.seeds) == 175 and not parsed.rejects
    by_id = {s["seed_id"]: s for s in parsed.seeds}
    assert by_id["seed_task_1"]["input"] == "Night : Day :: Right : Left"
    assert by_id["seed_task_0"]["input"] == ""
    assert by_id["seed_task_0"]["instruction"].startswith("Is there anything I can eat")


def test_malformed_and_empty_rows_are_quarantined_not_dropped(seed_records):
    lines = [json.dumps(r) for r in seed_records[:5]]
    lines.insert(2, '{"id": "broken", "instruction": "unterminated')
    lines.append(json.dumps({"id": "blank", "instruction": "   ", "instances": []}))
    lines.append("[1, 2, 3]")
    parsed = parse("\n".join(lines).encode(), input_column="instances.0.input", id_column="id")
    assert parsed.rows_in == 8
    assert len(parsed.seeds) == 5
    reasons = {(r["seed_id"], r["reason"]) for r in parsed.rejects}
    assert reasons == {("line-3", "malformed_json"), ("blank", "empty_prompt"), ("line-8", "malformed_json")}
    broken = next(r for r in parsed.rejects if r["seed_id"] == "line-3")
    assert "unterminated" in broken["raw"] and "line 3" in broken["detail"]


def test_wrong_column_names_the_column_and_lists_the_real_ones():
    with pytest.raises(SourceError) as err:
        parse(SEEDS.read_bytes(), instruction_column="prompt")
    msg = str(err.value)
    assert "'prompt' not found" in msg and "instruction" in msg and "seeds.jsonl" in msg


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_other_formats_give_the_same_seeds(seed_records, tmp_path, fmt):
    flat = [{"id": r["id"], "instruction": r["instruction"], "input": r["instances"][0]["input"]} for r in seed_records[:20]]
    path = tmp_path / f"seeds.{fmt}"
    frame = pl.DataFrame(flat)
    {"csv": frame.write_csv, "parquet": frame.write_parquet, "json": lambda p: p.write_text(json.dumps(flat))}[fmt](path)
    parsed = parse(path.read_bytes(), str(path), input_column="input", id_column="id")
    assert [s["seed_id"] for s in parsed.seeds] == [r["id"] for r in flat]
    assert [s["input"] for s in parsed.seeds] == [r["input"] for r in flat]


def test_unknown_extension_asks_for_a_format():
    with pytest.raises(SourceError, match="source.format"):
        parse(b"x", "seeds.txt")


def test_limit_keeps_the_first_records():
    parsed = parse(SEEDS.read_bytes(), limit=7, id_column="id")
    assert [s["seed_id"] for s in parsed.seeds] == [f"seed_task_{i}" for i in range(7)]


def test_glob_of_mixed_files_reads_every_seed_once(seed_records, tmp_path):
    """Many files in several formats through one glob: every seed in, bad rows quarantined, ids unique."""
    from distillery.adapters.storage import read_many
    from distillery.sources import parse_sources

    flat = [{"id": r["id"], "instruction": r["instruction"], "input": r["instances"][0]["input"]} for r in seed_records]
    parts = tmp_path / "seeds"
    parts.mkdir()
    pl.DataFrame(flat[:60]).write_parquet(parts / "part-0.parquet")
    (parts / "part-1.jsonl").write_text("\n".join([*(json.dumps(r) for r in flat[60:120]), "{broken", json.dumps(flat[0])]))
    pl.DataFrame(flat[120:]).write_csv(parts / "part-2.csv")
    (parts / "notes.txt").write_text("not a seed file")

    files = read_many(str(parts / "part-*"))
    assert [u.rsplit("/", 1)[1] for u, _ in files] == ["part-0.parquet", "part-1.jsonl", "part-2.csv"]
    parsed = parse_sources(files, input_column="input", id_column="id")
    assert sorted(s["seed_id"] for s in parsed.seeds) == sorted(r["id"] for r in flat)
    assert parsed.rows_in == 175 + 2  # a broken line and a repeated id are counted, not lost
    assert {(r["seed_id"], r["reason"]) for r in parsed.rejects} == {
        ("part-1.jsonl:line-61", "malformed_json"), ("seed_task_0", "duplicate_seed_id")}
    assert len(parsed.digest) == 64
    (parts / "part-2.csv").write_text((parts / "part-2.csv").read_text() + "extra_1,One more task,\n")
    assert parse_sources(read_many(str(parts / "part-*")), input_column="input", id_column="id").digest != parsed.digest


def test_glob_matching_nothing_names_the_pattern(tmp_path):
    from distillery.adapters.storage import StorageError, read_many

    with pytest.raises(StorageError, match=r"seeds-\*\.jsonl: the pattern matched no files"):
        read_many(str(tmp_path / "seeds-*.jsonl"), "seed file")


def test_positional_ids_name_their_file_when_there_are_many():
    from distillery.sources import parse_sources

    a = b'{"instruction": "one"}\n{"instruction": "two"}'
    parsed = parse_sources([("x/a.jsonl", a), ("x/b.jsonl", a)], limit=3)
    assert [s["seed_id"] for s in parsed.seeds] == ["a.jsonl:row-1", "a.jsonl:row-2", "b.jsonl:row-1"]


def test_seen_ids_match_a_set_across_many_merges():
    """The streamed source's seed-id memory (64-bit hashes in a sorted array, merged every
    `batch` new ids) answers exactly as a set of the ids would, repeats across merges included."""
    import random

    from distillery.sources import SeenIds

    rng = random.Random(5)
    seen, reference = SeenIds(batch=7), set()
    for _ in range(3000):
        seed_id = f"id-{rng.randrange(1200)}"
        assert seen.add(seed_id) == (seed_id not in reference), seed_id
        reference.add(seed_id)
    assert list(seen.old) == sorted(seen.old) and len(seen.old) + len(seen.new) == len(reference)
