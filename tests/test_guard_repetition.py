"""Gopher's repetition limits: each trips on text made to trip it, normal and short answers
pass, real loops from a small teacher are caught, real human answers are kept."""

import pytest

from distillery.guards.repetition import GOPHER_LIMITS, MIN_WORDS, RepetitionHit, measures, repetition

PROSE = (
    "Photosynthesis is the process by which green plants, algae and some bacteria turn light into chemical "
    "energy. Inside the chloroplasts, chlorophyll absorbs mostly blue and red light, and that energy splits "
    "water molecules, releasing oxygen as a by-product. The hydrogen ions and electrons freed in this step drive "
    "the synthesis of ATP and NADPH. In the Calvin cycle, which does not need light directly, the enzyme RuBisCO "
    "fixes carbon dioxide from the air into three-carbon sugars. Those sugars are later assembled into glucose, "
    "starch and cellulose. Because nearly every food chain starts with this conversion, photosynthesis sustains "
    "almost all life on Earth and keeps the oxygen in our atmosphere replenished."
)

# Real answers of SmolLM2-135M-Instruct (this project's test teacher), cut at max_tokens.
REAL_LOOPS = [
    "I'm a team-smarter than most redheads. I'm a little smarter than most people, which is probably what everyone "
    "is saying about me. But that's not my quirk. I'm a little smarter than most people, and I've been trying to "
    "prove it. I'm a little smarter than most people, but I'm trying to make it up. I'm a little smarter than most "
    "people, but I'm trying to make it up.\n\nI'm a little smarter than most people",
    "The adjectives that can be created to describe the religions of the given religions are:\n\n- Atheism: "
    "Anecdotal\n- Atheism: A non-theistic perspective\n- Atheism: A non-theistic approach\n- Atheism: A "
    "philosophical non-theist view\n- Atheism: A philosophical non-theist view\n- Atheism: A philosophical "
    "non-theist view\n- Atheism: A philosophical non-theist view\n\nThe only other adjectives that can be creat",
    "Dependency parsing for the sentence:\n\nDependency parsing for the sentence:\n\nDependency parsing for the sentence",
    "1. First, you need to measure out 1/4 cup of sugar.\n2. You need to measure out 1/4 cup of sugar.\n3. Now, you "
    "need to add 1/4 cup of",
]
REAL_NORMAL = [
    "When you reach a longer-range goal, treat yourself to a new pair of walking shoes or new tunes. If you're too "
    "busy to work out or simply need a break, take a day or two off. The important thing is to",
    "I'm thrilled to be your creative director. I'm always happy to collaborate with you, and I'm excited to share "
    "my passion for storytelling with the world.",
    "The federal minimum wage in the United States is $7.25 per hour, but many states set a higher one.",
]


def words(count: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(count))


# Text made to trip each limit, checked alone (limits={name: bound}).
CRAFTED = {
    "dup_para_frac": "Item one here.\n\nItem two here.\n\nItem one here.\n\nItem one here.",
    "dup_para_char_frac": f"{words(30, 'long')}\n\nshort a\n\nshort b\n\nshort c\n\n{words(30, 'long')}",
    "dup_line_frac": "alpha beta\ngamma delta\nalpha beta\nalpha beta",
    "dup_line_char_frac": f"{words(30, 'long')}\nshort a\nshort b\nshort c\n{words(30, 'long')}",
    "top_2gram": " ".join(f"the cat x{i}" for i in range(40)),
    "top_3gram": " ".join(f"over the hill y{i} z{i}" for i in range(25)),
    "top_4gram": " ".join(f"in the long run q{i} r{i} s{i}" for i in range(20)),
    **{f"dup_{n}gram": f"{words(n, 'phrase')} {words(40, 'a')} {words(n, 'phrase')} {words(40, 'b')} "
                       f"{words(n, 'phrase')} {words(40, 'c')} {words(n, 'phrase')}" for n in range(5, 11)},
}


def test_the_limits_are_gophers_table_a1():
    assert GOPHER_LIMITS == {
        "dup_para_frac": 0.30, "dup_para_char_frac": 0.20, "dup_line_frac": 0.30, "dup_line_char_frac": 0.20,
        "top_2gram": 0.20, "top_3gram": 0.18, "top_4gram": 0.16, "dup_5gram": 0.15, "dup_6gram": 0.14,
        "dup_7gram": 0.13, "dup_8gram": 0.12, "dup_9gram": 0.11, "dup_10gram": 0.10}
    assert set(CRAFTED) == set(GOPHER_LIMITS)


