"""KD tokenizer identity without vLLM: the fingerprint table, a copied, extended or renamed
tokenizer, the teacher's tokenizer as a KD dataset ships it (kd/, Hugging Face format), and
`distillery kd-check` against a KD dataset, an older one and folders that are not one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from conftest import ROOT, read_seeds
from distillery.adapters.tokenizers import (
    KdDatasetError,
    TokenizerNotFound,
    cmd_kd_check,
    kd_check,
    kd_tokenizer,
    load_table,
    load_tokenizer,
)
from distillery.errors import DistilleryError
from distillery.tokenizer_id import compare, dumps, fingerprint, manifest_entry, table_from_vocab

MODEL = "smollm2-135m-instruct"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def default_table() -> dict:
    return load_table(MODEL)


def copy_tokenizer(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def copied(model_dir, tmp_path_factory) -> Path:
    return copy_tokenizer(model_dir, tmp_path_factory.mktemp("tok") / "copy")


@pytest.fixture(scope="module")
def added(model_dir, tmp_path_factory) -> Path:
    """The default tokenizer plus 3 new tokens (ids 49152..49154)."""
    tok = load_tokenizer(str(model_dir))
    assert tok.add_tokens(["<kd_one>", "<kd_two>", "<kd_three>"]) == 3
    dest = tmp_path_factory.mktemp("tok") / "added"
    tok.save_pretrained(dest)
    return dest


RENAMED = {3: "<kd_renamed_a>", 4: "<kd_renamed_b>", 5: "<kd_renamed_c>"}


@pytest.fixture(scope="module")
def renamed(model_dir, tmp_path_factory) -> Path:
    """A copy whose tokenizer.json gives ids 3, 4 and 5 other strings (special tokens, so no BPE merge uses them)."""
    dest = copy_tokenizer(model_dir, tmp_path_factory.mktemp("tok") / "renamed")
    spec = json.loads((dest / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    for idx, new in RENAMED.items():
        old = next(k for k, v in vocab.items() if v == idx)
        del vocab[old]
        vocab[new] = idx
        entry = next(a for a in spec["added_tokens"] if a["id"] == idx)
        assert entry["content"] == old
        entry["content"] = new
    (dest / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    return dest


@pytest.fixture(scope="module")
def shipped() -> tuple[dict, dict[str, bytes]]:
    """The default teacher's kd.tokenizer manifest entry and kd/ files, as a KD build writes them."""
    return kd_tokenizer(MODEL)


def write_manifest(root: Path, entry: dict, top_k: int = 5) -> None:
    manifest = {
        "name": "kd-test",
        "shards": [],
        "rows": 0,
        "kd": {"top_k": top_k, "distribution": "raw_logprobs", "logprob_dtype": "float16", "tokenizer": entry},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))


def write_kd_dataset(root: Path, shipped: tuple[dict, dict[str, bytes]]) -> Path:
    entry, files = shipped
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    write_manifest(root, entry)
    return root


def write_old_kd_dataset(root: Path, table: dict) -> Path:
    """A dataset as builds wrote them before kd/ held the Hugging Face files: the table at kd/tokenizer.json."""
    (root / "kd").mkdir(parents=True)
    (root / "kd" / "tokenizer.json").write_bytes(dumps(table))
    write_manifest(root, manifest_entry(table))
    return root


# ---------------------------------------------------------------- tokenizer identity (pure)


def test_table_from_vocab_counts_holes_and_hashes_without_the_name():
    table = table_from_vocab("toy", {"a": 0, "b": 1, "d": 3}, {"eos_token": "b", "additional_special_tokens": ["d"]})
    assert table == {"name": "toy", "vocab_size": 4, "tokens": ["a", "b", "", "d"], "special_tokens": {"additional_special_tokens": ["d"], "eos_token": "b"}}
    same = table_from_vocab("renamed", {"d": 3, "b": 1, "a": 0}, {"additional_special_tokens": ["d"], "eos_token": "b"})
    assert fingerprint(same)["sha256"] == fingerprint(table)["sha256"]
    assert fingerprint(table)["vocab_size"] == 4 and fingerprint(same)["name"] == "renamed"
    other = table_from_vocab("toy", {"a": 0, "b": 1, "d": 3}, {"eos_token": "a", "additional_special_tokens": ["d"]})
    assert fingerprint(other)["sha256"] != fingerprint(table)["sha256"]


def test_compare_counts_each_differing_id():
    t = table_from_vocab("t", {"a": 0, "b": 1, "c": 2}, {"eos_token": "c"})
    s = table_from_vocab("s", {"a": 0, "x": 1, "c": 2, "y": 3, "z": 5}, {"eos_token": "a"})
    r = compare(t, s)
    assert r["match"] is False
    assert r["differing_ids"] == 3  # 1 renamed, 3 and 5 only in the student (4 is a hole in both)
    assert (r["vocab_size_teacher"], r["vocab_size_student"]) == (3, 6)
    assert r["special_tokens_differ"] == ["eos_token"]
    assert r["examples"] == [[1, "b", "x"], [3, None, "y"], [5, None, "z"]]
    assert compare(t, t)["match"] is True and compare(t, t)["differing_ids"] == 0


