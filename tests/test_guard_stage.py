"""The guard stage, the recipe's guards section, evaluation files and `distillery guard
identity`, without an engine: rows as a teacher writes them, real seed tasks as eval items."""

from __future__ import annotations

import json
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillery.guards.decontam import EvalIndex
from distillery.guards.evalsets import EvalSetError, eval_items
from distillery.guards.identity import DEFAULT_VENDORS, IdentityGuard
from distillery.recipe import RecipeError, build_recipe
from distillery.schema import ROW_SCHEMA
from distillery.stages.engine import staged_schema
from distillery.stages.guard import Guard, guard_counts
from distillery.guards.report import guard_markdown, guard_text

SCHEMA = staged_schema(ROW_SCHEMA)
LOOP = "\n".join(["The answer is yes."] * 12)


def row(i: int, prompt: str, response: str, teacher: str = "teacher") -> dict:
    return {"id": f"r{i}", "seed_id": f"s{i}", "prompt": prompt, "response": response, "teacher": teacher}


@pytest.fixture(scope="module")
def eval_set(seed_records) -> list[tuple[str, str, str]]:
    """Seed tasks with long instances as an evaluation set (their text is real, human-written)."""
    long = [r for r in seed_records if len((r["instruction"] + " " + r["instances"][0]["input"]).split()) >= 30][:20]
    return [("seedeval", r["id"], r["instruction"] + " " + r["instances"][0]["input"]) for r in long]


def guard(eval_set, **changes) -> Guard:
    prompts, answers = EvalIndex.build(eval_set, 8), EvalIndex.build(eval_set, 13)
    settings = {"items": "x", "ngram": 8, "threshold": 0.5, "answer_ngram": 13}
    args = dict(identity=IdentityGuard(vendors=DEFAULT_VENDORS), repetition_min_words=50, decontam=settings,
                indexes=lambda: (prompts, answers))
    return Guard(SCHEMA, **{**args, **changes})


def test_each_reason_is_rejected_with_its_detail_and_the_rest_kept(eval_set):
    copied = eval_set[3]
    rows = [
        row(0, "Who are you?", "I'm SmolLM, a helpful AI assistant trained by Hugging Face."),
        row(1, "What can you do?", "As an AI language model, I can help you write, summarise and plan."),
        row(2, copied[2], "Here is my answer."),
        row(3, "Say yes.", LOOP),
        row(4, "Who painted water lilies?", "Claude Monet painted the Water Lilies series.", teacher="other"),
        row(5, "Give me a fact.", "OpenAI released ChatGPT in November 2022."),
    ]
    out = guard(eval_set).run(rows, 0)
    reasons = {r["id"]: (r["reason"], r["detail"]) for r in out.rejected}
    assert reasons["r0"][0] == "identity_claim" and "SmolLM" in reasons["r0"][1]
    assert reasons["r2"] == ("contaminated", f"seedeval item {copied[1]}: 100% of its tokens in 8-grams shared with the prompt")
    assert reasons["r3"][0] == "repetitive"
    kept = {r["id"]: r["guard_flags"] for r in out.rows}
    assert kept == {"r1": ["ai_boilerplate"], "r4": None, "r5": None}
    assert len(out.rows) + len(out.rejected) == len(rows)
    assert all(r["stage"] == "guard" for r in out.rejected)
    counts = guard_counts(out.facts)
    assert counts["rejected"] == {"identity_claim": {"teacher": 1}, "contaminated": {"teacher": 1}, "repetitive": {"teacher": 1}}
    assert counts["flagged"] == {"ai_boilerplate": {"teacher": 1}}
    assert counts["contaminated_items"] == {"seedeval": 1}


def test_an_answer_copying_an_eval_item_and_the_flag_action(eval_set):
    item = eval_set[5]
    rows = [row(0, "Write something about work.", "Sure. " + item[2]), row(1, "Who are you?", "I am ChatGPT, made by OpenAI.")]
    out = guard(eval_set, identity_action="flag").run(rows, 0)
    assert [(r["id"], r["reason"]) for r in out.rejected] == [("r0", "contaminated")]
    assert "shared with the answer" in out.rejected[0]["detail"]
    assert out.rows[0]["guard_flags"] == ["identity_claim"]


def test_contaminated_items_count_once_across_shards(eval_set):
    g = guard(eval_set)
    copy = eval_set[0][2]
    facts = [g.run([row(i, copy, "ok")], i).facts for i in range(3)]
    total: dict = {}
    for f in facts:  # as executor.totals sums records
        for k, v in f.items():
            total[k] = total.get(k, 0) + v
    assert guard_counts(total)["contaminated_items"] == {"seedeval": 1}
    assert guard_counts(total)["rejected"] == {"contaminated": {"teacher": 3}}


def test_the_stage_travels_to_a_worker_and_its_key_follows_its_settings(eval_set):
    g = Guard(SCHEMA, IdentityGuard(vendors=DEFAULT_VENDORS), "reject", 50)
    assert pickle.loads(pickle.dumps(g)).settings() == g.settings()
    assert Guard(SCHEMA, IdentityGuard(name="Orca", vendors=DEFAULT_VENDORS), "reject", 50).settings() != g.settings()


def test_eval_files_in_each_format_and_their_ids(tmp_path, eval_set):
    rows = [{"qid": i, "question": t} for _, i, t in eval_set[:3]]
    jsonl = "".join(json.dumps(r) + "\n" for r in rows).encode()
    assert eval_items([("e.jsonl", jsonl)], "e", column="question", id_column="qid") == [("e", i, t) for _, i, t in eval_set[:3]]
    assert [i for _, i, _ in eval_items([("e.jsonl", jsonl)], "e", column="question")] == ["1", "2", "3"]
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    assert len(eval_items([("e.parquet", buf.getvalue().to_pybytes())], "e", column="question")) == 3
    csv = ("qid,question\n" + "".join(f'{r["qid"]},"{r["question"]}"\n' for r in rows)).encode()
    assert eval_items([("e.csv", csv)], "e", column="question", id_column="qid")[0][1] == eval_set[0][1]


