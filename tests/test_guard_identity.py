"""The identity guard on its labelled dev set (tests/data/identity_dev.jsonl: assistant answers in nine
languages, leaks and hard negatives) and its small contracts. `pytest -s` prints recall and false
positives per language. Speed is measured by a one-off command, not here (no timed tests)."""

from __future__ import annotations

import ast
import json
import pickle
from collections import defaultdict
from pathlib import Path

import pytest

from distillery.guards import identity
from distillery.guards.identity import DEFAULT_VENDORS, FLAG_REASONS, REJECT_REASONS, IdentityGuard, IdentityHit, assistant_texts

DEV = Path(__file__).parent / "data" / "identity_dev.jsonl"
LANGUAGES = ("en", "zh", "es", "fr", "de", "it", "pt", "ru", "ja")
KINDS = ("positive", "plain", "third_person", "code", "quote", "roleplay", "name_word", "student_name")


def _rows() -> list[dict]:
    return [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines() if line.strip()]


def _guard(row: dict) -> IdentityGuard:
    student = row.get("student") or {}
    return IdentityGuard(name=student.get("name"), maker=student.get("maker"), vendors=DEFAULT_VENDORS)


@pytest.fixture(scope="module")
def results() -> list[tuple[dict, list[IdentityHit]]]:
    return [(row, _guard(row).check(row["text"], row["prompt"])) for row in _rows()]


def _rejects(hits: list[IdentityHit]) -> list[IdentityHit]:
    return [h for h in hits if h.reason in REJECT_REASONS]


def _caught(row: dict, hits: list[IdentityHit]) -> bool:
    """A leak is caught when the guard's verdict (its most severe hit) has the row's reason; boilerplate when
    it is flagged and nothing is rejected."""
    if row["label"] == "ai_boilerplate":
        return any(h.reason == "ai_boilerplate" for h in hits) and not _rejects(hits)
    return bool(_rejects(hits)) and _rejects(hits)[0].reason == row["label"]


def test_the_dev_set_is_well_formed():
    rows = _rows()
    assert len(rows) >= 350 and len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) <= {"id", "text", "prompt", "label", "language", "kind", "student"}, r["id"]
        assert r["label"] in (*REJECT_REASONS, *FLAG_REASONS, "none") and r["language"] in LANGUAGES and r["kind"] in KINDS, r["id"]
        assert (r["kind"] == "positive") == (r["label"] != "none"), r["id"]
        assert isinstance(r["text"], str) and r["text"].strip() and (r["prompt"] is None or isinstance(r["prompt"], str)), r["id"]
    for language in LANGUAGES:
        assert sum(r["language"] == language and r["kind"] == "positive" for r in rows) >= 10, language
    assert {r["kind"] for r in rows} == set(KINDS)


def test_recall_and_false_positives_per_language(results):
    per = defaultdict(lambda: [0, 0, 0, 0])  # positives, caught, negatives, rejected negatives
    for row, hits in results:
        n = per[row["language"]]
        if row["kind"] == "positive":
            n[0] += 1
            n[1] += _caught(row, hits)
        if row["label"] in ("none", "ai_boilerplate"):
            n[2] += 1
            n[3] += bool(_rejects(hits))
    print("\nlanguage  recall            false positives")
    for language in (*LANGUAGES, "all"):
        pos, caught, neg, fp = [sum(v[i] for v in per.values()) for i in range(4)] if language == "all" else per[language]
        print(f"{language:8s}  {caught:3d}/{pos:<3d} {caught / pos:6.1%}   {fp:2d}/{neg:<3d} {fp / neg:5.1%}")
        assert caught / pos >= (0.9 if language == "all" else 0.8), language
        if language == "all":
            assert fp / neg <= 0.02


def test_hard_negatives_are_never_rejected(results):
    failures = [(row["id"], [(h.reason, h.matched) for h in _rejects(hits)], row["text"][:120])
                for row, hits in results if row["kind"] not in ("plain", "positive") and _rejects(hits)]
    assert failures == []


def test_every_matched_span_is_in_the_answer(results):
    for row, hits in results:
        for hit in hits:
            assert hit.matched and hit.matched in row["text"] and "\n" not in hit.matched, (row["id"], hit)
            assert hit.reason in (*REJECT_REASONS, *FLAG_REASONS) and hit.language in LANGUAGES


def test_hits_come_most_severe_first_one_per_reason():
    hits = IdentityGuard().check("As an AI language model trained by OpenAI, my knowledge cutoff is 2021. I'm ChatGPT.")
    assert [h.reason for h in hits] == ["identity_claim", "cutoff_claim", "ai_boilerplate"]
    assert hits[0].matched == "As an AI language model trained by OpenAI" and hits[0].language == "en"