# ---------------------------------------------------------------- tokenizer identity (real tokenizer)


def test_default_table_fingerprint_is_stable_and_survives_a_copy(default_table, copied):
    again = load_table(MODEL)
    assert fingerprint(again) == fingerprint(default_table)
    assert default_table["vocab_size"] == 49152
    assert default_table["tokens"][1] == "<|im_start|>" and default_table["tokens"][2] == "<|im_end|>"
    assert default_table["special_tokens"]["eos_token"] == "<|im_end|>"
    copy = load_table(str(copied))
    assert copy["name"] != default_table["name"]
    assert fingerprint(copy)["sha256"] == fingerprint(default_table)["sha256"]
    assert compare(default_table, copy) == {
        "match": True, "differing_ids": 0, "vocab_size_teacher": 49152, "vocab_size_student": 49152,
        "special_tokens_differ": [], "examples": [],
    }


def test_added_tokens_do_not_match(default_table, added):
    table = load_table(str(added))
    assert fingerprint(table)["sha256"] != fingerprint(default_table)["sha256"]
    r = compare(default_table, table)
    assert r["match"] is False
    assert r["differing_ids"] == 3
    assert (r["vocab_size_teacher"], r["vocab_size_student"]) == (49152, 49155)
    assert r["examples"] == [[49152, None, "<kd_one>"], [49153, None, "<kd_two>"], [49154, None, "<kd_three>"]]


def test_renamed_tokens_are_counted_exactly(default_table, renamed):
    table = load_table(str(renamed))
    r = compare(default_table, table)
    assert r["match"] is False
    assert r["differing_ids"] == len(RENAMED)
    assert (r["vocab_size_teacher"], r["vocab_size_student"]) == (49152, 49152)
    assert [e[0] for e in r["examples"]] == sorted(RENAMED)
    assert all(e[2] == RENAMED[e[0]] and e[1] == default_table["tokens"][e[0]] for e in r["examples"])


def test_folder_without_tokenizer_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(TokenizerNotFound, match="no tokenizer found.*pass the student model's folder"):
        load_table(str(tmp_path))


# ---------------------------------------------------------------- the teacher's tokenizer as shipped


def test_shipped_tokenizer_is_the_teachers_in_hugging_face_format(tmp_path, shipped, model_dir, default_table):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    entry, files = shipped
    assert entry["path"] == "kd/tokenizer.json" and set(entry["files"]) == set(files) >= {"kd/tokenizer.json", "kd/tokenizer_config.json"}
    assert files["kd/tokenizer.json"] == (model_dir / "tokenizer.json").read_bytes()  # the teacher's own file, byte for byte
    assert {k: entry[k] for k in ("name", "vocab_size", "sha256")} == fingerprint(default_table)
    kd = write_kd_dataset(tmp_path / "ds", shipped) / "kd"
    teacher = load_tokenizer(MODEL)
    loaders = {
        "tokenizers": Tokenizer.from_file(str(kd / "tokenizer.json")),
        "PreTrainedTokenizerFast": PreTrainedTokenizerFast(tokenizer_file=str(kd / "tokenizer.json")),
        "AutoTokenizer": AutoTokenizer.from_pretrained(kd),
    }
    for seed in read_seeds():
        ids = teacher(seed["instruction"], add_special_tokens=False)["input_ids"]
        assert loaders["tokenizers"].encode(seed["instruction"], add_special_tokens=False).ids == ids
        assert loaders["PreTrainedTokenizerFast"](seed["instruction"], add_special_tokens=False)["input_ids"] == ids
        assert loaders["AutoTokenizer"](seed["instruction"], add_special_tokens=False)["input_ids"] == ids
    auto = loaders["AutoTokenizer"]
    assert (auto.eos_token, auto.bos_token, len(auto)) == (teacher.eos_token, teacher.bos_token, len(teacher)) == ("<|im_end|>", "<|im_start|>", 49152)
    chat = [{"role": "user", "content": read_seeds()[0]["instruction"]}]
    assert auto.apply_chat_template(chat, tokenize=False) == teacher.apply_chat_template(chat, tokenize=False)


# ---------------------------------------------------------------- kd-check end to end


def test_kd_check_matching_student(tmp_path, shipped, copied, capsys):
    ds = write_kd_dataset(tmp_path / "ds", shipped)
    report, ok = kd_check(str(ds), str(copied))
    assert ok is True, report
    assert "OK" in report and "49152 ids" in report
    assert cmd_kd_check(types.SimpleNamespace(output=str(ds), student=str(copied))) == 0
    assert "OK" in capsys.readouterr().out