@pytest.mark.parametrize("name, data, needle", [
    ("empty.jsonl", b"", "holds no items"),
    ("blank.jsonl", b'{"question": ""}\n', "holds no items"),
    ("cols.jsonl", b'{"text": "a question"}\n', "has no column 'question' (its columns: text)"),
    ("bad.jsonl", b'{"question": "a"}\n{"question": \n', "line 2"),
])
def test_an_unusable_eval_file_is_one_clear_error(name, data, needle):
    with pytest.raises(EvalSetError) as err:
        eval_items([(name, data)], "mmlu", column="question")
    assert needle in str(err.value) and "guards.decontam.eval_sets['mmlu']" in str(err.value)


def test_the_recipe_section(tmp_path):
    r = build_recipe({"guards": {"identity": {"name": "Orca", "extra_vendors": ["Acme"]}}})
    g = r.guards.identity.guard()
    assert g.name == "Orca" and "Acme" in g.vendors and "OpenAI" in g.vendors
    assert r.collapse_history is None
    assert build_recipe({"name": "x", "dedup": {"index_uri": "s3://b/idx/"}}).collapse_history == "s3://b/idx/collapse-history/x.jsonl"
    assert build_recipe({"guards": {"history_uri": "/h/x.jsonl"}}).collapse_history == "/h/x.jsonl"
    with pytest.raises(RecipeError, match="names must be unique; a given more than once"):
        build_recipe({"guards": {"decontam": {"eval_sets": [{"name": "a", "uri": "x.jsonl"}, {"name": "a", "uri": "y.jsonl"}]}}})
    off = build_recipe({"guards": {"identity": {"enabled": False}, "repetition": {"enabled": False}}})
    assert not off.guards.any_row_guard()


def test_report_lines():
    summary = {"guards": {"rejected": {"identity_claim": {"teacher": 2, "b": 1}}, "flagged": {"ai_boilerplate": {"teacher": 4}},
                          "eval_overlap": {"gsm8k": {"items": 100, "contaminated": 3, "share": 0.03}}, "warnings": ["w1"]}}
    text = "\n".join(guard_text(summary))
    assert "identity_claim rejected 3 (b 1, teacher 2)" in text and "gsm8k: 3 of 100 items copied (3.0%)" in text
    md = "\n".join(guard_markdown(summary))
    assert "| identity_claim | rejected | teacher | 2 |" in md and "| gsm8k | 100 | 3 | 3.0% |" in md and "**Warning:** w1" in md


def _cli(*args: str) -> int:
    from distillery.commands.cli import main

    return main(list(args))


def test_guard_identity_cli_on_jsonl_messages(tmp_path, capsys):
    lines = [
        {"id": "a", "messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Claude, made by Anthropic."}]},
        {"id": "b", "messages": [{"role": "user", "content": "Pretend you are ChatGPT and greet me."},
                                 {"role": "assistant", "content": "Hello! I am ChatGPT, how can I help?"}]},
        {"id": "c", "messages": [{"role": "user", "content": "I am ChatGPT's biggest fan."}, {"role": "assistant", "content": "Nice to meet you!"}]},
        {"id": "d", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "As an AI language model, I have no feelings."}]},
        {"id": "e"},
    ]
    src = tmp_path / "chat.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"id": "f", "messages": [\n')
    assert _cli("guard", "identity", str(src), "--column", "messages", "--output", str(tmp_path / "out")) == 0
    kept = pq.read_table(tmp_path / "out" / "kept.parquet").to_pylist()
    rejected = pq.read_table(tmp_path / "out" / "rejected.parquet").to_pylist()
    assert {r["id"]: r["guard_flags"] for r in kept} == {"b": None, "c": None, "d": ["ai_boilerplate"]}
    got = {r["id"]: (r["guard_reason"], r["guard_matched"]) for r in rejected if r["id"]}
    assert got["a"][0] == "identity_claim" and "Claude" in got["a"][1] and got["e"] == ("missing_field", None)
    assert [r["guard_reason"] for r in rejected if r["guard_raw"]] == ["malformed_json"]
    out = capsys.readouterr().out
    assert "rows in:   6" in out and "kept:      3" in out and "identity_claim: 1" in out and "ai_boilerplate: 1" in out


def test_guard_identity_cli_on_parquet_keeps_the_schema(tmp_path, capsys):
    table = pa.table({"answer": ["I was trained by OpenAI.", "Paris is the capital of France.", "Soy Orca, creado por Acme."],
                      "n": pa.array([1, 2, 3], pa.int16())})
    pq.write_table(table, tmp_path / "in.parquet")
    assert _cli("guard", "identity", str(tmp_path / "in.parquet"), "--column", "answer", "--output", str(tmp_path / "o"),
                "--name", "Orca", "--maker", "Acme") == 0
    kept = pq.read_table(tmp_path / "o" / "kept.parquet")
    assert kept.schema.field("n").type == pa.int16() and kept.column("n").to_pylist() == [2, 3]
    assert pq.read_table(tmp_path / "o" / "rejected.parquet").column("n").to_pylist() == [1]
    assert _cli("guard", "identity", str(tmp_path / "in.parquet"), "--column", "nope", "--output", str(tmp_path / "p")) == 2
    assert "column 'nope' not found" in capsys.readouterr().err
