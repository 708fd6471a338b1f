"""The `doc2query` flow: (query, positive document) pairs for retriever training, after
Promptagator (Dai et al., 2022).

For every document of the corpus the teacher continues a few-shot prompt (up to 8
labelled (document, query) examples, then the document) with `queries_per_doc` sampled
queries. Each query must survive the round trip: BM25 over the corpus ranks its own
document in the top `top_k` (and gives it a positive score), else it is rejected as
'bm25_roundtrip' with the rank in the detail. Candidate pairs from elsewhere
(`candidates_uri`) go through the same checks first (round 0).

Design choice: the queries do NOT go through the common generation stage. That stage has
the teacher *answer* each prompt; a retriever needs the query and the document that
answers it, which we already have. So the pairs are staged as finished rows (ROW_SCHEMA:
prompt = query, response = document text, messages = [user: query, assistant: document],
teacher = the query writer, lineage = doc id, source, BM25 rank and score) and go through
the shared staged dedup on the query (an identical query for two documents is an
ambiguous pair) and, if enabled, the shared judge (which then scores the document as an
answer to the query: an InPars-style relevance filter; off by default), then publish.

Accounting: rows in = candidate queries (teacher samples and candidates_uri rows) plus the
documents rejected before any query was written (empty, short, prompt too long). Every
query rejected by the parser, the length bounds or the round trip is a stage-'synthesize'
reject; the pairs that pass are the 'generated' rows, which dedup (and the judge) split
into kept and rejected.

The recipe model (Doc2QueryConfig, Doc2QueryRecipe) lives in distillery.recipes.doc2query.
"""

from __future__ import annotations

import hashlib
import json
from functools import partial

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from distillery.adapters.engine import prompt_lengths
from distillery.adapters.storage import read_many, storage_options
from distillery.recipes.doc2query import MAX_EXAMPLES, Doc2QueryRecipe, RoundTrip, few_shot_prompt, length_check, parse_query
from distillery.recipes.rounds import Rounds, Verdict
from distillery.prompts import over_budget
from distillery.recipe import StorageConfig
from distillery.recipes.rephrase import Documents, as_text, files_digest, read_records
from distillery.schema import content_id
from distillery.sources import get_path
from flows.build import open_build, timed, unchanged
from flows.rephrase import load_documents
from flows.staged import staged_synthesis
from tasks.synthesis import run_batches

# ----------------------------------------------------------------------------- tasks


@task(name="load-pairs", cache_policy=NONE)
def load_pairs(uri: str, storage: StorageConfig) -> list[tuple[str, bytes]]:
    return read_many(uri, "pairs file", storage.retries, storage.retry_backoff_seconds,
                     **storage_options(storage.credentials_block, storage.endpoint_url))


# ----------------------------------------------------------------------------- synthesis


def _reject(doc_id: str, reason: str, detail: str, prompt: str, lineage: dict, teacher: str | None = None) -> dict:
    return {"seed_id": doc_id, "stage": "synthesize", "reason": reason, "detail": detail, "prompt": prompt,
            "teacher": teacher, "lineage": json.dumps(lineage)}


