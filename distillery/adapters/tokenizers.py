"""Tokenizer tables from model folders, and `distillery kd-check`.

`load_table` reads a tokenizer with transformers and turns it into the pure
table of `distillery.tokenizer_id`; `kd_check` compares a KD dataset's
teacher table (kd/tokenizer.json, fingerprinted in the manifest) with a
student's tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

from distillery.errors import DistilleryError
from distillery.report import MANIFEST
from distillery.tokenizer_id import (
    TABLE_PATH,
    compare,
    fingerprint,
    format_comparison,
    table_from_vocab,
    validate_table,
)

# Any one of these makes a folder loadable by AutoTokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class TokenizerNotFound(DistilleryError):
    """A model folder without tokenizer files."""


class KdDatasetError(DistilleryError):
    """A dataset that cannot be kd-checked: no KD section, or a missing or corrupt tokenizer table."""


def _locate(model: str) -> str:
    """A folder as is (a tokenizer-only folder is enough), else the recipe model name resolved."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not any((path / f).is_file() for f in TOKENIZER_FILES):
            raise TokenizerNotFound(
                f"{model}: no tokenizer found (tokenizer.json / tokenizer_config.json); pass the student model's folder"
            )
        return str(path.resolve())
    from distillery.adapters.models import resolve_model

    return resolve_model(model)


def special_tokens(tok) -> dict:
    """The tokenizer's special tokens map, with its additional special tokens under one key.

    transformers 5 keeps them as `extra_special_tokens` (and leaves them out of
    `special_tokens_map`); 4.x as `additional_special_tokens`.
    """
    special = {k: v for k, v in dict(tok.special_tokens_map).items() if v is not None}
    extra = special.pop("additional_special_tokens", None) or special.pop("extra_special_tokens", None)
    if not extra:
        extra = getattr(tok, "additional_special_tokens", None) or getattr(tok, "extra_special_tokens", None)
    if isinstance(extra, dict):  # 5.x may hold named extras: {"image_token": "<image>", ...}
        for key, value in extra.items():
            special.setdefault(key, value)
        extra = []
    special["additional_special_tokens"] = [str(t) for t in (extra or [])]
    return special


def load_tokenizer(model: str):
    """AutoTokenizer for a recipe model name or a folder; a DistilleryError when there is none."""
    from transformers import AutoTokenizer

    where = _locate(model)
    try:
        return AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TokenizerNotFound(
            f"{model}: no tokenizer could be loaded from {where} ({type(err).__name__}: {str(err)[:200]}); "
            "pass the student model's folder (with tokenizer.json / tokenizer_config.json)"
        ) from None


def load_table(model: str) -> dict:
    """The tokenizer table of a recipe model name (e.g. 'smollm2-135m-instruct') or a model/tokenizer folder."""
    tok = load_tokenizer(model)
    return table_from_vocab(model, tok.get_vocab(), special_tokens(tok))


tokenizer_table = load_table  # the name the KD build uses to write kd/tokenizer.json


def _read_json(ds, uri: str, rel: str, missing: str) -> dict:
    if not ds.exists(rel):
        raise KdDatasetError(f"{uri}/{rel} does not exist; {missing}")
    try:
        return json.loads(ds.read(rel))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise KdDatasetError(f"{uri}/{rel}: not valid JSON ({err}); the file is corrupt, rebuild the dataset") from None


def teacher_table(output_uri: str) -> tuple[dict, dict]:
    """(the manifest's kd section, the verified teacher table) of a KD dataset."""
    from distillery.adapters.storage import open_dataset

    uri = output_uri.rstrip("/")
    ds = open_dataset(uri)
    manifest = _read_json(ds, uri, MANIFEST, "the build did not finish or this is not a distillery dataset (rerun `distillery run`)")
    kd = manifest.get("kd")
    if not isinstance(kd, dict) or not kd.get("top_k"):
        raise KdDatasetError(f"{uri}: the dataset was built without kd.top_k; nothing to check (set kd.top_k in the recipe and rebuild to get soft targets)")
    entry = kd.get("tokenizer")
    if not isinstance(entry, dict) or not entry.get("sha256"):
        raise KdDatasetError(f"{uri}/{MANIFEST}: the kd section has no tokenizer fingerprint (kd.tokenizer.sha256); rebuild the dataset")
    rel = entry.get("path") or TABLE_PATH
    table = validate_table(_read_json(ds, uri, rel, "the teacher's tokenizer table is missing; rebuild the dataset"), f"{uri}/{rel}")
    got = fingerprint(table)["sha256"]
    if got != entry["sha256"]:
        raise KdDatasetError(
            f"{uri}/{rel}: its sha256 {got[:12]}… differs from the manifest's kd.tokenizer.sha256 {str(entry['sha256'])[:12]}…; "
            "the file is corrupt or was edited, rebuild the dataset"
        )
    return kd, table


def kd_check(output_uri: str, student: str) -> tuple[str, bool]:
    """A printable report and whether `student`'s tokenizer indexes the teacher's vocabulary id for id."""
    kd, teacher = teacher_table(output_uri)
    student_table = load_table(student)
    result = compare(teacher, student_table)
    teacher_name = kd["tokenizer"].get("name") or teacher.get("name") or "teacher"
    return format_comparison(result, str(teacher_name), student, kd.get("top_k")), result["match"]


def cmd_kd_check(args) -> int:
    """`distillery kd-check OUTPUT_DIR --student MODEL_DIR`: print the report; 0 on a match, 1 otherwise."""
    report, ok = kd_check(args.output, args.student)
    print(report)
    return 0 if ok else 1


__all__ = ["KdDatasetError", "TokenizerNotFound", "cmd_kd_check", "kd_check", "load_table", "load_tokenizer", "special_tokens", "teacher_table", "tokenizer_table"]
