"""Tokenizer identity for knowledge-distillation datasets. Pure logic.

Soft targets (`kd_topk_ids`) are token ids in the *teacher's* vocabulary. A
student can learn from them only if the same id means the same token string
to it. A KD dataset therefore ships the teacher's own tokenizer files in the
Hugging Face format under `kd/` (`kd/tokenizer.json`, `kd/tokenizer_config.json`,
...: `AutoTokenizer.from_pretrained("OUT/kd")` loads them) and the fingerprint
of its vocabulary in the manifest; `compare` tells, id by id, whether a
student's tokenizer agrees.

The fingerprint is taken over a table, the vocabulary as plain JSON:

    {"name": str, "vocab_size": V,
     "tokens": [token string of id 0, ..., id V-1]  ("" where no token has that id),
     "special_tokens": {"bos_token": "<s>", ..., "additional_special_tokens": [...]}}

It hashes `tokens` and `special_tokens` only, not the name: a renamed copy of
the same tokenizer has the same sha256. Datasets built before the Hugging Face
files were shipped hold this table itself at `kd/tokenizer.json` (their
manifest entry lists no `files`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from distillery.errors import DistilleryError

KD_DIR = "kd"
TOKENIZER_FILE = f"{KD_DIR}/tokenizer.json"  # the Hugging Face file; in older datasets the table
TABLE_PATH = TOKENIZER_FILE
MAX_EXAMPLES = 5


class TokenizerMismatch(DistilleryError):
    """A student whose tokenizer does not index the teacher's vocabulary the same way."""


def _special(special_tokens: Mapping[str, object]) -> dict:
    """Special tokens as str -> str | list[str], sorted by name (AddedToken objects become their text)."""
    out: dict = {}
    for key in sorted(special_tokens):
        value = special_tokens[key]
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            out[key] = [str(v) for v in value]
        else:
            out[key] = str(value)
    return out


def table_from_vocab(name: str, vocab: Mapping[str, int], special_tokens: Mapping[str, object]) -> dict:
    """The JSON-able table of a vocabulary (token string -> id).

    `vocab_size` is max id + 1, so ids no token maps to ("holes") count and
    appear as "". Should two strings share an id, the smallest string wins
    (deterministic, whatever the dict order).
    """
    if not vocab:
        raise DistilleryError(f"tokenizer {name}: empty vocabulary; point at a folder with a complete tokenizer")
    size = max(vocab.values()) + 1
    if min(vocab.values()) < 0:
        raise DistilleryError(f"tokenizer {name}: negative token ids in its vocabulary; the tokenizer files are broken")
    tokens = [""] * size
    for token, idx in sorted(vocab.items(), key=lambda kv: (kv[1], kv[0]), reverse=True):
        tokens[idx] = token  # reverse order: the smallest string for an id is written last
    return {"name": name, "vocab_size": size, "tokens": tokens, "special_tokens": _special(special_tokens)}


