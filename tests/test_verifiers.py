"""RLVR verifiers without an engine: hand-written answers that pass and fail each
verifier, malformed ground truths rejected with their reason, and the task file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.evals.verifiers import (
    VERIFIERS,
    GroundTruthError,
    check_ground_truth,
    describe_constraints,
    ifeval_instructions,
    in_band,
    normalize_ground_truth,
    openinstruct_row,
    pass_rate,
    verify,
)

from conftest import read_seeds

TASKS = Path(__file__).parent / "data" / "verifiable_tasks.jsonl"


def ifeval(*pairs) -> str:
    """An IFEval ground truth from (instruction id, kwargs) pairs."""
    return json.dumps({"instruction_id": [i for i, _ in pairs], "kwargs": [k for _, k in pairs]})


# ---------------------------------------------------------------- gsm8k


@pytest.mark.parametrize(
    "answer, truth",
    [
        ("The answer is 1,234.", "1234"),
        ("She pays $18.00 in total.", "18"),
        ("18.0", "#### 18"),
        ("5 + 7 = 12\n#### 12", "#### 12"),
        ("It drops to -3 degrees.", "-3"),
        ("Half of 5 is 2.5.", "2.5"),
        ("3 boxes of 400 make 1,200", "#### 1,200"),
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "Natalia sold 48/2 = 24 clips in May.\n#### 72"),
    ],
)
def test_gsm8k_passes(answer, truth):
    assert verify("gsm8k", answer, truth)


@pytest.mark.parametrize(
    "answer, truth",
    [
        ("First 12 apples, then she eats some, leaving 10.", "12"),  # the last number counts
        ("I do not know.", "12"),
        ("", "12"),
        ("The answer is 1,235.", "1234"),
        ("18.01", "18"),
        ("Pages 5-3", "-3"),  # a range's dash is no minus
    ],
)
def test_gsm8k_fails(answer, truth):
    assert not verify("gsm8k", answer, truth)


# ---------------------------------------------------------------- math


@pytest.mark.parametrize(
    "answer, truth",
    [
        (r"So the probability is $\boxed{\frac{1}{2}}$.", "0.5"),
        (r"So the probability is $\boxed{\frac{1}{2}}$.", r"\dfrac12"),
        (r"\boxed{\tfrac{1}{2}}", "1/2"),
        (r"Hence $x = \boxed{\sqrt{2}}$.", r"\sqrt{2}"),
        (r"\boxed{\sqrt2}", r"\sqrt{2}"),
        (r"We get \boxed{x = 3}.", "3"),
        (r"First \boxed{2}, corrected: \boxed{5}", "5"),
        (r"\fbox{7}", "7"),
        (r"The angle is \boxed{120^\circ}.", "120"),
        (r"The length is \boxed{10\text{ cm}}.", "10"),
        (r"\boxed{\text{(B)}}", "(B)"),
        (r"\boxed{\left( 1, 2 \right)}", "(1,2)"),
        (r"\boxed{50\%}", "50"),
        (r"\boxed{1,000}", "1000"),
        ("The answer is $-\\frac{3}{4}$.", "-0.75"),
        ("Final answer: 0.3333333", r"\frac{1}{3}"),
        (r"Adding them gives $2+2$, which is $4$", "4"),
        ("4", r"\boxed{4}"),
    ],
)
def test_math_passes(answer, truth):
    assert verify("math", answer, truth)


@pytest.mark.parametrize(
    "answer, truth",
    [
        (r"\boxed{\frac{1}{3}}", "0.5"),
        (r"\boxed{\sqrt{3}}", r"\sqrt{2}"),
        (r"\boxed{4}", "3"),
        (r"\boxed{5}, no wait, \boxed{4}", "5"),  # the last box counts
        ("Final answer: 0.33", r"\frac{1}{3}"),
        (r"\boxed{x + y = 3}", "3"),  # not a single variable on the left
        (r"\boxed{\frac{1}{2}", r"\frac{1}{2}"),  # an unbalanced box is no answer
        ("No idea.", "7"),
    ],
)
def test_math_fails(answer, truth):
    assert not verify("math", answer, truth)


# ---------------------------------------------------------------- exact


@pytest.mark.parametrize(
    "answer",
    ["Paris", "  paris.  ", "PARIS", "Let me think.\nThe capital is well known.\n\nParis.\n"],
)
def test_exact_passes(answer):
    assert verify("exact", answer, "Paris")


def test_exact_collapses_inner_whitespace():
    assert verify("exact", "pacific\n   OCEAN.", "Pacific Ocean")


@pytest.mark.parametrize("answer", ["Lyon", "Paris, France", "The capital is Paris", "Paris\nor maybe Lyon", ""])
def test_exact_fails(answer):
    assert not verify("exact", answer, "Paris")


# ---------------------------------------------------------------- ifeval

WORDS_AT_LEAST_5 = ifeval(("length_constraints:number_words", {"relation": "at least", "num_words": 5}))
WORDS_LESS_THAN_5 = ifeval(("length_constraints:number_words", {"relation": "less than", "num_words": 5}))
THREE_PARAGRAPHS = ifeval(("length_constraints:number_paragraphs", {"num_paragraphs": 3}))
KEYWORDS = ifeval(("keywords:existence", {"keywords": ["river", "bank"]}))
FORBIDDEN = ifeval(("keywords:forbidden_words", {"forbidden_words": ["money", "cash"]}))
LOWERCASE = ifeval(("change_case:english_lowercase", {}))
JSON_FORMAT = ifeval(("detectable_format:json_format", {}))
END = ifeval(("startend:end_checker", {"end_phrase": "Any other questions?"}))


@pytest.mark.parametrize(
    "truth, answer",
    [
        (WORDS_AT_LEAST_5, "one two three four five"),
        (WORDS_AT_LEAST_5, "don't stop-me now, ok"),  # \w+ splits at the apostrophe and hyphen
        (WORDS_LESS_THAN_5, "one two three four"),
        (THREE_PARAGRAPHS, "First part.\n***\nSecond part.\n***\nThird part."),
        (THREE_PARAGRAPHS, "***\nOne.\n***\nTwo.\n***\nThree.\n***"),  # empty first and last chunks do not count
        (KEYWORDS, "The RIVER flooded the Bank."),
        (FORBIDDEN, "We paid with a card; moneyed people smile."),  # whole words only
        (LOWERCASE, "all quiet here, 42 times."),
        (JSON_FORMAT, '{"a": [1, 2]}'),
        (JSON_FORMAT, '```json\n{"a": 1}\n```'),
        (END, "Here is a riddle. any other questions?  "),
        (END, '"Done. Any other questions?"'),
    ],
)
def test_ifeval_passes(truth, answer):
    assert verify("ifeval", answer, truth)


@pytest.mark.parametrize(
    "truth, answer",
    [
        (WORDS_AT_LEAST_5, "one two three four"),
        (WORDS_LESS_THAN_5, "one two three four five"),
        (THREE_PARAGRAPHS, "First part.\n***\nSecond part."),
        (THREE_PARAGRAPHS, "First.\n***\n***\nSecond.\n***\nThird."),  # an empty chunk in the middle
        (THREE_PARAGRAPHS, "First.\n\nSecond.\n\nThird."),  # blank lines are no divider
        (KEYWORDS, "The river was calm."),
        (FORBIDDEN, "It costs Money."),
        (LOWERCASE, "all quiet Here."),
        (LOWERCASE, "42"),  # no letters: str.islower is False, as in IFEval
        (JSON_FORMAT, "{'a': 1}"),
        (JSON_FORMAT, 'Here it is: {"a": 1}'),
        (END, "Any other questions? Bye."),
    ],
)
def test_ifeval_fails(truth, answer):
    assert not verify("ifeval", answer, truth)


COMBINED = ifeval(
    ("length_constraints:number_words", {"relation": "less than", "num_words": 20}),
    ("keywords:existence", {"keywords": ["banana"]}),
    ("change_case:english_lowercase", {}),
    ("startend:end_checker", {"end_phrase": "the end."}),
)


def test_ifeval_combined_needs_every_instruction():
    assert verify("ifeval", "knock knock. who is there? banana. the end.", COMBINED)
    assert not verify("ifeval", "Knock knock. who is there? banana. the end.", COMBINED)  # a capital
    assert not verify("ifeval", "knock knock. who is there? orange. the end.", COMBINED)  # no banana
    assert not verify("ifeval", "knock knock, banana " * 7 + "the end.", COMBINED)  # 23 words
    assert not verify("ifeval", "knock knock. banana. the end. ha", COMBINED)  # wrong ending


def test_ifeval_accepts_a_dict_and_huggingface_none_kwargs():
    truth = {"instruction_id": ["keywords:existence"], "kwargs": [{"keywords": ["river"], "num_words": None}]}
    assert check_ground_truth("ifeval", truth) is None
    assert verify("ifeval", "a river", truth)
    assert normalize_ground_truth("ifeval", truth) == (
        '{"instruction_id":["keywords:existence"],"kwargs":[{"keywords":["river"]}]}'
    )


def test_keywords_are_matched_literally():
    truth = ifeval(("keywords:existence", {"keywords": ["C++"]}))
    assert verify("ifeval", "I write c++ daily.", truth)
    assert not verify("ifeval", "I write C daily.", truth)


def test_ifeval_instructions_and_description():
    assert ifeval_instructions(COMBINED) == [
        "length_constraints:number_words",
        "keywords:existence",
        "change_case:english_lowercase",
        "startend:end_checker",
    ]
    both = ifeval(
        ("length_constraints:number_words", {"relation": "at least", "num_words": 50}),
        ("keywords:existence", {"keywords": ["river", "bank"]}),
    )
    assert describe_constraints(both) == "Answer in at least 50 words. Use the words 'river' and 'bank'."
    assert describe_constraints(FORBIDDEN) == "Do not use the words 'money' or 'cash'."
    assert describe_constraints(WORDS_LESS_THAN_5) == "Answer in fewer than 5 words."
    assert "***" in describe_constraints(THREE_PARAGRAPHS)
    assert '"Any other questions?"' in describe_constraints(END)
    with pytest.raises(GroundTruthError):
        describe_constraints("{")


# ---------------------------------------------------------------- malformed ground truths


@pytest.mark.parametrize(
    "verifier, truth, needles",
    [
        ("gsm8k", "forty", ["gsm8k", "'forty'", "#### 42"]),
        ("gsm8k", "#### ", ["gsm8k", "number"]),
        ("gsm8k", "12 apples", ["'12 apples'"]),
        ("gsm8k", None, ["string", "None"]),
        ("gsm8k", 12, ["string", "int"]),
        ("math", "   ", ["math", "non-empty"]),
        ("exact", None, ["exact", "None"]),
        ("ifeval", None, ["ifeval", "NoneType"]),
        ("ifeval", '{"instruction_id": [', ["not valid JSON", "instruction_id"]),
        ("ifeval", "[1, 2]", ["JSON object"]),
        ("ifeval", '{"kwargs": [{}]}', ["'instruction_id'"]),
        ("ifeval", ifeval(("detectable_format:title", {})), ["unknown IFEval instruction id", "detectable_format:title"]),
        (
            "ifeval",
            json.dumps({"instruction_id": ["keywords:existence", "change_case:english_lowercase"], "kwargs": [{}]}),
            ["2 instruction ids but 1 kwargs"],
        ),
        ("ifeval", ifeval(("keywords:existence", {})), ["keywords:existence", "needs kwarg 'keywords'"]),
        (
            "ifeval",
            ifeval(("length_constraints:number_words", {"relation": "at most", "num_words": 5})),
            ["'relation'", "'at most'", "'less than' or 'at least'"],
        ),
        (
            "ifeval",
            ifeval(("length_constraints:number_words", {"relation": "at least", "num_words": "5"})),
            ["'num_words'", "positive integer"],
        ),
        ("ifeval", ifeval(("keywords:forbidden_words", {"forbidden_words": "money"})), ["list of words"]),
        ("ifeval", ifeval(("change_case:english_lowercase", {"capital": True})), ["no kwarg 'capital'"]),
    ],
)
def test_malformed_ground_truth_is_rejected_with_its_reason(verifier, truth, needles):
    reason, detail = check_ground_truth(verifier, truth)
    assert reason == "bad_ground_truth"
    for needle in needles:
        assert needle in detail, detail
    with pytest.raises(GroundTruthError) as raised:
        verify(verifier, "42", truth)
    assert raised.value.reason == "bad_ground_truth"
    with pytest.raises(GroundTruthError):
        normalize_ground_truth(verifier, truth)


@pytest.mark.parametrize("verifier", ["regex", None, "GSM8K"])
def test_unknown_verifier(verifier):
    reason, detail = check_ground_truth(verifier, "42")
    assert reason == "unknown_verifier"
    assert repr(verifier) in detail
    assert all(name in detail for name in VERIFIERS)
    with pytest.raises(GroundTruthError, match="unknown_verifier"):
        verify(verifier, "42", "42")


def test_good_ground_truths_pass_the_check():
    assert check_ground_truth("gsm8k", "#### 1,234") is None
    assert check_ground_truth("gsm8k", "-2.5") is None
    assert check_ground_truth("math", r"\frac{1}{2}") is None
    assert check_ground_truth("exact", "Paris") is None
    assert check_ground_truth("ifeval", COMBINED) is None


def test_normalize_ground_truth():
    assert normalize_ground_truth("gsm8k", "#### 1,234") == "1234"
    assert normalize_ground_truth("gsm8k", "He has 3 + 4 = 7.\n#### 7") == "7"
    assert normalize_ground_truth("gsm8k", " 18.0 ") == "18.0"
    assert normalize_ground_truth("math", "  \\frac{1}{2} ") == "\\frac{1}{2}"
    assert normalize_ground_truth("exact", " Paris \n") == "Paris"
    messy = '{ "kwargs": [ {"relation": "at least", "num_words": 5} ],\n "instruction_id": ["length_constraints:number_words"] }'
    assert normalize_ground_truth("ifeval", messy) == (
        '{"instruction_id":["length_constraints:number_words"],"kwargs":[{"num_words":5,"relation":"at least"}]}'
    )


def test_a_failed_generation_earns_nothing():
    assert not verify("exact", None, "Paris")


# ---------------------------------------------------------------- rows, rates, bands


def test_openinstruct_row():
    assert openinstruct_row("What is 2+2?", "4", "gsm8k") == {
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "ground_truth": "4",
        "dataset": "gsm8k",
    }
    row = openinstruct_row("Hi", "Paris", "exact", system="Be brief.")
    assert row["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_pass_rate():
    assert pass_rate("gsm8k", ["It is 4.", "5", "4.0", None], "4") == 0.5
    assert pass_rate("exact", ["Paris"], "Paris") == 1.0
    assert pass_rate("exact", [], "Paris") == 0.0
    with pytest.raises(GroundTruthError):
        pass_rate("gsm8k", ["4"], "four")


def test_in_band():
    assert in_band(0.5, 0.2, 0.8)
    assert in_band(0.2, 0.2, 0.8) and in_band(0.8, 0.2, 0.8)
    assert not in_band(0.0, 0.2, 0.8)
    assert not in_band(1.0, 0.2, 0.8)


# ---------------------------------------------------------------- the task file


def test_task_file_rows_are_checked():
    rows = [json.loads(line) for line in TASKS.read_text().splitlines()]
    assert len(rows) >= 30
    assert len({r["id"] for r in rows}) == len(rows)
    expected_bad = {"bad-unknown-verifier": "unknown_verifier", "bad-gsm8k-words": "bad_ground_truth",
                    "bad-ifeval-json": "bad_ground_truth"}
    for row in rows:
        problem = check_ground_truth(row["verifier"], row["ground_truth"])
        if row["id"].startswith("bad-"):
            assert problem is not None and problem[0] == expected_bad[row["id"]], (row["id"], problem)
        else:
            assert problem is None, (row["id"], problem)
    assert {r["id"] for r in rows if r["id"].startswith("bad-")} == set(expected_bad)
    counts = {v: sum(r["verifier"] == v and not r["id"].startswith("bad-") for r in rows) for v in VERIFIERS}
    assert counts == {"gsm8k": 8, "math": 6, "exact": 6, "ifeval": 10}


def test_task_file_ifeval_prompts_are_seed_instructions_with_their_constraints():
    seeds = {s["id"]: s for s in read_seeds()}
    rows = [json.loads(line) for line in TASKS.read_text().splitlines()]
    for row in rows:
        if row["verifier"] != "ifeval" or row["id"].startswith("bad-"):
            continue
        seed = seeds[row["id"].removeprefix("ifeval-")]
        assert all(not instance["input"] for instance in seed["instances"])
        assert row["prompt"] == seed["instruction"] + " " + describe_constraints(row["ground_truth"])
