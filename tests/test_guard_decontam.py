"""Benchmark decontamination (Tulu 3's rule): planted copies of eval items are found, unrelated
rows are not, and coverage equals a plain-Python reference of the rule."""

import pickle
import random

import pytest

from distillery.guards.decontam import ContamHit, EvalIndex, tokens

GSM = [
    ("gsm-0", "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
              "How many clips did Natalia sell altogether in April and May?"),
    ("gsm-1", "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
              "How much did she earn?"),
    ("gsm-2", "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. "
              "Her parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents. "
              "How much more money does Betty need to buy the wallet?"),
]
MMLU = [
    ("mmlu-0", "Which of the following is the body cavity that contains the pituitary gland? "
               "A. Abdominal B. Cranial C. Pleural D. Spinal"),
    ("mmlu-1", "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q. A. 0 B. 4 C. 2 D. 6"),
]


def seed_items(seed_records):
    """Eval items made from the real seed tasks: instruction, input and output."""
    out = []
    for r in seed_records:
        inst = r["instances"][0]
        out.append(("self-instruct", r["id"], " ".join(x for x in (r["instruction"], inst["input"], inst["output"]) if x)))
    return out


def reference_coverage(item: str, row: str, n: int = 8) -> float:
    """The rule in plain Python: share of the item's tokens inside n-grams the row also has."""
    it, rt = tokens(item), tokens(row)
    grams = {tuple(rt[i : i + n]) for i in range(len(rt) - n + 1)}
    covered = {j for p in range(len(it) - n + 1) if tuple(it[p : p + n]) in grams for j in range(p, p + n)}
    return len(covered) / len(it)


@pytest.fixture(scope="module")
def index():
    return EvalIndex.build([("gsm8k", i, t) for i, t in GSM] + [("mmlu", i, t) for i, t in MMLU])


HOST = ("Here is a practice problem I found for you. Read it carefully, work through the arithmetic step by step, "
        "and tell me the final answer at the end.")


def test_tokens_are_lowercase_words_with_cjk_characters_alone():
    assert tokens("Natalia's $48 clips, in APRIL!") == ["natalia", "s", "48", "clips", "in", "april"]
    assert tokens("snake_case x2") == ["snake_case", "x2"]
    assert tokens("東京タワーは高い") == ["東", "京", "タ", "ワ", "ー", "は", "高", "い"]
    assert tokens("한국어 문장입니다.") == ["한국어", "문장입니다"]  # Hangul keeps its spaces
    assert tokens("ﬁnal ＡＢＣ café") == ["final", "abc", "café"]  # NFKC: ligatures, full-width forms
    assert tokens("") == [] and tokens(" ... ") == []


def test_verbatim_copy_inside_a_longer_row_is_caught(index):
    row = HOST + " " + GSM[2][1] + " Show your work, please."
    assert index.match([row]) == [ContamHit("gsm8k", "gsm-2", 1.0)]


def test_every_tenth_word_changed_is_still_caught(index):
    words = GSM[2][1].split()
    edited = " ".join("banana" if i % 10 == 9 else w for i, w in enumerate(words))
    [hit] = index.match([HOST + " " + edited])
    assert hit is not None and hit.item_id == "gsm-2"
    assert hit.coverage == pytest.approx(reference_coverage(GSM[2][1], edited))
    assert 0.5 < hit.coverage < 1.0


def test_truncations_around_the_half_boundary(index):
    item = tokens(GSM[2][1])
    assert len(item) == 50

    def cut(share):
        return " ".join(item[: round(share * len(item))])

    # 60% of the tokens in shared 8-grams is past the bar, 40% is not; exactly half is NOT
    # "more than 50%", so a copy of the first half sits on the boundary and is kept.
    assert index.match([cut(0.6)])[0].coverage == pytest.approx(0.6, abs=0.01)
    assert index.match([cut(0.4)]) == [None]
    assert reference_coverage(GSM[2][1], cut(0.5)) == 0.5 and index.match([cut(0.5)]) == [None]
    assert index.match([cut(0.5) + " " + item[25]])[0].coverage == pytest.approx(26 / 50)
    # a lower threshold catches the half copy
    assert index.match([cut(0.5)], threshold=0.4)[0].item_id == "gsm-2"


def test_unrelated_real_rows_are_never_hit(seed_records):
    items = seed_items(seed_records)
    idx = EvalIndex.build(items[:90])
    rows = [t for _, _, t in items[90:]] + [HOST, GSM[0][1], MMLU[0][1], ""]
    assert idx.match(rows) == [None] * len(rows)
    assert EvalIndex.build(items[:90], n=13).any_hit(rows) == [None] * len(rows)
    # at 8 words, two human-written knock-knock jokes do share one n-gram: an any-hit, rightly
    hits = idx.any_hit(rows)
    assert [(r, h.item_id) for r, h in zip(rows, hits) if h] == [(items[104][2], "seed_task_63")]
    assert "knock knock who s there banana banana who" in " ".join(tokens(items[104][2]))