@pytest.mark.parametrize("name", list(GOPHER_LIMITS))
def test_each_limit_trips_on_text_made_for_it_and_not_on_prose(name):
    bound = GOPHER_LIMITS[name]
    hit = repetition(CRAFTED[name], {name: bound}, min_words=0)
    assert hit is not None and hit.limit == name and hit.bound == bound and hit.value > bound
    assert repetition(PROSE, {name: bound}, min_words=0) is None
    value = dict(measures(PROSE, min_words=0))[name]
    assert 0.0 <= value <= bound


def test_measure_values_are_datatroves_arithmetic():
    m = dict(measures("a b\n\nc d\n\na b\n\na b", min_words=0))
    assert m["dup_para_frac"] == pytest.approx(2 / 4) and m["dup_para_char_frac"] == pytest.approx(6 / 18)
    m = dict(measures(" ".join(["x y z"] * 10), min_words=0))
    assert m["top_2gram"] == pytest.approx(len("x y") * 10 / 59)
    # 30 words looping "x y z": 5-grams repeat from word 3, and each repeat skips its 5 words,
    # so the repeats start at words 3, 8, 13, 18 and 23 (5 characters each, spaces not counted)
    assert m["dup_5gram"] == pytest.approx(len("xyzxy") * 5 / 59)


def test_degenerate_loops_are_caught():
    loop = "I am a cat. " * 12
    hit = repetition(loop)
    assert hit is not None and hit.limit == "dup_5gram" and hit.value > 0.5
    assert repetition("I am a cat. I am a cat. I am a cat.") is not None  # 12 words: still a loop
    assert repetition("\n".join(["Step 1: open the file."] * 4)).limit == "dup_line_frac"


def test_real_teacher_loops_are_caught_and_its_normal_answers_kept():
    hits = [repetition(t) for t in REAL_LOOPS]
    assert all(h is not None for h in hits), [t[:60] for t, h in zip(REAL_LOOPS, hits) if h is None]
    assert [h.limit for h in hits] == ["dup_5gram", "dup_line_frac", "dup_para_frac", "dup_6gram"]
    assert [repetition(t) for t in REAL_NORMAL] == [None] * len(REAL_NORMAL)


def test_short_answers_skip_the_top_ngram_limits():
    short = "Yes, the cat sat on the mat and the cat was happy."  # 'the cat' twice: 27% of the characters
    assert repetition(short) is None
    assert repetition(short, min_words=0) == RepetitionHit("top_2gram", pytest.approx(14 / len(short)), 0.2)
    assert MIN_WORDS == 100
    long = short + " " + PROSE.replace("the ", "a ")
    assert len(long.split()) >= MIN_WORDS and repetition(long) is None


def test_a_top_ngram_said_once_is_not_repetition():
    # every 2-gram is unique: datatrove would count the longest lone 2-gram (~40% here)
    assert dict(measures("Extraordinarily considerate neighbours.", min_words=0))["top_2gram"] == 0.0


def test_real_seed_outputs_pass(seed_records):
    outputs = [inst["output"] for r in seed_records for inst in r["instances"]]
    failed = [(o[:80], repetition(o)) for o in outputs if repetition(o) is not None]
    assert len(outputs) >= 175
    assert len(failed) <= 0.02 * len(outputs), failed
    # at Gopher's own floor of 50 words the top n-gram limits reject human-written lists
    at_50 = [o for o in outputs if repetition(o, min_words=50) is not None]
    assert 0 < len(at_50) <= 5 and any("What is your favorite" in o for o in at_50)


def test_empty_text_and_left_out_limits():
    assert repetition("") is None and repetition("   \n\n ") is None and list(measures("")) == []
    limits = {k: v for k, v in GOPHER_LIMITS.items() if not k.startswith("dup_line")}
    assert repetition(CRAFTED["dup_line_frac"], limits) is None
    assert repetition(CRAFTED["dup_line_frac"]).limit == "dup_line_frac"
