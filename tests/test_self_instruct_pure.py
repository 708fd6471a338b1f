"""Self-Instruct's prompt, parser and filters, and the diversity report, without an engine."""

from __future__ import annotations

import random

from distillery.diversity import distinct_n, diversity_report
import pytest
from pydantic import ValidationError

from distillery.recipes.self_instruct import (
    INPUT_STOP,
    NoveltyIndex,
    SelfInstructConfig,
    basic_filter,
    check_input,
    input_request,
    parse,
    parse_input,
    pick_context,
    pick_examples,
    request,
    rouge_l,
    tokens,
)
from conftest import read_seeds


def test_request_shows_eight_tasks_and_opens_the_next():
    messages, nxt = request([f"task {i}" for i in range(8)])
    assert nxt == 9
    assert messages[0]["content"].startswith("Come up with a series of tasks:") and "Task 8: task 7" in messages[0]["content"]
    assert messages[-1] == {"role": "assistant", "content": "Task 9:"}


def test_context_is_six_human_and_two_machine_once_there_are_some():
    human, machine = [f"h{i}" for i in range(20)], ["m1", "m2", "m3"]
    rng = random.Random(0)
    shown = pick_context(human, machine, rng)
    assert len(shown) == 8 and sum(t.startswith("m") for t in shown) == 2
    assert sum(t.startswith("m") for t in pick_context(human, [], rng)) == 0 and len(pick_context(human, [], rng)) == 8


def test_parse_splits_numbered_tasks_and_drops_instance_fields():
    text = " Write a haiku about rain.\nTask 10: Explain photosynthesis to a child.\nInput: a leaf\nOutput: ...\nTask 11: Name three rivers in Europe.\n\nThat is all."
    assert parse(text) == ["Write a haiku about rain.", "Explain photosynthesis to a child.", "Name three rivers in Europe."]


def test_input_examples_mix_tasks_with_and_without_inputs():
    pool = [{"seed_id": f"w{i}", "instruction": f"with {i}", "input": f"data {i}"} for i in range(10)]
    pool += [{"seed_id": f"n{i}", "instruction": f"none {i}", "input": ""} for i in range(10)]
    rng = random.Random(0)
    kinds = lambda chosen: sorted(t["seed_id"][0] for t in chosen)  # noqa: E731
    assert kinds(pick_examples(pool, rng, 6)) == ["n"] * 3 + ["w"] * 3
    assert kinds(pick_examples(pool[:2] + pool[10:], rng, 6)) == ["n"] * 4 + ["w"] * 2  # only two with an input
    assert kinds(pick_examples(pool[:10] + pool[10:11], rng, 6)) == ["n"] + ["w"] * 5  # only one without
    assert kinds(pick_examples(pool[10:], rng, 6)) == ["n"] * 6  # a pool without inputs
    assert len(pick_examples(pool[:3], rng, 6)) == 3  # a pool smaller than asked


def test_input_request_on_real_seeds_shows_inputs_and_noinput():
    pool = [{"seed_id": r["id"], "instruction": r["instruction"], "input": r["instances"][0]["input"]} for r in read_seeds()]
    examples = pick_examples(pool, random.Random(1), 6)
    assert sum(bool(t["input"]) for t in examples) == 3
    messages = input_request(examples, "Translate the following sentence into French.")
    user = messages[0]["content"]
    assert user.count("Task: ") == 7 and user.count("Input: <noinput>") == 3
    for t in examples:
        assert f"Task: {t['instruction']}\nInput: {t['input'].strip() or '<noinput>'}" in user
    assert user.endswith("Task: Translate the following sentence into French.\nInput:")
    assert messages[1] == {"role": "assistant", "content": "Input:"}
    assert "\nOutput:" in INPUT_STOP and "\nTask:" in INPUT_STOP