def synthesize(recipe: Doc2QueryRecipe, corpus: Documents, examples: list[tuple[str, str]],
               candidates: list[tuple[str, int, dict]], run_id: str, created_at,
               stages: dict[str, float]) -> tuple[list[dict], list[dict], dict]:
    """(pairs that pass, rejected rows, synthesis summary). Runs inside a flow; the engine's
    time goes to stages 'engine_start' and 'generate'."""
    cfg, teacher = recipe.doc2query, recipe.teacher
    logger = get_run_logger()
    docs = {d.doc_id: d for d in corpus.docs}
    trip = RoundTrip({d.doc_id: d.text for d in corpus.docs})
    found, rejected = Rounds(), []
    tokens = {"prompt": 0, "completion": 0}

    def lineage_of(doc_id: str, lineage: dict, v: Verdict) -> str:
        out = {"recipe": "doc2query", "doc_id": doc_id, **lineage}
        if "rank" in v.facts:  # the round trip ran
            out.update({"bm25_rank": v.facts["rank"], "bm25_score": round(v.facts["score"] or 0.0, 4), "top_k": cfg.top_k,
                        "corpus_docs": len(trip)})
        return json.dumps(out)

    def check(number: int, proposal: tuple) -> Verdict:
        doc_id, query = proposal[0], proposal[1]
        if query is None:
            return Verdict(False, "no_query", "the query writer wrote no query" if number else "the row has no query")
        if doc_id not in docs:
            return Verdict(False, "unknown_document", f"document {doc_id!r} is not in the corpus (or was rejected)")
        v = length_check(query, cfg.min_words, cfg.max_words)
        return trip.check(query, doc_id, cfg.top_k) if v.keep else v

    def pair(proposal: tuple, v: Verdict) -> dict:
        doc_id, query, _, lineage, fields = proposal
        doc = docs[doc_id]
        return {
            **fields,
            "id": content_id("doc2query", doc_id, query),
            "messages": [{"role": "user", "content": query}, {"role": "assistant", "content": doc.text}],
            "prompt": query, "response": doc.text, "instruction": query, "input": "", "seed_id": doc_id,
            "lineage": lineage_of(doc_id, lineage, v), "run_id": run_id, "created_at": created_at,
        }

    def reject(proposal: tuple, v: Verdict) -> dict:
        doc_id, query, raw, lineage, fields = proposal
        return {"seed_id": doc_id, "prompt": query or raw, "teacher": fields["teacher"], "lineage": lineage_of(doc_id, lineage, v)}

    def check_round(number: int, proposals: list[tuple[str, str | None, str, dict, dict]]) -> None:
        """proposals: (doc id, query or None, raw text, lineage, row fields)."""
        found.check(number, proposals, partial(check, number), pair, reject, source="candidates" if number == 0 else "teacher")

    if cfg.candidates_uri:
        proposals = []
        for uri, pos, rec in candidates:
            doc_id = as_text(get_path(rec, "doc_id")) or ""
            text = as_text(get_path(rec, "query"))
            query = " ".join(text.split()) if text and text.strip() else None
            fields = {"sample_index": pos, "teacher": "candidates", "teacher_model": cfg.candidates_uri, "sampling": "{}",
                      "finish_reason": None, "prompt_tokens": None, "completion_tokens": None}
            proposals.append((doc_id, query, text or "", {"source": "candidates", "file": uri, "row": pos}, fields))
        check_round(0, proposals)

    # Round 1: the teacher writes queries for every accepted document whose prompt fits.
    convs = [few_shot_prompt(examples, d.text, cfg.task, cfg.doc_words) for d in corpus.docs]
    budget = over_budget(prompt_lengths(teacher.model, convs), cfg.max_tokens, teacher.max_model_len) if convs else []
    todo, too_long = [], 0
    for doc, conv, why in zip(corpus.docs, convs, budget):
        if why:
            rejected.append(_reject(doc.doc_id, "prompt_too_long", f"{why}; lower doc2query.doc_words or use fewer examples",
                                    "", {"recipe": "doc2query", "doc_id": doc.doc_id, "source": "teacher"}))
            too_long += 1
        else:
            todo.append((doc, conv))
    params = {"n": cfg.queries_per_doc, "temperature": cfg.temperature, "top_p": recipe.sampling.top_p,
              "max_tokens": cfg.max_tokens, "seed": cfg.seed}
    settings = json.dumps(params, sort_keys=True)
    proposals, opened = [], stages.get("engine_start", 0.0)
    with timed(stages, "generate"):  # the teacher continues each few-shot prompt's 'Query:' n times
        out = run_batches([conv for _, conv in todo], recipe, params, "write-queries", stages, continue_final=True)
    stages["generate"] -= stages.get("engine_start", 0.0) - opened  # counted as engine start
    for (doc, _), o in zip(todo, out, strict=True):
        if o.get("error"):  # fitted above with the same budget: a bug if it happens
            raise RuntimeError(f"doc2query: a prompt checked to fit did not: {o['error']}")
        for s in o["samples"]:
                tokens["prompt"] += s["prompt_tokens"] or 0
                tokens["completion"] += s["completion_tokens"] or 0
                fields = {"sample_index": s["sample_index"], "teacher": teacher.name, "teacher_model": teacher.model,
                          "sampling": settings, "finish_reason": s["finish_reason"], "prompt_tokens": s["prompt_tokens"],
                          "completion_tokens": s["completion_tokens"]}
                lineage = {"source": "teacher", "sample": s["sample_index"], "examples": len(examples)}
                proposals.append((doc.doc_id, parse_query(s["response"]), s["response"], lineage, fields))
    check_round(1, proposals)
    logger.info("doc2query: %d documents, %d candidate queries, %d pass the round trip (top_k %d)",
                len(corpus.docs), sum(r["proposed"] for r in found.rounds), len(found.kept), cfg.top_k)
    summary = {"documents": len(corpus.docs), "documents_rejected": len(corpus.rejects), "prompt_too_long": too_long,
               "examples": len(examples),
               "top_k": cfg.top_k, "rounds": found.rounds, "teacher_prompt_tokens": tokens["prompt"],
               "teacher_completion_tokens": tokens["completion"]}
    return found.kept, [*found.rejected, *rejected], summary


