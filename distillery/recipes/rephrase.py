"""Rephrasing the Web (WRAP; Maini et al., 2024): documents -> token-bounded chunks ->
one rephrasing request per chunk and style. Pure logic.

WRAP has an instruction-tuned model rewrite each chunk of at most 300 tokens (longer
inputs lost information) in four styles: easy (a toddler's vocabulary), medium
(Wikipedia-like English), hard (terse, abstruse scholarly language) and Q/A
(a conversation of "Question:" / "Answer:" turns). The prompts below are the paper's.

Token counts come from a `count_tokens` callable the caller passes in (the teacher's
tokenizer in the flow, a word count in tests): no tokenizer is loaded here. The
document reader (`read_documents`) is shared with the doc2query recipe. The recipe model
(RephraseConfig, RephraseRecipe) is at the end.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator

from distillery.recipe import Recipe, _Strict
from distillery.sources import MISSING, SourceError, records_jsonl, records_table, detect_format, get_path

# The system prompt WRAP used with its rephrasing model (set it as teacher.system_prompt).
WRAP_SYSTEM_PROMPT = ("A chat between a curious user and an artificial intelligence assistant. "
                      "The assistant gives helpful, detailed, and polite answers to the questions.")

# The four WRAP style prompts (the instruction; the chunk follows as the input).
STYLES: dict[str, str] = {
    "easy": "For the following paragraph give me a paraphrase of the same using a very small vocabulary "
            "and extremely simple sentences that a toddler will understand:",
    "medium": "For the following paragraph give me a diverse paraphrase of the same in high quality English "
              "language as in sentences on Wikipedia:",
    "hard": "For the following paragraph give me a paraphrase of the same using very terse and abstruse language "
            "that only an erudite scholar will understand. Replace simple words and phrases with rare and complex ones:",
    "qa": 'Convert the following paragraph into a conversational format with multiple tags of "Question:" '
          'followed by "Answer:":',
}

TEXT_EXTENSIONS = (".txt", ".text", ".md", ".markdown", ".rst")


def word_count(text: str) -> int:
    """A stand-in token count: whitespace-separated words."""
    return len(text.split())


# ---------------------------------------------------------------------------------------
# Chunking


@dataclass(frozen=True)
class Chunk:
    start: int  # [start, end) character span in the document; text == document[start:end]
    end: int
    text: str
    tokens: int


_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
# Only whitespace is consumed, so closing quotes and brackets stay with their sentence.
_SENTENCE = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'\u201d\u2019)\]])\s+|\s*\n\s*")
_WORDS = re.compile(r"\s+")
_FINER = (_SENTENCE, _WORDS)
# Strength of the boundary before an atom: a paragraph, a sentence, a word, inside a word.
PARAGRAPH, SENTENCE, WORD, CHARACTER = 3, 2, 1, 0


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _spans(text: str, start: int, end: int, sep: re.Pattern) -> list[tuple[int, int]]:
    """The non-blank pieces of text[start:end] between separators, trimmed."""
    out, pos = [], start
    for m in sep.finditer(text, start, end):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, end))
    return [t for s, e in out if (t := _trim(text, s, e))]


def _atoms(text: str, start: int, end: int, strength: int, level: int, limit: int,
           count: Callable[[str], int], out: list[tuple[int, int, int]]) -> None:
    """Split text[start:end] into pieces that fit `limit`, as coarse as possible:
    sentences (level 0), then words (level 1), then characters."""
    if count(text[start:end]) <= limit:
        out.append((start, end, strength))
        return
    if level < len(_FINER):
        parts = _spans(text, start, end, _FINER[level])
        if len(parts) == 1:  # no boundary of this kind: go finer
            _atoms(text, start, end, strength, level + 1, limit, count, out)
            return
        for i, (s, e) in enumerate(parts):
            _atoms(text, s, e, strength if i == 0 else SENTENCE - level, level + 1, limit, count, out)
        return
    # One "word" longer than the budget (a URL, a hash): the longest prefixes that fit.
    while start < end:
        lo, hi = 1, end - start
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(text[start:start + mid]) <= limit:
                lo = mid
            else:
                hi = mid - 1
        out.append((start, start + lo, strength))
        strength, start = CHARACTER, start + lo


def chunk_document(text: str, max_tokens: int, count_tokens: Callable[[str], int] = word_count,
                   min_fill: float = 0.5) -> list[Chunk]:
    """Token-bounded chunks of a document, each with its [start, end) character span.

    Chunks are built from whole paragraphs where they fit, else whole sentences, else
    words (a single over-long word is cut). A chunk is filled greedily; when the next
    piece does not fit, the chunk ends at the strongest boundary (paragraph > sentence >
    word) among the cut points that keep it at least `min_fill` of the budget. Every
    chunk's text is exactly document[start:end] (outer whitespace trimmed) and counts at
    most max_tokens by `count_tokens` (a single character that alone counts more is the
    only exception). Whitespace-only text gives no chunks.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    atoms: list[tuple[int, int, int]] = []
    for s, e in _spans(text, 0, len(text), _PARAGRAPH):
        _atoms(text, s, e, PARAGRAPH, 0, max_tokens, count_tokens, atoms)
    chunks, i = [], 0
    while i < len(atoms):
        start = atoms[i][0]
        fits: list[int] = []  # token count of the chunk ending at atoms[i + k]
        j = i
        while j < len(atoms):
            n = count_tokens(text[start:atoms[j][1]])
            if n > max_tokens and j > i:
                break
            fits.append(n)
            j += 1
        if j == len(atoms):
            cut = len(fits) - 1
        else:
            full = [k for k, n in enumerate(fits) if n >= min_fill * max_tokens] or [len(fits) - 1]
            cut = max(full, key=lambda k: (atoms[i + k + 1][2], k))  # strongest boundary, then the latest
        end = atoms[i + cut][1]
        chunks.append(Chunk(start, end, text[start:end], fits[cut]))
        i += cut + 1
    return chunks


