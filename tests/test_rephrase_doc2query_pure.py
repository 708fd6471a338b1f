"""WRAP rephrasing and Promptagator doc->query: chunking, prompts, parser, BM25 round trip,
document reading and the recipe models, without an engine."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from distillery.recipes.doc2query import MAX_EXAMPLES, RoundTrip, bm25_tokens, cut_words, few_shot_prompt, length_check, parse_query
from distillery.recipes.rephrase import STYLES, WRAP_SYSTEM_PROMPT, chunk_document, file_names, read_documents, rephrase_seeds, word_count
from distillery.sources import SourceError
from conftest import read_seeds

ROOT = Path(__file__).resolve().parents[1]


def seed_output(task_id: str) -> str:
    return next(r["instances"][0]["output"] for r in read_seeds() if r["id"] == task_id)


def check_chunks(text: str, chunks, limit: int, count=word_count) -> None:
    """Exact spans, in order, within budget, covering every non-blank character."""
    pos = 0
    for c in chunks:
        assert c.text == text[c.start:c.end] and c.text == c.text.strip() and c.text
        assert c.start >= pos and text[pos:c.start].strip() == ""  # only whitespace between chunks
        assert c.tokens == count(c.text) <= limit
        pos = c.end
    assert text[pos:].strip() == ""


# ----------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("task_id", ["seed_task_119", "seed_task_116", "seed_task_52", "seed_task_28"])
@pytest.mark.parametrize("limit", [12, 40, 150])
def test_chunks_are_exact_spans_within_the_budget_on_real_text(task_id, limit):
    text = seed_output(task_id)
    chunks = chunk_document(text, limit)
    check_chunks(text, chunks, limit)
    assert sum(c.tokens for c in chunks) == word_count(text)  # no word lost or repeated


def test_chunks_end_at_paragraphs_then_sentences():
    sentence = "The quick brown fox jumps over the lazy dog again."  # 10 words
    p1, p2 = " ".join([sentence] * 3), " ".join([sentence] * 3)
    text = f"{p1}\n\n{p2}"
    chunks = chunk_document(text, 50)
    assert [c.text for c in chunks] == [p1, p2]  # not 50 words running into the second paragraph
    long = " ".join([sentence] * 6)
    chunks = chunk_document(long, 25)
    check_chunks(long, chunks, 25)
    assert all(c.text.endswith(".") for c in chunks) and [c.tokens for c in chunks] == [20, 20, 20]


def test_a_small_remainder_does_not_force_an_early_cut():
    # the only paragraph boundary is after 5 words; with min_fill the chunk goes on to a sentence end instead
    text = "Short intro line here.\n\n" + " ".join(["One two three four five six seven eight nine ten."] * 4)
    chunks = chunk_document(text, 30)
    check_chunks(text, chunks, 30)
    assert chunks[0].tokens >= 15 and chunks[0].text.endswith(".")


def test_over_long_sentences_and_words_are_cut():
    run_on = " ".join(f"w{i}" for i in range(100))  # no punctuation at all
    chunks = chunk_document(run_on, 30)
    check_chunks(run_on, chunks, 30)
    assert [c.tokens for c in chunks] == [30, 30, 30, 10]
    blob = "x" * 500  # one 'word' longer than the budget, counted in characters
    chars = chunk_document(blob, 64, count_tokens=len)
    check_chunks(blob, chars, 64, count=len)
    assert [c.tokens for c in chars] == [64] * 7 + [52]


def test_blank_text_gives_no_chunks_and_budget_must_be_positive():
    assert chunk_document(" \n\n \t", 10) == []
    with pytest.raises(ValueError):
        chunk_document("text", 0)


def test_markdown_lists_split_at_lines():
    text = seed_output("seed_task_116")  # '- tip' lines
    chunks = chunk_document(text, 60)
    check_chunks(text, chunks, 60)
    assert len(chunks) > 1


def test_wrap_styles_are_the_papers_four_prompts():
    assert set(STYLES) == {"easy", "medium", "hard", "qa"}
    assert "toddler" in STYLES["easy"] and "Wikipedia" in STYLES["medium"]
    assert "erudite scholar" in STYLES["hard"] and '"Question:"' in STYLES["qa"] and '"Answer:"' in STYLES["qa"]
    assert WRAP_SYSTEM_PROMPT.startswith("A chat between a curious user")


# ----------------------------------------------------------------------------- documents


def test_text_files_are_documents_named_below_their_common_folder():
    files = [("/x/docs/a.md", b"Alpha beta gamma delta."), ("/x/docs/sub/b.txt", b"  \n\n "), ("/x/docs/c.md", b"hi"),
             ("/x/docs/d.rst", "Caf\u00e9 au lait, s'il vous pla\u00eet.".encode())]
    docs = read_documents(files, min_words=2)
    assert [d.doc_id for d in docs.docs] == ["a.md", "d.rst"] and docs.docs[1].text.startswith("Caf\u00e9")
    assert {r["seed_id"]: r["reason"] for r in docs.rejects} == {"sub/b.txt": "empty_document", "c.md": "short_document"}
    assert docs.rows_in == 4 and all(r["stage"] == "synthesize" for r in docs.rejects)
    assert json.loads(docs.rejects[0]["lineage"]) == {"recipe": "rephrase", "doc_id": "sub/b.txt", "source": "/x/docs/sub/b.txt"}
    assert file_names(["s3://b/k/a.md"]) == ["a.md"]
    assert read_documents(files).digest == docs.digest != read_documents(files[:2]).digest


def test_table_documents_with_ids_rejects_and_dotted_columns():
    lines = [json.dumps({"id": "d1", "body": {"text": "First document text."}}), json.dumps({"id": "d2", "body": {"text": "   "}}),
             "{not json", json.dumps({"id": "d1", "body": {"text": "Same id again."}}), json.dumps({"id": "d3", "body": {}})]
    docs = read_documents([("c.jsonl", "\n".join(lines).encode())], text_column="body.text", recipe="doc2query")
    assert [d.doc_id for d in docs.docs] == ["d1"]
    reasons = sorted((r["seed_id"], r["reason"]) for r in docs.rejects)
    assert reasons == [("d1", "duplicate_doc_id"), ("d2", "empty_document"), ("d3", "empty_document"), ("line-3", "malformed_json")]
    assert docs.rows_in == 5 and all(json.loads(r["lineage"])["recipe"] == "doc2query" for r in docs.rejects)
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": ["a b c", "d e f"]}), buf)
    table = read_documents([("c.parquet", buf.getvalue())], id_column=None, limit=1)
    assert [(d.doc_id, d.text) for d in table.docs] == [("row-1", "a b c")]
    with pytest.raises(SourceError, match="'content' not found"):
        read_documents([("c.parquet", buf.getvalue())], text_column="content", id_column=None)


def test_seeds_are_chunks_times_styles_with_lineage():
    text = seed_output("seed_task_119")
    docs = read_documents([("/d/parenting.txt", text.encode())])
    seeds, chunks = rephrase_seeds(docs.docs, ["medium", "qa"], 80)
    assert len(seeds) == 2 * len(chunks) and len(chunks) > 3
    for seed in seeds:
        lineage = json.loads(seed["lineage"])
        start, end = lineage["span"]
        assert lineage["recipe"] == "rephrase" and lineage["doc_id"] == "parenting.txt"
        assert seed["input"] == text[start:end] == chunks[lineage["chunk"]].text
        assert seed["instruction"] == STYLES[lineage["style"]]
    assert len({s["seed_id"] for s in seeds}) == len(seeds)
    with pytest.raises(ValueError, match="unknown styles"):
        rephrase_seeds(docs.docs, ["formal"], 80)


# ----------------------------------------------------------------------------- doc2query


def test_few_shot_prompt_shows_up_to_eight_examples_then_opens_the_query():
    examples = [(f"document number {i} " * 50, f"query {i}") for i in range(MAX_EXAMPLES)]
    messages = few_shot_prompt(examples, "the target document text", task="Write a question.", doc_words=10)
    body = messages[0]["content"]
    assert body.startswith("Write a question.\n\nDocument: ") and body.count("Document: ") == 9
    assert "Query: query 7\n\nDocument: the target document text\nQuery:" in body
    assert messages[1] == {"role": "assistant", "content": "Query:"}
    assert cut_words("a b c d", 2) == "a b ..." and cut_words("a  b", 5) == "a b"
    with pytest.raises(ValueError, match="at most 8"):
        few_shot_prompt(examples + [("d", "q")], "x")


@pytest.mark.parametrize("text,query", [
    (" what is the federal minimum wage?\nDocument: another", "what is the federal minimum wage?"),
    ('Query: "hill climbing search algorithm"', "hill climbing search algorithm"),
    ("\n\n  how to   stay motivated \n", "how to stay motivated"),
    ("\nDocument: The teacher wrote a new document instead.", None),
    ("", None),
    ('  ""  ', None),
    ("\n```\nHow do you fix the printer?\n```", "How do you fix the printer?"),
    ('Query 2: "is $7.25 the minimum wage"', "is $7.25 the minimum wage"),
])
def test_parse_query(text, query):
    assert parse_query(text) == query


def test_round_trip_keeps_queries_that_find_their_document():
    ids = ["seed_task_143", "seed_task_52", "seed_task_111", "seed_task_86"]
    trip = RoundTrip({i: seed_output(i) for i in ids})
    good = trip.check("California minimum wage Labor Code", "seed_task_143", top_k=1)
    assert good.keep and good.facts["rank"] == 1 and good.facts["score"] > 0
    wrong = trip.check("state law on quad stretch, hip opener and arm circles", "seed_task_143", top_k=1)  # seed_task_52's content
    assert not wrong.keep and wrong.reason == "bm25_roundtrip" and wrong.facts["score"] > 0 and wrong.facts["rank"] > 1
    assert f"ranks {wrong.facts['rank']} of 4" in wrong.detail and "top hit 'seed_task_52'" in wrong.detail
    unrelated = trip.check("volcanic eruption magma tectonic", "seed_task_143", top_k=3)
    assert not unrelated.keep and unrelated.facts["rank"] == 4 and "no query term weighs in it" in unrelated.detail
    # ties count against the query's document
    twins = RoundTrip({"a": "solar panels on roofs", "b": "solar panels on roofs", "c": "wind farms at sea",
                       "d": "hydro dams in valleys", "e": "heat pumps for homes"})
    assert twins.rank("solar panels", "a")[0] == 2
    assert twins.check("solar panels", "a", top_k=2).keep and not twins.check("solar panels", "a", top_k=1).keep
    assert bm25_tokens("Labor Code § 1182.12!") == ["labor", "code", "1182", "12"]
    assert bm25_tokens("What is the minimum wage, and why?") == ["minimum", "wage"]
    # a query of common words only finds nothing: before stop words were left out, these passed
    # the round trip at top_k=3 for three of the four documents
    for query in ("what is the best way to do it", "how can I do this for you", "what are they and why"):
        for doc_id in ids:
            verdict = trip.check(query, doc_id, top_k=3)
            assert not verdict.keep and verdict.reason == "bm25_roundtrip", (query, doc_id)


def test_query_length_bounds():
    assert length_check("minimum wage california", 2, 40).keep
    short = length_check("wage", 2, 40)
    assert not short.keep and short.reason == "length" and "1 words" in short.detail


# ----------------------------------------------------------------------------- recipe models


def test_rephrase_recipe_defaults_mirror_and_bounds():
    from distillery.recipes.rephrase import RephraseRecipe

    recipe = RephraseRecipe.model_validate({"rephrase": {"documents_uri": "notes/*.txt", "styles": ["qa"]}})
    assert recipe.flow == "rephrase" and recipe.rephrase.chunk_tokens == 300
    assert recipe.source.uri == "notes/*.txt" and recipe.source.input_column is None  # the card names the documents
    assert RephraseRecipe().rephrase.styles == ["easy", "medium", "hard", "qa"]
    for bad, match in [({"rephrase": {"chunk_tokens": 8}}, "chunk_tokens"), ({"rephrase": {"styles": ["qa", "qa"]}}, "repeat"),
                       ({"rephrase": {"styles": ["formal"]}}, "styles"), ({"rephrase": {"styles": []}}, "styles"),
                       ({"rephrase": {"chunk_tokens": 2000}}, "leaves no room"), ({"dedup": {"field": "prompt"}}, "dedup.field"),
                       ({"flow": "distill"}, "flow"), ({"rephrase": {"chunk_size": 3}}, "chunk_size")]:
        with pytest.raises(ValidationError, match=match):
            RephraseRecipe.model_validate(bad)


def test_doc2query_recipe_defaults_and_rules():
    from distillery.recipes.doc2query import Doc2QueryRecipe

    recipe = Doc2QueryRecipe.model_validate({"doc2query": {"corpus_uri": "c.jsonl", "examples": [{"document": "d", "query": "q"}]}})
    assert recipe.flow == "doc2query" and not recipe.judge.enabled and recipe.dedup.field == "prompt"
    assert recipe.doc2query.top_k == 3 and recipe.source.uri == "c.jsonl"
    assert Doc2QueryRecipe.model_validate({"judge": {"enabled": True, "min_score": 5}}).judge.enabled  # the judge may be asked for
    nine = [{"document": "d", "query": "q"}] * 9
    for bad, match in [({"sampling": {"n": 2}}, "sampling.n"), ({"extra_teachers": [{"name": "b"}]}, "extra_teachers"),
                       ({"dedup": {"field": "both"}}, "dedup.field"), ({"doc2query": {"examples": nine}}, "at most 8"),
                       ({"doc2query": {"examples": nine[:1], "examples_uri": "e.jsonl"}}, "not both"),
                       ({"doc2query": {"min_words": 5, "max_words": 2}}, "min_words"), ({"doc2query": {"top_k": 0}}, "top_k"),
                       ({"doc2query": {"queries_per_doc": 65}}, "queries_per_doc")]:
        with pytest.raises(ValidationError, match=match):
            Doc2QueryRecipe.model_validate(bad)


def test_every_new_field_has_a_description():
    from distillery.recipes.doc2query import Doc2QueryConfig, Doc2QueryExample, Doc2QueryRecipe
    from distillery.recipes.rephrase import RephraseConfig, RephraseRecipe

    for model in (RephraseConfig, Doc2QueryConfig, Doc2QueryExample):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"
    for model, name in ((RephraseRecipe, "rephrase"), (Doc2QueryRecipe, "doc2query")):
        assert model.model_fields[name].description and model.model_fields["flow"].description
        assert issubclass(model.model_fields[name].annotation, BaseModel)


def test_committed_example_recipes_validate():
    from distillery.recipes.doc2query import Doc2QueryRecipe
    from distillery.recipes.rephrase import RephraseRecipe

    rephrase = RephraseRecipe.model_validate(yaml.safe_load((ROOT / "recipes/rephrase.yaml").read_text()))
    doc2query = Doc2QueryRecipe.model_validate(yaml.safe_load((ROOT / "recipes/doc2query.yaml").read_text()))
    assert sorted(ROOT.glob(rephrase.rephrase.documents_uri)) == [ROOT / "bench/README.md", ROOT / "infra/README.md"]
    assert (ROOT / doc2query.doc2query.corpus_uri).is_file()
    examples = [json.loads(line) for line in (ROOT / doc2query.doc2query.examples_uri).read_text().splitlines()]
    assert 1 <= len(examples) <= MAX_EXAMPLES and all(e["document"] and e["query"] for e in examples)