def read_examples(recipe: Doc2QueryRecipe) -> tuple[list[tuple[str, str]], str]:
    """The labelled pairs (at most 8) and the digest of what they were read from."""
    cfg = recipe.doc2query
    if not cfg.examples_uri:  # inline, or none (zero-shot)
        pairs = [(e.document, e.query) for e in cfg.examples]
        return pairs, hashlib.sha256(json.dumps(pairs).encode()).hexdigest()
    files = load_pairs(cfg.examples_uri, recipe.storage)
    records, bad = read_records(files)
    pairs = []
    for _, _, rec in records:
        doc, query = as_text(get_path(rec, "document")), as_text(get_path(rec, "query"))
        if doc and doc.strip() and query and query.strip():
            pairs.append((doc, query))
    if not pairs:
        raise ValueError(f"{cfg.examples_uri}: no labelled pair with non-empty 'document' and 'query' columns "
                         f"({len(records)} records, {len(bad)} malformed lines)")
    if len(pairs) > MAX_EXAMPLES:
        get_run_logger().warning("%s holds %d labelled pairs; the prompt shows the first %d", cfg.examples_uri, len(pairs), MAX_EXAMPLES)
    return pairs[:MAX_EXAMPLES], files_digest(files)


# ----------------------------------------------------------------------------- flow


@flow(name="doc2query", log_prints=True, validate_parameters=True)
def doc2query(recipe: Doc2QueryRecipe) -> dict:
    """Write queries for every document, keep those that find their document again, publish the pairs."""
    cfg = recipe.doc2query
    stages: dict[str, float] = {}
    with timed(stages, "load"):
        corpus = load_documents(cfg.corpus_uri, cfg.format, cfg.text_column, cfg.id_column, cfg.limit,
                                cfg.min_doc_words, recipe.storage, "doc2query")
        examples, examples_digest = read_examples(recipe)
        candidates, bad_candidates, candidates_digest = [], [], ""
        if cfg.candidates_uri:
            files = load_pairs(cfg.candidates_uri, recipe.storage)
            candidates, bad_candidates = read_records(files)
            candidates_digest = files_digest(files)
    for row in bad_candidates:  # malformed lines of the candidates file: rows in, rejected at load
        row["lineage"] = json.dumps({"recipe": "doc2query", "source": "candidates", "file": cfg.candidates_uri})
    b = open_build(recipe, corpus.digest, examples_digest, candidates_digest, stages=stages)
    if b.published:
        return unchanged(recipe, b.published)
    b.stages.update({"synthesize": 0.0, "engine_start": 0.0, "generate": 0.0})  # the report's order
    with timed(b.stages, "synthesize"):
        pairs, rejected, synthesis = synthesize(recipe, corpus, examples, candidates, b.run_id, b.created_at, b.stages)
    b.stages["synthesize"] -= b.stages.get("generate", 0.0) + b.stages.get("engine_start", 0.0)  # counted there
    # The pairs are answered rows already: staged, they go straight to dedup and the judge.
    tokens = (sum(r.get("prompt_tokens") or 0 for r in pairs), sum(r.get("completion_tokens") or 0 for r in pairs))
    return staged_synthesis(recipe, b, pairs, [*corpus.rejects, *bad_candidates, *rejected], extra={"synthesis": synthesis},
                            diversity_of="prompt", seed_texts=[q for _, q in examples], answered=True, tokens=tokens)