# ---------------------------------------------------------------------------------------
# Documents


@dataclass
class Document:
    doc_id: str
    text: str  # as stored: chunk spans index into it
    source: str  # the file it came from


@dataclass
class Documents:
    docs: list[Document] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)  # stage, reason, detail, lineage: rows in, never dropped
    digest: str = ""  # sha256 over every file's name and bytes

    @property
    def rows_in(self) -> int:
        return len(self.docs) + len(self.rejects)


def document_format(uri: str, fmt: str = "auto") -> str:
    """'text' (the whole file is one document) for .txt/.md/.rst, else a table format."""
    if fmt != "auto":
        return fmt
    lower = uri.lower()
    if lower.endswith(TEXT_EXTENSIONS) or lower.endswith(tuple(e + ".gz" for e in TEXT_EXTENSIONS)):
        return "text"
    return detect_format(uri)


def file_names(uris: Sequence[str]) -> list[str]:
    """Short, stable names for files: the basename of one file; for many, the path below
    their common folder (bench/README.md and infra/README.md stay apart)."""
    paths = [u.split("://", 1)[-1] for u in uris]
    if len(paths) == 1:
        return [posixpath.basename(paths[0])]
    common = posixpath.commonpath(paths)
    return [posixpath.relpath(p, common) for p in paths]


def as_text(value: Any) -> str | None:
    if value is MISSING or value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def read_records(files: Sequence[tuple[str, bytes]], fmt: str = "auto") -> tuple[list[tuple[str, int, dict]], list[dict]]:
    """Records of table files (JSONL, JSON, CSV, Parquet) as (uri, position, record); malformed
    JSONL lines come back as stage-'load' rejects."""
    records, rejects = [], []
    for uri, data in files:
        kind = detect_format(uri, fmt)
        if kind == "jsonl":
            ok, bad = records_jsonl(data)
            for row in bad:
                row["seed_id"] = f"{posixpath.basename(uri)}:{row['seed_id']}" if len(files) > 1 else row["seed_id"]
            rejects += bad
        else:
            ok = records_table(data, kind, uri)
        records += [(uri, pos, rec) for pos, rec in ok if isinstance(rec, dict)]
    return records, rejects