def canonical_bytes(table: Mapping) -> bytes:
    """What the fingerprint hashes: tokens + special tokens as canonical JSON (ASCII, sorted keys, no spaces)."""
    body = {"tokens": list(table["tokens"]), "special_tokens": _special(table.get("special_tokens") or {})}
    return json.dumps(body, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def fingerprint(table: Mapping) -> dict:
    """{"name", "vocab_size", "sha256"}; the sha256 ignores the name."""
    return {
        "name": table.get("name"),
        "vocab_size": len(table["tokens"]),
        "sha256": hashlib.sha256(canonical_bytes(table)).hexdigest(),
    }


def dumps(table: Mapping) -> bytes:
    """A table as UTF-8 JSON, one line (what older datasets hold at `kd/tokenizer.json`)."""
    return json.dumps(dict(table), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def manifest_entry(table: Mapping, files: list[str] | None = None) -> dict:
    """The manifest's `kd.tokenizer` section: the fingerprint, the tokenizer file and every file
    of the tokenizer folder (`files`, paths under kd/). Without `files`: the older form, whose
    `path` holds the table itself."""
    if files is None:
        return {**fingerprint(table), "path": TABLE_PATH}
    path = TOKENIZER_FILE if TOKENIZER_FILE in files else sorted(files)[0]
    return {**fingerprint(table), "path": path, "files": sorted(files)}


def validate_table(table: object, where: str) -> dict:
    """`table` as a dict, or a DistilleryError naming `where` if it is not a tokenizer table."""
    if (
        not isinstance(table, dict)
        or not isinstance(table.get("tokens"), list)
        or not all(isinstance(t, str) for t in table["tokens"])
        or not isinstance(table.get("special_tokens", {}), dict)
    ):
        raise DistilleryError(f"{where}: not a tokenizer table (needs a 'tokens' list of strings); the file is corrupt, rebuild the dataset")
    return table


def compare(teacher: Mapping, student: Mapping) -> dict:
    """Id-by-id agreement of two tables.

    `differing_ids` counts the ids below max(V_teacher, V_student) whose token
    string differs or exists in only one table. `match` is True when no id
    differs (which implies equal vocab sizes): then every soft-target id means
    the same token to the student. Special-token differences are reported in
    `special_tokens_differ` but do not decide `match`: they do not change what
    an id means.
    """
    t_tokens, s_tokens = teacher["tokens"], student["tokens"]
    vt, vs = len(t_tokens), len(s_tokens)
    differing = 0
    examples: list[list] = []
    for i in range(max(vt, vs)):
        t = t_tokens[i] if i < vt else ""
        s = s_tokens[i] if i < vs else ""
        if t != s:
            differing += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append([i, t or None, s or None])
    ts, ss = _special(teacher.get("special_tokens") or {}), _special(student.get("special_tokens") or {})
    special_differ = sorted(k for k in set(ts) | set(ss) if ts.get(k) != ss.get(k))
    return {
        "match": differing == 0,
        "differing_ids": differing,
        "vocab_size_teacher": vt,
        "vocab_size_student": vs,
        "special_tokens_differ": special_differ,
        "examples": examples,
    }


def format_comparison(result: Mapping, teacher_name: str, student_name: str, top_k: int | None = None) -> str:
    """A printable report of `compare`'s result."""
    vt, vs = result["vocab_size_teacher"], result["vocab_size_student"]
    k = f"top-{top_k} " if top_k else ""
    if result["match"]:
        lines = [
            f"kd-check: OK: student {student_name} has the teacher's vocabulary ({teacher_name}, {vt} ids, every id the same token);",
            f"  the {k}soft targets can be used as they are",
        ]
    else:
        lines = [
            f"kd-check: MISMATCH: student {student_name} does not share the teacher's vocabulary ({teacher_name})",
            f"  differing ids: {result['differing_ids']} of {max(vt, vs)}",
            f"  vocab size: teacher {vt}, student {vs}",
        ]
        for idx, t, s in result["examples"]:
            lines.append(f"  id {idx}: teacher {_show(t)}, student {_show(s)}")
    if result["special_tokens_differ"]:
        lines.append(f"  special tokens that differ: {', '.join(result['special_tokens_differ'])}")
    if not result["match"]:
        lines.append(
            f"refusing: the {k}soft targets (kd_topk_ids, kd_token_ids) index the teacher's vocabulary, so with this "
            "student's tokenizer they would point at other tokens; train a student that uses the teacher's tokenizer "
            f"({teacher_name}), or rebuild the dataset with a teacher that shares the student's tokenizer"
        )
    return "\n".join(lines)


def _show(token: str | None) -> str:
    return "(none)" if token is None else repr(token)


__all__ = [
    "KD_DIR", "TABLE_PATH", "TOKENIZER_FILE", "TokenizerMismatch", "canonical_bytes", "compare", "dumps",
    "fingerprint", "format_comparison", "manifest_entry", "table_from_vocab", "validate_table",
]
