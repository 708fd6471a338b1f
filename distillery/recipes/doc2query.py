"""Doc -> query synthesis for retriever training, after Promptagator (Dai et al., 2022). Pure logic.

A few-shot prompt (up to 8 labelled (document, query) examples, then the target document)
has the teacher write queries the document answers. Each query then passes the
round-trip consistency filter: a BM25 index over the whole corpus must rank the query's
own document in its top k, else the query is rejected ('bm25_roundtrip'): it does not
single out its document, so it is a poor (or false) positive pair. Promptagator filters
with a retriever trained on the synthetic data itself; BM25 (Okapi, on lowercase word
tokens without stop words) is the cheap stand-in that needs no training. The recipe model (Doc2QueryConfig,
Doc2QueryRecipe) is at the end.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator
from rank_bm25 import BM25Okapi

from distillery.recipe import Recipe, _Strict, _WordBounds
from distillery.recipes.rounds import Verdict
from distillery.text import STOPWORDS

MAX_EXAMPLES = 8  # Promptagator's few-shot budget
DEFAULT_TASK = "Write a search query that the document answers."


def cut_words(text: str, limit: int) -> str:
    """The first `limit` words of a text, whitespace collapsed."""
    words = text.split()
    return " ".join(words[:limit]) + (" ..." if len(words) > limit else "")


def few_shot_prompt(examples: Sequence[tuple[str, str]], document: str, task: str = DEFAULT_TASK,
                    doc_words: int = 150) -> list[dict]:
    """The chat for one document: the task, the labelled examples as 'Document: ... /
    Query: ...' blocks, then the target document; the assistant turn is opened at 'Query:'
    (the teacher continues it). Documents are cut to `doc_words` words."""
    if len(examples) > MAX_EXAMPLES:
        raise ValueError(f"{len(examples)} examples; a prompt shows at most {MAX_EXAMPLES}")
    blocks = [f"Document: {cut_words(d, doc_words)}\nQuery: {' '.join(q.split())}" for d, q in examples]
    body = "\n\n".join([task.strip(), *blocks, f"Document: {cut_words(document, doc_words)}"])
    return [{"role": "user", "content": body + "\nQuery:"}, {"role": "assistant", "content": "Query:"}]


_PREFIX = re.compile(r"^\s*(?:search\s+)?query\s*\d*\s*[:\-]\s*", re.IGNORECASE)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019 "


def parse_query(continuation: str) -> str | None:
    """The query in a continuation of 'Query:': its first line with text, without a repeated
    'Query:' label or surrounding quotes and backticks; None when the teacher wrote none
    (nothing, or it went straight on to another 'Document:')."""
    for line in continuation.splitlines():
        if re.match(r"^\s*document\s*:", line, re.IGNORECASE):
            return None
        text = re.sub(r"\s+", " ", _PREFIX.sub("", line).strip().strip(_QUOTES)).strip()
        if text:  # blank lines and bare quote / code-fence lines are skipped
            return text
    return None


def bm25_tokens(text: str) -> list[str]:
    """The round trip's tokenization: lowercase runs of word characters, stop words left out
    (as retrieval toolkits do: a query that shares only 'what is the' with a document has not
    found it)."""
    return [t for t in re.findall(r"\w+", text.lower()) if t not in STOPWORDS]


def length_check(query: str, min_words: int, max_words: int) -> Verdict:
    n = len(query.split())
    if n < min_words or n > max_words:
        return Verdict(False, "length", f"{n} words; bounds are {min_words}-{max_words}")
    return Verdict(True)


class RoundTrip:
    """BM25 (Okapi, k1 1.5, b 0.75) over the corpus: does a query find its own document?"""

    def __init__(self, corpus: Mapping[str, str]):
        self.ids = list(corpus)
        self.position = {doc_id: i for i, doc_id in enumerate(self.ids)}
        tokens = [bm25_tokens(corpus[i]) for i in self.ids]
        self.bm25 = BM25Okapi(tokens) if any(tokens) else None

    def __len__(self) -> int:
        return len(self.ids)

    def rank(self, query: str, doc_id: str) -> tuple[int, float, str | None]:
        """(rank of doc_id, its score, the top document). Ranks are pessimistic: documents
        scoring the same as doc_id rank before it, so a query that scores 0 everywhere ranks last."""
        own = self.position[doc_id]
        if self.bm25 is None:
            return len(self.ids), 0.0, None
        scores = np.asarray(self.bm25.get_scores(bm25_tokens(query)), dtype=np.float64)
        score = float(scores[own])
        rank = int(np.sum(scores >= score))  # itself included
        return rank, score, self.ids[int(np.argmax(scores))]

    def check(self, query: str, doc_id: str, top_k: int) -> Verdict:
        """Keep the query if its document has a positive score and ranks in the top k."""
        rank, score, best = self.rank(query, doc_id)
        if score <= 0.0 or rank > top_k:
            why = "; no query term weighs in it" if score <= 0.0 else ""
            return Verdict(False, "bm25_roundtrip", f"{doc_id!r} ranks {rank} of {len(self)} for this query (BM25 score "
                           f"{score:.2f}{why}; top hit {best!r}); top_k is {top_k}", {"rank": rank, "score": score})
        return Verdict(True, facts={"rank": rank, "score": score})


# ---------------------------------------------------------------------------------------
# The recipe model


class Doc2QueryExample(_Strict):
    document: str = Field(..., min_length=1, max_length=100_000, description="A document of the target task.")
    query: str = Field(..., min_length=1, max_length=2_000, description="A query this document answers (a labelled pair).")


class Doc2QueryConfig(_WordBounds):
    section: ClassVar[str] = "doc2query"

    corpus_uri: str = Field(
        "corpus.jsonl",
        min_length=1,
        description="The corpus: a JSONL/JSON/CSV/Parquet file or glob with one document per record, or a glob of "
        "text files (one document each). Local path or s3:// URI. Every accepted document gets queries and is "
        "in the BM25 index of the round trip.",
    )
    format: Literal["auto", "text", "jsonl", "json", "csv", "parquet"] = Field(
        "auto", description="'text': each file is one document; a table format: one per record. 'auto' picks by extension."
    )
    text_column: str = Field("text", min_length=1, description="The column holding the document text (dotted path allowed).")
    id_column: str | None = Field("id", description="The column with a stable document id; null means 'row-<n>'.")
    limit: int | None = Field(None, ge=1, le=10_000_000, description="Use only the first N documents of the corpus.")
    min_doc_words: int = Field(
        1, ge=1, le=100_000,
        description="Documents with fewer words get no queries and are left out of the index ('short_document'); "
        "empty ones always are ('empty_document').",
    )
    examples: list[Doc2QueryExample] = Field(
        default_factory=list, max_length=MAX_EXAMPLES,
        description="Labelled (document, query) pairs shown in every prompt (Promptagator: up to 8). Give these "
        "or examples_uri; with neither the prompt is zero-shot (weaker queries).",
    )
    examples_uri: str | None = Field(
        None,
        description="A JSONL/JSON/CSV/Parquet file of labelled pairs with 'document' and 'query' columns; its "
        "first 8 are shown. Give this or examples.",
    )
    task: str = Field(
        DEFAULT_TASK, min_length=1, max_length=2_000,
        description="The task line that opens the prompt, e.g. 'Write a question a customer would ask that this "
        "FAQ entry answers.'",
    )
    doc_words: int = Field(
        150, ge=8, le=8192, description="Documents (examples and target) are cut to this many words in the prompt."
    )
    queries_per_doc: int = Field(4, ge=1, le=64, description="Queries sampled per document (one engine request, n samples).")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature when writing queries (Promptagator: 0.7).")
    max_tokens: int = Field(48, ge=4, le=1024, description="Tokens the teacher may write per query.")
    min_words: int = Field(2, ge=1, le=1000, description="Shorter queries are rejected ('length').")
    max_words: int = Field(40, ge=1, le=10_000, description="Longer queries are rejected ('length').")
    top_k: int = Field(
        3, ge=1, le=10_000,
        description="Round-trip filter: keep a query only if BM25 over the corpus ranks its own document in the "
        "top k (ties count against it) with a positive score; else 'bm25_roundtrip'.",
    )
    candidates_uri: str | None = Field(
        None,
        description="Optional file of candidate pairs from elsewhere (another generator, an earlier run), with "
        "'doc_id' and 'query' columns: they go through the same checks first, as round 0.",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Sampling seed for the query writer.")

    @model_validator(mode="after")
    def _checks(self) -> "Doc2QueryConfig":
        if self.examples and self.examples_uri:
            raise ValueError("give the labelled examples inline (examples) or as a file (examples_uri), not both")
        return self


class Doc2QueryRecipe(Recipe):
    """A Promptagator-style build: few-shot queries per document, BM25 round-trip filtered,
    written as (query, document) pairs. The judge is off and dedup compares queries unless
    the recipe says otherwise; `sampling` only lends top_p (queries use doc2query's own
    temperature and max_tokens); `source` is not read."""

    flow: Literal["doc2query"] = Field("doc2query", description="This recipe's flow.")
    doc2query: Doc2QueryConfig = Field(
        default_factory=Doc2QueryConfig, description="Corpus, few-shot examples, sampling and the round-trip filter (Promptagator)."
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            judge_cfg, dedup_cfg = data.get("judge") or {}, data.get("dedup") or {}
            if isinstance(judge_cfg, dict) and isinstance(dedup_cfg, dict):
                data = {**data, "judge": {"enabled": False, **judge_cfg}, "dedup": {"field": "prompt", **dedup_cfg}}
            cfg = data.get("doc2query")
            if "source" not in data and isinstance(cfg, dict) and cfg.get("corpus_uri"):
                data["source"] = {"uri": cfg["corpus_uri"], "instruction_column": cfg.get("text_column") or "text",
                                  "input_column": None, "id_column": cfg.get("id_column", "id")}
        return data

    @model_validator(mode="after")
    def _pairs_only(self) -> "Doc2QueryRecipe":
        if self.sampling.n != 1 or self.extra_teachers or self.kd.top_k:
            raise ValueError("flow 'doc2query' writes one row per (query, document) pair: keep sampling.n at 1, no "
                             "extra_teachers and kd.top_k 0; doc2query.queries_per_doc sets the queries per document")
        if self.dedup.field != "prompt":
            raise ValueError("flow 'doc2query' dedups the queries: dedup.field must be 'prompt' (the document text would "
                             "make every query of one document a near duplicate)")
        return self