def files_digest(files: Iterable[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for uri, data in files:
        digest.update(f"{uri}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def read_documents(files: Sequence[tuple[str, bytes]], fmt: str = "auto", text_column: str = "text",
                   id_column: str | None = "id", limit: int | None = None, min_words: int = 1,
                   recipe: str = "rephrase") -> Documents:
    """Documents from text files (one per file, its id the file's name) or table files
    (one per record: `text_column`, id from `id_column` or 'row-<n>').

    Empty documents are rejected ('empty_document'), those under `min_words` words
    ('short_document'), repeated ids ('duplicate_doc_id'); every reject is a row in with
    its lineage, at stage 'synthesize' (malformed JSONL lines: 'load').
    """
    out = Documents(digest=files_digest(files))
    names = file_names([u for u, _ in files]) if files else []
    entries: list[tuple[str, str | None, str]] = []  # (doc id, text, source)
    tables = []
    for (uri, data), name in zip(files, names):
        if document_format(uri, fmt) == "text":
            entries.append((name, data.decode("utf-8", errors="replace"), uri))
        else:
            tables.append((uri, data))
    if tables:
        records, bad = read_records(tables, fmt)
        for row in bad:
            row["lineage"] = json.dumps({"recipe": recipe, "doc_id": row["seed_id"]})
        out.rejects += bad
        dicts = [r for _, _, r in records]
        for column, option in ((text_column, "text_column"), (id_column, "id_column")):
            if column and dicts and all(get_path(r, column) is MISSING for r in dicts):
                found = ", ".join(sorted(dicts[0].keys())[:12])
                raise SourceError(f"{tables[0][0]}: column {column!r} not found ({option}); columns there: {found}")
        for uri, pos, rec in records:
            doc_id = as_text(get_path(rec, id_column)) if id_column else None
            if not doc_id:
                doc_id = f"row-{pos}" if len(files) == 1 else f"{posixpath.basename(uri)}:row-{pos}"
            entries.append((doc_id, as_text(get_path(rec, text_column)), uri))
    if limit is not None:
        entries = entries[:limit]
    seen: set[str] = set()
    for doc_id, text, source in entries:
        lineage = json.dumps({"recipe": recipe, "doc_id": doc_id, "source": source})
        reason = detail = None
        words = len(text.split()) if text else 0
        if doc_id in seen:
            reason, detail = "duplicate_doc_id", f"document id {doc_id!r} appears more than once; ids must be unique"
        elif text is None or not text.strip():
            reason, detail = "empty_document", "the document is empty or whitespace" if text is not None else f"{text_column!r} is missing"
        elif words < min_words:
            reason, detail = "short_document", f"{words} words; the recipe asks for at least {min_words}"
        seen.add(doc_id)
        if reason:
            out.rejects.append({"seed_id": doc_id, "stage": "synthesize", "reason": reason, "detail": detail,
                                "prompt": "", "raw": (text or "")[:2000], "lineage": lineage})
            continue
        out.docs.append(Document(doc_id, text, source))
    return out


# ---------------------------------------------------------------------------------------
# Seeds


def rephrase_seeds(docs: Sequence[Document], styles: Sequence[str], max_tokens: int,
                   count_tokens: Callable[[str], int] = word_count) -> tuple[list[dict], list[Chunk]]:
    """One seed per chunk and style: the style prompt as the instruction, the chunk as its
    input, and the lineage {recipe, doc_id, span, style, chunk, ...}. Also every chunk (for
    the diversity report's 'near a seed' share)."""
    unknown = [s for s in styles if s not in STYLES]
    if unknown:
        raise ValueError(f"unknown styles {unknown}; choose from {sorted(STYLES)}")
    seeds, chunks = [], []
    for doc in docs:
        parts = chunk_document(doc.text, max_tokens, count_tokens)
        chunks += parts
        for n, chunk in enumerate(parts):
            for style in styles:
                lineage = {"recipe": "rephrase", "doc_id": doc.doc_id, "span": [chunk.start, chunk.end], "style": style,
                           "chunk": n, "chunks": len(parts), "chunk_tokens": chunk.tokens, "source": doc.source}
                seeds.append({"seed_id": f"{doc.doc_id}#{n}:{style}", "instruction": STYLES[style], "input": chunk.text,
                              "lineage": json.dumps(lineage)})
    return seeds, chunks


# ---------------------------------------------------------------------------------------
# The recipe model

DOC_FORMATS = Literal["auto", "text", "jsonl", "json", "csv", "parquet"]


class RephraseConfig(_Strict):
    documents_uri: str = Field(
        "docs/*.md",
        min_length=1,
        description="Documents to rephrase: a glob of text files (docs/*.md, notes/*.txt; each file is one "
        "document, its id the path below the files' common folder), or a JSONL/JSON/CSV/Parquet file or glob "
        "with one document per record. Local path or s3:// URI.",
    )
    format: DOC_FORMATS = Field(
        "auto", description="'text': each file is one document; a table format: one per record. "
        "'auto' picks by extension (.txt/.md/.markdown/.rst are text).",
    )
    text_column: str = Field(
        "text", min_length=1, description="For table files: the column holding the document text (dotted path allowed)."
    )
    id_column: str | None = Field(
        "id", description="For table files: the column with a stable document id; null means 'row-<n>'."
    )
    limit: int | None = Field(None, ge=1, le=10_000_000, description="Rephrase only the first N documents.")
    min_doc_words: int = Field(
        1, ge=1, le=100_000,
        description="Documents with fewer words are rejected ('short_document'); empty ones always are ('empty_document').",
    )
    chunk_tokens: int = Field(
        300, ge=16, le=32_768,
        description="Largest chunk, in teacher tokens (WRAP: 300; longer inputs lose information when "
        "rephrased). Chunks end at paragraph, else sentence, else word boundaries.",
    )
    styles: list[Literal["easy", "medium", "hard", "qa"]] = Field(
        default_factory=lambda: ["easy", "medium", "hard", "qa"],
        min_length=1, max_length=4,
        description="WRAP styles, one seed per chunk and style: 'easy' (a toddler's vocabulary), 'medium' "
        "(Wikipedia-like English), 'hard' (terse, abstruse, scholarly), 'qa' (Question:/Answer: conversation).",
    )

    @model_validator(mode="after")
    def _styles_unique(self) -> "RephraseConfig":
        if len(set(self.styles)) != len(self.styles):
            raise ValueError(f"styles repeat: {self.styles}; list each style once")
        return self


class RephraseRecipe(Recipe):
    """A WRAP build: documents are chunked and each chunk rephrased in the chosen styles.

    `source` is not read by this flow; left out, it mirrors rephrase.documents_uri so that
    the dataset card names the documents."""

    flow: Literal["rephrase"] = Field("rephrase", description="This recipe's flow.")
    rephrase: RephraseConfig = Field(default_factory=RephraseConfig, description="Documents, chunking and styles (WRAP).")

    @model_validator(mode="before")
    @classmethod
    def _source_mirrors_documents(cls, data: Any) -> Any:
        if isinstance(data, dict) and "source" not in data:
            cfg = data.get("rephrase") or {}
            if isinstance(cfg, dict):
                data = {**data, "source": {"uri": cfg.get("documents_uri") or "docs/*.md", "instruction_column": cfg.get("text_column") or "text",
                                           "input_column": None, "id_column": cfg.get("id_column", "id")}}
        return data

    @model_validator(mode="after")
    def _dedup_not_on_prompts(self) -> "RephraseRecipe":
        if self.dedup.enabled and self.dedup.field == "prompt":
            raise ValueError("flow 'rephrase': dedup.field 'prompt' would match the styles of one chunk with each other "
                             "(their prompts share the chunk); use 'response' or 'both'")
        return self

    @model_validator(mode="after")
    def _chunk_fits(self) -> "RephraseRecipe":
        room = self.teacher.max_model_len - self.sampling.max_tokens - 96  # the style prompt and chat template
        if self.rephrase.chunk_tokens > room:
            raise ValueError(
                f"rephrase.chunk_tokens ({self.rephrase.chunk_tokens}) leaves no room in teacher.max_model_len "
                f"({self.teacher.max_model_len}) for sampling.max_tokens ({self.sampling.max_tokens}) and the style "
                f"prompt (~96 tokens); lower chunk_tokens (at most {max(room, 0)}) or max_tokens")
        return self