def test_the_students_own_name_and_maker_are_never_a_leak():
    answer = "I'm SmolLM, a helpful AI assistant trained by Hugging Face."
    assert [h.reason for h in IdentityGuard().check(answer)] == ["identity_claim"]
    assert IdentityGuard(name="SmolLM", maker="Hugging Face").check(answer) == []
    assert IdentityGuard(name="SmolLM2", maker="Hugging Face").check("I'm SmolLM, made by Hugging Face.") == []
    # its own name does not cover another vendor's
    assert [h.matched for h in IdentityGuard(name="SmolLM").check("I'm SmolLM, but I was trained by OpenAI.")] == \
        ["I was trained by OpenAI"]
    assert IdentityGuard(name="Orca", maker="Acme").check("Soy Orca, creado por Acme.") == []


def test_a_prompt_that_asks_for_role_play_allows_the_claim():
    answer = "Hello! I am ChatGPT, how can I help?"
    assert [h.reason for h in IdentityGuard().check(answer)] == ["identity_claim"]
    assert IdentityGuard().check(answer, "Pretend you are ChatGPT and greet me.") == []
    # a refusal to write the story is the assistant's own voice
    refusal = "I'm sorry, but I cannot write that story as it goes against OpenAI's use case policy."
    assert [h.reason for h in IdentityGuard().check(refusal, "Write a story about a heist.")] == ["vendor_policy"]


def test_check_messages_reads_assistant_turns_with_the_user_turn_before():
    guard = IdentityGuard()
    messages = [
        {"role": "system", "content": "You are ChatGPT, a large language model trained by OpenAI."},
        {"role": "user", "content": "I am ChatGPT's biggest fan. Who are you?"},
        {"role": "assistant", "content": "Nice to meet you! I'm here to help."},
        {"role": "user", "content": "Pretend you are Claude and say hi."},
        {"role": "assistant", "content": "Hi! I'm Claude, made by Anthropic."},
        {"role": "user", "content": "Thanks. And who are you really?"},
        {"role": "assistant", "content": "I am Gemini, a large language model from Google."},
    ]
    assert [(h.reason, h.matched) for h in guard.check_messages(messages)] == [("identity_claim", "I am Gemini")]
    assert guard.check_messages([{"role": "user", "content": "I was trained by OpenAI."}]) == []
    assert guard.check_messages([]) == []


def test_assistant_texts():
    assert assistant_texts("I am ChatGPT.") == [(None, "I am ChatGPT.")]
    assert assistant_texts(None) == []
    messages = [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "A helper."},
                {"role": "assistant", "content": [{"type": "text", "text": "Still here."}]}]
    assert assistant_texts(messages) == [(None, "Hello."), ("Who are you?", "A helper."), ("Who are you?", "Still here.")]
    assert assistant_texts([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hey"}]) == [("Hi", "Hey")]


def test_the_guard_pickles_and_compiles_once_per_setting():
    guard = IdentityGuard(name="Orca", maker="Acme", vendors=("OpenAI", "ChatGPT"))
    copy = pickle.loads(pickle.dumps(guard))
    assert copy == guard and copy.check("I was trained by OpenAI.")[0].reason == "identity_claim"
    assert IdentityGuard(vendors=["OpenAI"]).vendors == ("OpenAI",)  # a list is kept as a tuple (hashable)
    identity._compiled.cache_clear()
    for _ in range(3):
        IdentityGuard().check("I'm ChatGPT.")
        guard.check("I'm ChatGPT.")
    assert identity._compiled.cache_info().misses == 2


def test_empty_and_odd_answers():
    guard = IdentityGuard()
    assert guard.check("") == [] and guard.check("   ") == [] and guard.check(None) == []
    assert guard.check("I AM CHATGPT, TRAINED BY OPENAI.")[0].matched == "I AM CHATGPT"
    assert guard.check("Ｉ’ｍ ＣｈａｔＧＰＴ！")[0].matched == "Ｉ’ｍ ＣｈａｔＧＰＴ"  # full width, curly apostrophe
    assert guard.check("İstanbul is large. I'm ChatGPT.")[0].matched == "I'm ChatGPT"  # offsets survive "İ"


def test_pure_logic_imports_only_the_standard_library():
    tree = ast.parse(Path(identity.__file__).read_text(encoding="utf-8"))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= {"__future__", "re", "unicodedata", "dataclasses", "functools"}, names