def test_coverage_equals_the_reference_on_mixed_real_rows(seed_records):
    """Rows spliced from pieces of 1-3 real items: the hit and its coverage are the reference's."""
    items = seed_items(seed_records)
    assert min(len(tokens(t)) for _, _, t in items) >= 8  # no short items: the rule alone decides
    idx = EvalIndex.build(items)
    rng = random.Random(7)
    rows = []
    for _ in range(300):
        parts = []
        for _ in range(rng.randint(1, 3)):
            words = rng.choice(items)[2].split()
            a = rng.randrange(len(words))
            parts.append(" ".join(words[a : a + rng.randint(3, 60)]))
        rows.append(" and ".join(parts))
    hits = idx.match(rows, threshold=0.3)
    assert sum(h is not None for h in hits) > 100
    ids = [i for _, i, _ in items]
    for row, hit in zip(rows, hits):
        covs = [reference_coverage(text, row) for _, _, text in items]
        if max(covs) > 0.3:
            assert hit is not None and hit.coverage == pytest.approx(max(covs)), row[:80]
            assert covs[ids.index(hit.item_id)] == pytest.approx(max(covs))
        else:
            assert hit is None, row[:80]


def test_the_hit_names_the_right_set_and_item(index):
    rows = [MMLU[1][1], "Unrelated: " + GSM[1][1], "nothing to see here", GSM[0][1] + " " + MMLU[0][1]]
    hits = index.match(rows)
    assert hits[0] == ContamHit("mmlu", "mmlu-1", 1.0)
    assert hits[1] == ContamHit("gsm8k", "gsm-1", 1.0)
    assert hits[2] is None
    assert hits[3].coverage == 1.0 and (hits[3].eval_set, hits[3].item_id) == ("gsm8k", "gsm-0")  # tie: first indexed
    assert index.sizes == {"gsm8k": 3, "mmlu": 2} and index.short == {"gsm8k": 0, "mmlu": 0}


def test_the_same_text_in_two_sets_reports_the_first_indexed():
    text = GSM[0][1]
    idx = EvalIndex.build([("a", "x1", "An unrelated first item about chemistry and the periodic table of elements."),
                           ("b", "y7", text), ("c", "z3", text)])
    assert idx.match([text]) == [ContamHit("b", "y7", 1.0)]


def test_answers_any_13_gram_hits(seed_records):
    items = seed_items(seed_records)
    idx13 = EvalIndex.build(items, n=13)
    target = tokens(items[3][2])
    assert len(target) > 40
    thirteen = " ".join(target[10:23])
    twelve = " ".join(target[10:22])
    answers = ["As a helpful assistant I would say: " + thirteen + " and that is all.", "Sure! " + twelve + " ok", ""]
    hits = idx13.any_hit(answers)
    assert hits[0] == ContamHit("self-instruct", items[3][1], 1.0)
    assert hits[1] is None and hits[2] is None
    # the same 13-gram is far below half of the item, so the coverage rule would keep the row
    assert idx13.match(answers[:1]) == [None]


def test_short_items_match_only_whole_and_tiny_ones_never():
    items = [("trivia", "t1", "What is the capital of France?"),  # 6 tokens: matched as a whole run
             ("trivia", "t2", "Tell me a joke."),  # 4 tokens: too common to mean anything, skipped
             ("trivia", "t3", "Who painted the Mona Lisa, in which year?")]  # 8 tokens: one 8-gram
    idx = EvalIndex.build(items)
    assert idx.sizes == {"trivia": 3} and idx.short == {"trivia": 2} and idx.skipped == {"trivia": 1}
    rows = ["Quiz time. WHAT is the capital of france ... answer in one word.",
            "what is the capital of",  # only part of the item
            "what is the capital of frances",  # a different last token: no match inside a word
            "Please tell me a joke about cats.",
            "who painted the mona lisa in which year exactly"]
    hits = idx.match(rows)
    assert hits[0] == ContamHit("trivia", "t1", 1.0)
    assert hits[1:4] == [None, None, None]
    assert hits[4] == ContamHit("trivia", "t3", 1.0)


def test_a_small_n_indexes_items_shorter_than_min_short():
    idx = EvalIndex.build([("t", "a", "Tell me a joke."), ("t", "b", "Hi there")], n=3)
    assert idx.short == {"t": 1} and idx.skipped == {"t": 1}
    assert idx.match(["please tell me a joke now"]) == [ContamHit("t", "a", 1.0)]
    assert idx.match(["hi there"]) == [None]


def test_cjk_items_match_by_character_ngrams():
    item = "小明有十二个苹果，他给了小红五个苹果，请问小明还剩下几个苹果？"
    idx = EvalIndex.build([("cmath", "c1", item)])
    assert idx.match(["请回答下面的问题：" + item + " 谢谢"])[0] == ContamHit("cmath", "c1", 1.0)
    assert idx.match(["小明今天去学校上课了，老师表扬了他。"]) == [None]


def test_the_index_pickles_and_matches_the_same(index, seed_records):
    rows = [HOST + " " + GSM[2][1], MMLU[1][1][:60], "plain text"] + [t for _, _, t in seed_items(seed_records)[:20]]
    again = pickle.loads(pickle.dumps(index))
    assert again.match(rows) == index.match(rows) and again.any_hit(rows) == index.any_hit(rows)
    assert again.sizes == index.sizes and again.n == 8


def test_empty_index_and_bad_threshold():
    idx = EvalIndex.build([])
    assert idx.match(["anything at all here and there"]) == [None] and idx.sizes == {}
    with pytest.raises(ValueError, match="threshold"):
        idx.match(["x"], threshold=1.5)
