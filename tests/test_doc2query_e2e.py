"""The Promptagator-style `doc2query` flow end to end on the default model: a small real
corpus (Self-Instruct seed answers), the repository's labelled examples, short outputs.
Each filter acts on a planted candidate (a good query, a query that finds another
document, an unanswerable one, a one-word one, one for an unknown document, an empty one,
a repeated one, a malformed line) and on an empty document; every row carries its lineage."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from conftest import ROOT, SEEDS, published, read_seeds, tiny_recipe_dict

pytestmark = pytest.mark.engine

CORPUS = ["seed_task_143", "seed_task_52", "seed_task_111", "seed_task_86"]  # minimum wage, warmup, colors, fintech


def test_doc2query_writes_round_trip_filtered_pairs(prefect_api, tmp_path):
    from distillery.recipes.doc2query import Doc2QueryRecipe
    from flows.doc2query import doc2query

    answers = {r["id"]: r["instances"][0]["output"] for r in read_seeds()}
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"id": i, "text": answers[i]} for i in CORPUS] + [{"id": "blank-doc", "text": "  "}]  # planted: empty
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    good = "California minimum wage Labor Code"
    planted = {  # query -> (its document, the reason it must be rejected)
        "state law on quad stretch, hip opener and arm circles": ("seed_task_143", "bm25_roundtrip"),  # finds the warmup doc
        "volcanic eruption magma tectonic plates": ("seed_task_111", "bm25_roundtrip"),  # nothing to do with any document
        "fintech": ("seed_task_86", "length"),
        "what is the minimum wage in Nevada": ("seed_task_999", "unknown_document"),
    }
    candidates = tmp_path / "candidates.jsonl"
    lines = [json.dumps({"doc_id": "seed_task_143", "query": good}),
             *(json.dumps({"doc_id": d, "query": q}) for q, (d, _) in planted.items()),
             json.dumps({"doc_id": "seed_task_52", "query": ""}),  # planted: no query
             json.dumps({"doc_id": "seed_task_143", "query": good}),  # planted: the same pair again (dedup)
             "{oops"]  # planted: a malformed line
    candidates.write_text("\n".join(lines) + "\n")

    data = tiny_recipe_dict(str(SEEDS), str(tmp_path / "d2q"))
    del data["source"]
    data["flow"] = "doc2query"
    data["judge"]["enabled"] = False
    data["doc2query"] = {"corpus_uri": str(corpus), "examples_uri": str(ROOT / "data" / "doc2query_examples.jsonl"),
                         "queries_per_doc": 2, "temperature": 0.8, "max_tokens": 32, "top_k": 1, "doc_words": 120,
                         "candidates_uri": str(candidates)}
    result = doc2query(Doc2QueryRecipe.model_validate(data))
    manifest, kept, rejected = published(tmp_path / "d2q")
    s = result["summary"]
    syn = s["synthesis"]

    # round 0: the planted candidates, each check fired on its case
    round0, round1 = syn["rounds"]
    assert round0["source"] == "candidates" and round0["proposed"] == 7 and round0["kept"] == 2
    assert round0["rejected_by_reason"] == {"bm25_roundtrip": 2, "length": 1, "no_query": 1, "unknown_document": 1}
    by_query = {r["prompt"]: r for r in rejected if r["stage"] == "synthesize" and json.loads(r["lineage"]).get("source") == "candidates"}
    for query, (doc_id, reason) in planted.items():
        assert by_query[query]["reason"] == reason and by_query[query]["seed_id"] == doc_id
    wrong = by_query["state law on quad stretch, hip opener and arm circles"]
    assert "ranks" in wrong["detail"] and "top hit 'seed_task_52'" in wrong["detail"] and json.loads(wrong["lineage"])["bm25_rank"] > 1
    assert "no query term" in by_query["volcanic eruption magma tectonic plates"]["detail"]
    assert [r["reason"] for r in rejected if r["reason"] == "malformed_json"] == ["malformed_json"]
    assert [r["seed_id"] for r in rejected if r["reason"] == "empty_document"] == ["blank-doc"]

    # the good planted pair survives once (its repeat is an exact duplicate): query -> its document
    pair = [r for r in kept if r["prompt_text"] == good]
    assert len(pair) == 1 and pair[0]["response"] == answers["seed_task_143"] and pair[0]["seed_id"] == "seed_task_143"
    assert pair[0]["messages"] == [{"role": "user", "content": good}, {"role": "assistant", "content": answers["seed_task_143"]}]
    assert pair[0]["teacher"] == "candidates" and json.loads(pair[0]["lineage"])["bm25_rank"] == 1
    assert [r["prompt"] for r in rejected if r["reason"] == "exact_duplicate"] == [good]

    # round 1: the teacher wrote 2 queries for each of the 4 documents; the round trip judged them all
    assert round1["source"] == "teacher" and round1["proposed"] == 8
    assert syn["documents"] == 4 and syn["examples"] == 4 and syn["teacher_completion_tokens"] > 0
    for row in kept:
        lineage = json.loads(row["lineage"])
        assert lineage["recipe"] == "doc2query" and lineage["bm25_rank"] == 1 and lineage["bm25_score"] > 0
        assert row["response"] == answers[lineage["doc_id"]] and row["seed_id"] == lineage["doc_id"]
        if lineage["source"] == "teacher":
            assert row["teacher"] == "teacher" and row["teacher_model"] == "smollm2-135m-instruct" and lineage["examples"] == 4
    for row in rejected:  # every rejected row carries its lineage too
        lineage = json.loads(row["lineage"])
        assert lineage["recipe"] == "doc2query"
        if row["reason"] == "bm25_roundtrip":
            assert "ranks" in row["detail"] and lineage["bm25_rank"] >= 1

    # accounting: rows in = every candidate query + the malformed line + the empty document
    assert s["rows_in"] == 7 + 1 + 8 + 1 == s["kept"] + s["rejected"] == len(kept) + len(rejected)
    assert s["generated"] == round0["kept"] + round1["kept"]
    assert s["diversity"]["rows"] == len(kept) and s["diversity"]["near_seed_share"] is not None
    assert manifest["recipe"]["flow"] == "doc2query"
    assert "| 0 | 7 | 2 |" in (tmp_path / "d2q" / "report.md").read_text()

    # a rerun of the finished build is a no-op
    again = doc2query(Doc2QueryRecipe.model_validate(data))
    assert again["unchanged"] is True and again["run_id"] == result["run_id"]


def test_doc2query_judge_scores_relevance_when_asked(prefect_api, tmp_path):
    """Optional: the shared judge scores each pair (the document as an answer to the query)."""
    from distillery.recipes.doc2query import Doc2QueryRecipe
    from flows.doc2query import doc2query

    answers = {r["id"]: r["instances"][0]["output"] for r in read_seeds()}
    corpus = tmp_path / "corpus.parquet"
    import pyarrow as pa

    pq.write_table(pa.table({"doc": [answers[i] for i in CORPUS[:3]], "key": CORPUS[:3]}), corpus)
    examples = [json.loads(line) for line in (ROOT / "data" / "doc2query_examples.jsonl").read_text().splitlines()][:2]
    data = tiny_recipe_dict(str(SEEDS), str(tmp_path / "judged"))
    del data["source"]
    data["flow"] = "doc2query"
    data["judge"].update({"enabled": True, "rubric": "Rate how well the response (a document) answers the instruction (a search query)."})
    data["doc2query"] = {"corpus_uri": str(corpus), "text_column": "doc", "id_column": "key",
                         "examples": [{"document": e["document"], "query": e["query"]} for e in examples],
                         "queries_per_doc": 1, "max_tokens": 32, "top_k": 2, "seed": 1}
    result = doc2query(Doc2QueryRecipe.model_validate(data))
    _, kept, rejected = published(tmp_path / "judged")
    s = result["summary"]
    assert s["rows_in"] == 3 == s["kept"] + s["rejected"]
    assert s["judge_report"] is not None and s["judge_report"]["judged"] == s["generated"]
    for row in kept:
        assert row["judge_score"] is not None and 1 <= row["judge_score"] <= 10 and row["judge_model"]
        assert json.loads(row["lineage"])["examples"] == 2 and row["response"] == answers[row["seed_id"]]
    assert all(json.loads(r["lineage"])["recipe"] == "doc2query" for r in rejected)
