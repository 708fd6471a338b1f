"""Tokenizers from model folders, the teacher's tokenizer a KD dataset ships, and `distillery kd-check`.

`load_table` reads a tokenizer with transformers and turns it into the pure
table of `distillery.tokenizer_id`. `kd_tokenizer` gives the teacher's
tokenizer files (Hugging Face format) to ship under kd/ and the table they
load as. `kd_check` compares a KD dataset's teacher tokenizer (kd/,
fingerprinted in the manifest) with a student's tokenizer.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

from distillery.errors import DistilleryError
from distillery.report import MANIFEST
from distillery.tokenizer_id import (
    KD_DIR,
    TOKENIZER_FILE,
    compare,
    fingerprint,
    format_comparison,
    manifest_entry,
    table_from_vocab,
    validate_table,
)

# Any one of these makes a folder loadable by AutoTokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
# What AutoTokenizer reads from a folder with a tokenizer.json (vocab.json, merges.txt and
# tokenizer.model are only for slow tokenizers, which tokenizer.json replaces).
HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json")
# What a build that has not published its manifest yet leaves (tasks/write.py).
UNFINISHED = ("_temporary", "data")


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


def _auto_tokenizer(where: str, model: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TokenizerNotFound(
            f"{model}: no tokenizer could be loaded from {where} ({type(err).__name__}: {str(err)[:200]}); "
            "pass the student model's folder (with tokenizer.json / tokenizer_config.json)"
        ) from None


def load_tokenizer(model: str):
    """AutoTokenizer for a recipe model name or a folder; a DistilleryError when there is none."""
    return _auto_tokenizer(_locate(model), model)


def load_table(model: str) -> dict:
    """The tokenizer table of a recipe model name (e.g. 'smollm2-135m-instruct') or a model/tokenizer folder."""
    tok = load_tokenizer(model)
    return table_from_vocab(model, tok.get_vocab(), special_tokens(tok))


def tokenizer_files(model: str) -> dict[str, bytes]:
    """A tokenizer's Hugging Face files by name: the model folder's own bytes when it has a
    tokenizer.json, else what transformers saves for the loaded tokenizer (a hub id, or a
    folder with only slow-tokenizer files)."""
    where = Path(_locate(model))
    if (where / "tokenizer.json").is_file():
        return {name: (where / name).read_bytes() for name in HF_FILES if (where / name).is_file()}
    tok = load_tokenizer(model)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def table_from_files(name: str, files: Mapping[str, bytes]) -> dict:
    """The table of the tokenizer that these files (name -> bytes) load as."""
    with tempfile.TemporaryDirectory() as tmp:
        for fname, data in files.items():
            (Path(tmp) / fname).write_bytes(data)
        tok = _auto_tokenizer(tmp, name)
        return table_from_vocab(name, tok.get_vocab(), special_tokens(tok))


def kd_tokenizer(model: str) -> tuple[dict, dict[str, bytes]]:
    """(the manifest's kd.tokenizer entry, the files to write: kd/tokenizer.json, ...) for a teacher.

    The fingerprint is taken from the files as shipped, so kd-check recomputes it from kd/ exactly."""
    files = tokenizer_files(model)
    table = table_from_files(model, files)
    shipped = {f"{KD_DIR}/{name}": data for name, data in files.items()}
    return manifest_entry(table, list(shipped)), shipped


def _read_json(ds, uri: str, rel: str, missing: str) -> dict:
    if not ds.exists(rel):
        raise KdDatasetError(f"{uri}/{rel} does not exist; {missing}")
    try:
        return json.loads(ds.read(rel))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise KdDatasetError(f"{uri}/{rel}: not valid JSON ({err}); the file is corrupt, rebuild the dataset") from None


def no_manifest(ds, uri: str) -> str:
    """What a folder without manifest.json is, and what to do: an unfinished build is not the same as no build."""
    local = ds.local_path()
    if local is not None and not Path(local).exists():
        return f"{uri} does not exist; check the path (kd-check reads the folder a KD build wrote, or its `distillery export --format hf` copy)"
    found = [f"{name}/" for name in UNFINISHED if ds.list(name)]
    if found:
        return (
            f"{uri} has no {MANIFEST} but has {' and '.join(found)}: a build that did not finish (or is still running); "
            "rerun `distillery run` with the same recipe to finish it, then run kd-check again"
        )
    return (
        f"{uri} has no {MANIFEST}: it is not a Distillery build or an export of one, so nothing records which tokenizer "
        "the soft targets index; point kd-check at the folder a build with kd.top_k wrote, or at its "
        "`distillery export --format hf` copy (both hold manifest.json and kd/)"
    )


def _stored_table(ds, uri: str, entry: dict) -> dict:
    """The table of the teacher tokenizer stored in kd/: the Hugging Face files the manifest lists,
    or (datasets built before they were shipped) the table itself at kd/tokenizer.json."""
    rel = entry.get("path") or TOKENIZER_FILE
    if "files" not in entry:
        return validate_table(_read_json(ds, uri, rel, "the teacher's tokenizer table is missing; rebuild the dataset"), f"{uri}/{rel}")
    files = {}
    for path in entry["files"]:
        name = str(path).removeprefix(f"{KD_DIR}/")
        if "/" in name or "\\" in name or name in ("", ".", ".."):  # never write outside the scratch folder
            raise KdDatasetError(f"{uri}/{MANIFEST}: kd.tokenizer.files lists {path!r}, not a file in {KD_DIR}/; the manifest is damaged, rebuild the dataset")
        if not ds.exists(path):
            raise KdDatasetError(
                f"{uri}/{path} does not exist; the teacher's tokenizer in {KD_DIR}/ is incomplete: "
                f"copy the whole {KD_DIR}/ folder with the dataset, or rebuild it"
            )
        files[name] = ds.read(path)
    try:
        return table_from_files(str(entry.get("name") or "teacher"), files)
    except Exception as err:  # a damaged file fails in tokenizers, transformers or json, each its own way
        raise KdDatasetError(
            f"{uri}/{KD_DIR}: the teacher's tokenizer does not load ({type(err).__name__}: {str(err)[:200]}); "
            "the files are corrupt or were edited, rebuild the dataset"
        ) from None


def teacher_table(output_uri: str) -> tuple[dict, dict]:
    """(the manifest's kd section, the verified teacher table) of a KD dataset."""
    from distillery.adapters.storage import open_dataset

    uri = output_uri.rstrip("/")
    ds = open_dataset(uri)
    if not ds.exists(MANIFEST):
        raise KdDatasetError(no_manifest(ds, uri))
    manifest = _read_json(ds, uri, MANIFEST, "")
    kd = manifest.get("kd")
    if not isinstance(kd, dict) or not kd.get("top_k"):
        raise KdDatasetError(f"{uri}: the dataset was built without kd.top_k; nothing to check (set kd.top_k in the recipe and rebuild to get soft targets)")
    entry = kd.get("tokenizer")
    if not isinstance(entry, dict) or not entry.get("sha256"):
        raise KdDatasetError(f"{uri}/{MANIFEST}: the kd section has no tokenizer fingerprint (kd.tokenizer.sha256); rebuild the dataset")
    table = _stored_table(ds, uri, entry)
    got = fingerprint(table)["sha256"]
    if got != entry["sha256"]:
        where = entry.get("path") if "files" not in entry else f"{KD_DIR}/"
        raise KdDatasetError(
            f"{uri}/{where}: the tokenizer's sha256 {got[:12]}… differs from the manifest's kd.tokenizer.sha256 "
            f"{str(entry['sha256'])[:12]}…; the files are corrupt or were edited, rebuild the dataset"
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
    """`distillery kd-check OUTPUT_DIR --student MODEL_DIR`: print the report; 0 on a match, 1 otherwise.
    A dataset that cannot be checked (no manifest.json, no kd section, a missing or damaged kd/)
    raises KdDatasetError, which the CLI prints as one `distillery: error:` line with exit status 2."""
    report, ok = kd_check(args.output, args.student)
    print(report)
    return 0 if ok else 1


__all__ = [
    "KdDatasetError", "TokenizerNotFound", "cmd_kd_check", "kd_check", "kd_tokenizer", "load_table", "load_tokenizer",
    "no_manifest", "special_tokens", "table_from_files", "teacher_table", "tokenizer_files",
]