def test_kd_check_refuses_a_different_student(tmp_path, shipped, added, renamed, capsys):
    ds = write_kd_dataset(tmp_path / "ds", shipped)
    report, ok = kd_check(str(ds), str(added))
    assert ok is False
    assert "differing ids: 3 of 49155" in report
    assert "teacher 49152, student 49155" in report
    assert "'<kd_one>'" in report and "refusing:" in report and "teacher's vocabulary" in report
    report, ok = kd_check(str(ds), str(renamed))
    assert ok is False and "differing ids: 3 of 49152" in report and "'<kd_renamed_a>'" in report
    assert cmd_kd_check(types.SimpleNamespace(output=str(ds), student=str(added))) == 1
    assert "refusing:" in capsys.readouterr().out


def test_kd_check_rejects_a_tampered_tokenizer(tmp_path, shipped, copied):
    ds = write_kd_dataset(tmp_path / "ds", shipped)
    spec = json.loads((ds / "kd" / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    token = next(k for k, v in vocab.items() if v == 3)  # a special token: no BPE merge uses it, so the file still loads
    vocab["<tampered>"] = vocab.pop(token)
    next(a for a in spec["added_tokens"] if a["id"] == 3)["content"] = "<tampered>"
    (ds / "kd" / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(DistilleryError, match="kd/: the tokenizer's sha256 .* differs from the manifest"):
        kd_check(str(ds), str(copied))
    (ds / "kd" / "tokenizer.json").write_text("{not json")
    with pytest.raises(KdDatasetError, match="the teacher's tokenizer does not load"):
        kd_check(str(ds), str(copied))
    (ds / "kd" / "tokenizer.json").unlink()
    with pytest.raises(KdDatasetError, match="kd/tokenizer.json does not exist; the teacher's tokenizer in kd/ is incomplete"):
        kd_check(str(ds), str(copied))
    entry = {**shipped[0], "files": ["kd/../../outside.json"]}
    write_manifest(ds, entry)
    with pytest.raises(KdDatasetError, match="kd.tokenizer.files lists 'kd/../../outside.json', not a file in kd/"):
        kd_check(str(ds), str(copied))


def test_kd_check_reads_datasets_that_ship_the_table(tmp_path, default_table, copied, added):
    ds = write_old_kd_dataset(tmp_path / "ds", default_table)
    assert kd_check(str(ds), str(copied))[1] is True
    assert kd_check(str(ds), str(added))[1] is False
    table = json.loads((ds / "kd" / "tokenizer.json").read_text())
    table["tokens"][100] = "tampered"
    (ds / "kd" / "tokenizer.json").write_text(json.dumps(table))
    with pytest.raises(DistilleryError, match="kd/tokenizer.json: the tokenizer's sha256 .* differs from the manifest"):
        kd_check(str(ds), str(copied))
    (ds / "kd" / "tokenizer.json").write_text("{not json")
    with pytest.raises(KdDatasetError, match="not valid JSON"):
        kd_check(str(ds), str(copied))


def test_kd_check_without_kd_section(tmp_path, copied):
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "plain", "shards": []}))
    with pytest.raises(DistilleryError, match="built without kd.top_k; nothing to check"):
        kd_check(str(tmp_path), str(copied))


def test_kd_check_says_what_a_folder_without_manifest_is(tmp_path, copied):
    with pytest.raises(KdDatasetError, match="missing does not exist; check the path"):
        kd_check(str(tmp_path / "missing"), str(copied))
    other = tmp_path / "other"
    (other / "train").mkdir(parents=True)
    (other / "train" / "part-0.parquet").write_bytes(b"PAR1")
    with pytest.raises(KdDatasetError, match="other has no manifest.json: it is not a Distillery build or an export of one") as err:
        kd_check(str(other), str(copied))
    assert "did not finish" not in str(err.value)
    unfinished = tmp_path / "unfinished"
    (unfinished / "_temporary" / "attempt").mkdir(parents=True)
    (unfinished / "_temporary" / "attempt" / "shard.parquet").write_bytes(b"PAR1")
    with pytest.raises(KdDatasetError, match="has no manifest.json but has _temporary/: a build that did not finish"):
        kd_check(str(unfinished), str(copied))
    # From the command line: one error line and exit status 2 (0: the student matches, 1: it does not).
    cli = subprocess.run(
        [sys.executable, "-m", "distillery.commands.cli", "kd-check", str(other), "--student", str(copied)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert cli.returncode == 2, cli.stderr[-2000:]
    assert cli.stderr.strip().splitlines() == [
        f"distillery: error: {other} has no manifest.json: it is not a Distillery build or an export of one, so nothing "
        "records which tokenizer the soft targets index; point kd-check at the folder a build with kd.top_k wrote, "
        "or at its `distillery export --format hf` copy (both hold manifest.json and kd/)"
    ]