def test_parse_input_keeps_the_input_and_reads_noinput():
    assert parse_input(" The weather is lovely today.\nOutput: Il fait beau.") == "The weather is lovely today."
    assert parse_input(" - apples\n- pears\n\nTask: Name a river.\nInput: <noinput>") == "- apples\n- pears"
    for none in (" <noinput>", "", "  \n", " None.", " N/A", " <noinput>\nOutput: 42", " [No input]"):
        assert parse_input(none) == "", none


def test_input_checks_reject_cut_off_and_copied_inputs():
    task = "Summarize the following article in two sentences."
    assert check_input(task, "Rain fell all week in Paris.", "stop", 0.7).keep
    assert check_input(task, "", "stop", 0.7).keep  # needs no input
    cut = check_input(task, "The sea and the sea of the sea", "length", 0.7)
    assert (cut.keep, cut.reason) == (False, "input_truncated")
    copy = check_input(task, "Summarize the following article in 2 sentences.", "stop", 0.7)
    assert (copy.keep, copy.reason) == (False, "input_copies_task") and "ROUGE-L" in copy.detail


def test_self_instruct_section_refuses_crossed_bounds():
    with pytest.raises(ValidationError, match=r"self_instruct.min_words \(9\) must not exceed self_instruct.max_words \(3\)"):
        SelfInstructConfig(min_words=9, max_words=3)
    with pytest.raises(ValidationError, match="input_examples"):
        SelfInstructConfig(input_examples=0)
    assert SelfInstructConfig().generate_inputs and SelfInstructConfig().input_temperature == 0.0


def test_rouge_l_matches_hand_computed_values():
    assert rouge_l(tokens("the cat sat"), tokens("the cat sat")) == 1.0
    # LCS("a b c d", "a c d e") = 3 -> P = R = 3/4
    assert rouge_l(tokens("a b c d"), tokens("a c d e")) == 0.75
    assert rouge_l([], tokens("x")) == 0.0


def test_filters_on_the_real_seed_pool():
    seeds = read_seeds()
    index = NoveltyIndex()
    for s in seeds:
        index.add(s["instruction"], s["id"])
    near = seeds[5]["instruction"].rstrip(".?") + " please."
    verdict = index.check(near)
    assert not verdict.keep and verdict.reason == "not_novel" and seeds[5]["id"] in verdict.detail
    assert index.check("Name three uses of baking soda in the kitchen.").keep
    # the MinHash prefilter misses no pair at ROUGE-L >= 0.7 among the seeds themselves (brute force)
    toks = [tokens(s["instruction"]) for s in seeds]
    for i, t in enumerate(toks):
        brute = max(rouge_l(t, u) for j, u in enumerate(toks) if j != i)
        if brute >= 0.7:
            assert index.nearest(seeds[i]["instruction"])[0] >= 0.7
    assert basic_filter("Draw a map of your neighbourhood.", 3, 150).reason == "blacklisted"
    assert basic_filter("Plot the function y = x^2.", 3, 150).reason == "blacklisted"
    assert basic_filter("- List three fruits.", 3, 150).reason == "starts_with_punctuation"
    assert basic_filter("Summarize the plot.", 3, 150).keep is False  # 'plot' is on the paper's list, even here
    assert basic_filter("Summarize the following paragraph in one sentence.", 3, 150).keep


def test_diversity_report_separates_a_collapsed_set_from_a_varied_one():
    seeds = [s["instruction"] for s in read_seeds()]
    varied = diversity_report(seeds[:100], seeds[100:], threshold=0.8, ngram=3)
    collapsed = diversity_report([seeds[0]] * 50 + seeds[1:3], seeds[:10], threshold=0.8, ngram=3)
    assert varied["distinct_2"] > collapsed["distinct_2"]
    assert collapsed["mean_pairwise_similarity"] > 0.8 > varied["mean_pairwise_similarity"]
    assert collapsed["near_seed_share"] > 0.9 and varied["near_seed_share"] == 0.0
    assert distinct_n(["a b a b"], 1) == 0.5 and distinct_n([], 2) is None
