"""The `rephrase` flow: Rephrasing the Web (WRAP; Maini et al., 2024).

Documents (text files, or a table's text column) are split into chunks of at most
`rephrase.chunk_tokens` teacher tokens (300 in the paper), at paragraph, else sentence
boundaries; each chunk x style (easy / medium / hard / Q&A, the paper's prompts) is a seed
whose instruction is the style prompt and whose input is the chunk. The seeds go through
the common stages (teacher, dedup, judge, shards); every row's `lineage` records the
document id, the chunk's [start, end) character span, the style and the chunk number.
Rejected documents (empty, too short, repeated id) keep their reason.

The recipe model (RephraseConfig, RephraseRecipe) lives in distillery.recipes.rephrase.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from distillery.adapters.storage import read_many, storage_options
from distillery.recipe import StorageConfig
from distillery.recipes.rephrase import Documents, RephraseRecipe, read_documents, rephrase_seeds
from flows.build import open_build, timed, unchanged
from flows.staged import staged_synthesis

# ----------------------------------------------------------------------------- shared helpers


@task(name="load-documents", cache_policy=NONE)
def load_documents(uri: str, fmt: str, text_column: str, id_column: str | None, limit: int | None,
                   min_words: int, storage: StorageConfig, recipe: str) -> Documents:
    """Every document the URI (or glob) names; storage retries are inside read_many."""
    files = read_many(uri, "documents", storage.retries, storage.retry_backoff_seconds,
                      **storage_options(storage.credentials_block, storage.endpoint_url))
    return read_documents(files, fmt, text_column, id_column, limit, min_words, recipe=recipe)


def token_counter(model: str):
    """The teacher tokenizer's token count for a text (no special tokens)."""
    from distillery.adapters.engine import tokenizer_for

    tok = tokenizer_for(model)
    return lambda text: len(tok.encode(text, add_special_tokens=False))


# ----------------------------------------------------------------------------- flow


@flow(name="rephrase", log_prints=True, validate_parameters=True)
def rephrase(recipe: RephraseRecipe) -> dict:
    """Chunk the documents, rephrase every chunk in every style, and publish the dataset."""
    logger = get_run_logger()
    cfg = recipe.rephrase
    stages: dict[str, float] = {}
    with timed(stages, "load"):
        docs = load_documents(cfg.documents_uri, cfg.format, cfg.text_column, cfg.id_column, cfg.limit,
                              cfg.min_doc_words, recipe.storage, "rephrase")
    b = open_build(recipe, docs.digest, stages=stages)
    if b.published:
        return unchanged(recipe, b.published)
    with timed(b.stages, "synthesize"):
        seeds, chunks = rephrase_seeds(docs.docs, cfg.styles, cfg.chunk_tokens, token_counter(recipe.teacher.model))
    logger.info("rephrase: %d documents (%d rejected) -> %d chunks x %d styles = %d prompts",
                len(docs.docs), len(docs.rejects), len(chunks), len(cfg.styles), len(seeds))
    tokens = [c.tokens for c in chunks]
    synthesis = {"documents": len(docs.docs), "documents_rejected": len(docs.rejects), "chunks": len(chunks),
                 "styles": list(cfg.styles), "chunk_tokens_max": max(tokens, default=0),
                 "chunk_tokens_mean": round(sum(tokens) / len(tokens), 1) if tokens else None}
    # Rows in: every chunk x style, plus every rejected document (its reason kept).
    return staged_synthesis(recipe, b, seeds, docs.rejects, extra={"synthesis": synthesis}, diversity_of="response",
                            seed_texts=[c.text for c in chunks])
