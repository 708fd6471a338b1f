"""The WRAP `rephrase` flow end to end on the default model: real documents (Self-Instruct
seed answers) in text files, short outputs. Each filter acts on a planted case (an empty
document, a whitespace-only one, a copy of a document), every row carries its lineage,
and a rerun of the finished build is a no-op."""

from __future__ import annotations

import json

import pytest

from conftest import SEEDS, published, read_seeds, tiny_recipe_dict

pytestmark = pytest.mark.engine


def test_rephrase_chunks_styles_and_records_spans(prefect_api, tmp_path):
    from distillery.recipes.rephrase import STYLES
    from distillery.recipes.rephrase import RephraseRecipe
    from flows.rephrase import rephrase

    answers = {r["id"]: r["instances"][0]["output"] for r in read_seeds()}
    docs = tmp_path / "docs"
    docs.mkdir()
    texts = {"minimum-wage.txt": answers["seed_task_143"], "motivation.txt": answers["seed_task_116"],
             "minimum-wage-copy.txt": answers["seed_task_143"],  # planted: a copy (dedup)
             "empty.txt": "", "blank.txt": " \n\n\t \n"}  # planted: nothing to rephrase
    for name, text in texts.items():
        (docs / name).write_text(text)

    data = tiny_recipe_dict(str(SEEDS), str(tmp_path / "wrap"))
    del data["source"]  # the flow reads rephrase.documents_uri; source mirrors it for the card
    data["flow"] = "rephrase"
    data["judge"]["enabled"] = False
    data["dedup"]["field"] = "response"
    data["sampling"]["max_tokens"] = 48
    data["rephrase"] = {"documents_uri": str(docs / "*.txt"), "chunk_tokens": 96, "styles": ["medium", "qa"]}
    recipe = RephraseRecipe.model_validate(data)
    result = rephrase(recipe)
    manifest, kept, rejected = published(tmp_path / "wrap")
    s = result["summary"]

    # rows in = chunk x style for the three real documents + the two empty ones; nothing silently dropped
    syn = s["synthesis"]
    assert syn["documents"] == 3 and syn["documents_rejected"] == 2 and syn["chunks"] >= 4
    assert 0 < syn["chunk_tokens_max"] <= 96
    assert s["rows_in"] == syn["chunks"] * 2 + 2 == s["kept"] + s["rejected"] == len(kept) + len(rejected)
    assert s["completions_per_prompt"] == 1 and s["generated"] == syn["chunks"] * 2

    # planted: empty documents rejected with their reason, before generation, with lineage
    empty = {r["seed_id"]: r for r in rejected if r["reason"] == "empty_document"}
    assert set(empty) == {"empty.txt", "blank.txt"} and all(r["stage"] == "synthesize" for r in empty.values())
    assert json.loads(empty["blank.txt"]["lineage"])["doc_id"] == "blank.txt"

    # lineage on every generated row: the document, the exact chunk span, the style
    generated = [*kept, *(r for r in rejected if r["stage"] != "synthesize")]
    by_doc: dict[str, set] = {}
    for row in generated:
        lineage = json.loads(row["lineage"])
        assert lineage["recipe"] == "rephrase" and lineage["style"] in ("medium", "qa")
        start, end = lineage["span"]
        chunk = texts[lineage["doc_id"]][start:end]
        prompt = row["prompt_text"] if "prompt_text" in row else row["prompt"]  # kept rows; rejected rows keep `prompt`
        assert prompt == f"{STYLES[lineage['style']]}\n\n{chunk}" and row.get("input", chunk) == chunk
        assert row["seed_id"] == f"{lineage['doc_id']}#{lineage['chunk']}:{lineage['style']}"
        by_doc.setdefault(lineage["doc_id"], set()).add((start, end))
    for name in ("minimum-wage.txt", "motivation.txt"):  # the spans cover each document, in order, without overlap
        spans = sorted(by_doc[name])
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
        covered = "".join(texts[name][a:b] for a, b in spans)
        assert "".join(covered.split()) == "".join(texts[name].split())
    assert len(by_doc["motivation.txt"]) >= 2  # a long document became several chunks

    # planted: the copy's rephrasings duplicate the original's (greedy decoding): one of each pair is kept
    dups = [r for r in rejected if r["reason"] in ("exact_duplicate", "near_duplicate")]
    pairs = {}
    for row in generated:
        lineage = json.loads(row["lineage"])
        if lineage["doc_id"].startswith("minimum-wage"):
            pairs.setdefault((tuple(lineage["span"]), lineage["style"]), []).append(row)
    kept_ids = {r["id"] for r in kept}
    for key, rows in pairs.items():
        assert len(rows) == 2 and rows[0]["response"] == rows[1]["response"], key
        assert sum(r["seed_id"].startswith("minimum-wage-copy") or r["seed_id"].startswith("minimum-wage.txt") for r in rows) == 2
        assert sum(r in dups for r in rows) >= 1
    assert len(dups) >= len(pairs) and kept_ids

    # the diversity report compares the rephrasings with their chunks
    div = s["diversity"]
    assert div["rows"] == len(kept) and 0 < div["distinct_1"] <= 1 and div["near_seed_share"] is not None
    assert manifest["recipe"]["flow"] == "rephrase" and manifest["recipe"]["source"]["uri"] == str(docs / "*.txt")
    assert "Diversity" in (tmp_path / "wrap" / "report.md").read_text()

    # a rerun of the finished build is a no-op
    again = rephrase(RephraseRecipe.model_validate(data))
    assert again["unchanged"] is True and again["run_id"] == result["run_id"]
