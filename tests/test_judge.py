import pytest

from distillery.judge import JUDGE_REGEX, filter_by_score, judge_messages, parse_judgement
import re


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Score: 7\nRationale: Clear and correct.", (7, "Clear and correct.")),
        ("score = 10/10\n\nrationale: perfect", (10, "perfect")),
        ("Score: 3", (3, None)),
        ("Score: 11\nRationale: too high", (None, None)),
        ("Score: 0\nRationale: zero", (None, None)),
        ("I think it is good.", (None, None)),
        ("", (None, None)),
    ],
)
def test_parse_judgement(text, expected):
    assert parse_judgement(text) == expected


def test_regex_accepts_only_valid_scores():
    rx = re.compile(JUDGE_REGEX)
    assert rx.fullmatch("Score: 10\nRationale: fine answer")
    assert not rx.fullmatch("Score: 0\nRationale: fine answer")
    assert not rx.fullmatch("Score: 11\nRationale: fine answer")


def test_rubric_first_item_last():
    msgs = judge_messages("RUBRIC", "PROMPT", "RESPONSE")
    user = msgs[-1]["content"]
    assert user.index("RUBRIC") < user.index("PROMPT") < user.index("RESPONSE")


def test_filter_keeps_counts():
    rows = [{"judge_score": s} for s in (None, 1, 5, 9)]
    kept, rejected = filter_by_score(rows, 5)
    assert [r["judge_score"] for r in kept] == [5, 9]
    assert sorted(r["reason"] for r in rejected) == ["judge_unparsed", "low_score"]
