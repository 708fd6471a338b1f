"""Textbooks and exercises (Phi-1; Gunasekar et al., 2023, "Textbooks Are All You Need"):
seeds, prompt templates, the exercise parser, the educational-value rubric and the recipe
model. Pure logic (no engine, no Prefect, no I/O).

Diversity comes from the seeds: every topic crossed with every audience. Each pair
gives one textbook-section prompt and a request for exercises; the teacher's
exercises are parsed, checked, and become prompts of their own, which the teacher
then solves. The judge scores every row for its educational value (the Phi-1 filter).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from distillery.recipe import JudgeConfig, Recipe, SourceConfig, _Strict, _WordBounds
from distillery.recipes.rounds import Verdict

SECTION_TEMPLATE = (
    "Write a section of a textbook on {topic} for {audience}.\n"
    "Explain the key ideas clearly and correctly, from the simplest to the more advanced, and "
    "include a short worked example. Write in the clear, self-contained style of a high-quality "
    "textbook: no filler, no chatty asides."
)

EXERCISES_TEMPLATE = (
    "Write {n} exercises on {topic} for {audience}.\n"
    "Each exercise must be self-contained, solvable in writing, and test understanding rather "
    "than recall. Write only the exercises, not their solutions, numbered like this:\n"
    "Exercise 1: ...\nExercise 2: ..."
)

SOLUTION_TEMPLATE = "{exercise}\n\nWrite a complete, correct worked solution that {audience} can follow, explaining each step."

# The Phi-1 filter's question, as the judge's rubric.
EDUCATIONAL_RUBRIC = (
    "Determine the educational value of the response for a student whose goal is to learn the topic "
    "of the instruction, at the level the instruction names. 10: clear, correct, self-contained "
    "textbook-quality teaching (explanations, worked examples or a worked solution) the student can "
    "learn from. 5: correct but thin, disorganized or partly off-level. 1: wrong, confusing, "
    "off-topic, or of no teaching value."
)


def pair_id(topic_index: int, audience_index: int) -> str:
    return f"t{topic_index}-a{audience_index}"


def seed_pairs(topics: Sequence[str], audiences: Sequence[str]) -> list[dict]:
    """Every topic crossed with every audience, in order: {pair, topic, audience}."""
    return [{"pair": pair_id(i, j), "topic": t, "audience": a}
            for i, t in enumerate(topics) for j, a in enumerate(audiences)]


def lineage(pair: dict, kind: str, source: str = "teacher", index: int | None = None) -> str:
    data = {"recipe": "textbook", "topic": pair["topic"], "audience": pair["audience"], "kind": kind,
            "pair": pair["pair"], "source": source}
    if index is not None:
        data["index"] = index
    return json.dumps(data)


def section_seed(pair: dict) -> dict:
    """The seed row asking the teacher for a textbook section."""
    return {"seed_id": f"textbook-{pair['pair']}-section", "instruction": SECTION_TEMPLATE.format(**pair),
            "input": "", "lineage": lineage(pair, "section")}


def exercise_seed(pair: dict, exercise: str, seed_id: str, source: str = "teacher", index: int | None = None) -> dict:
    """The seed row asking the teacher to solve one exercise."""
    return {"seed_id": seed_id, "instruction": SOLUTION_TEMPLATE.format(exercise=exercise, audience=pair["audience"]),
            "input": "", "lineage": lineage(pair, "exercise", source, index)}


def exercises_request(pair: dict, n: int) -> list[dict]:
    """The chat asking for `n` exercises; the assistant turn is opened at 'Exercise 1:' (continued)."""
    return [{"role": "user", "content": EXERCISES_TEMPLATE.format(n=n, **pair)},
            {"role": "assistant", "content": "Exercise 1:"}]


_BULLET = r"\n\s*(?:[*#_>-]+\s*)?"
_NEXT = re.compile(_BULLET + r"Exercise\s*\d+\s*[*_]*\s*[:.)]", re.IGNORECASE)
_SOLUTION = re.compile(_BULLET + r"(?:Solution|Answer|Hint)s?\s*\d*\s*[*_]*\s*[:.]", re.IGNORECASE)


def split_exercises(continuation: str) -> list[tuple[str, bool]]:
    """The exercises in a continuation of 'Exercise 1:', each with whether it visibly ended:
    its first part, then each 'Exercise N:' that follows. A solution the teacher wrote anyway
    (after 'Solution:' / 'Answer:') is cut off; an exercise followed by one, or by the next
    exercise, has ended (the last one may have been cut off by max_tokens)."""
    parts = [p for p in _NEXT.split("\n" + (continuation or ""))]
    out = []
    for n, part in enumerate(parts):
        pieces = _SOLUTION.split("\n" + part.strip())
        text = re.sub(r"[ \t]+", " ", re.sub(r"^\s*(?:\*\*|__)", "", pieces[0])).strip()
        if text:
            out.append((text, len(pieces) > 1 or n < len(parts) - 1))
    return out


def parse_exercises(continuation: str) -> list[str]:
    """The exercises in a continuation of 'Exercise 1:' (see split_exercises)."""
    return [text for text, _ in split_exercises(continuation)]


def check_exercise(text: str, min_words: int, max_words: int) -> Verdict:
    """An exercise worth solving: not empty, not a placeholder, within the word bounds."""
    if not re.search(r"\w", text):
        return Verdict(False, "empty", "no words (a placeholder or punctuation only)")
    words = text.split()
    if len(words) < min_words or len(words) > max_words:
        return Verdict(False, "length", f"{len(words)} words; bounds are {min_words}-{max_words}")
    return Verdict(True)


# ---- the recipe ----

DEFAULT_TOPICS = ["Python lists and loops", "recursion", "dictionaries and hashing", "reading and writing files in Python"]
DEFAULT_AUDIENCES = ["a high-school student who is new to programming", "a first-year computer science student"]
Text = Annotated[str, Field(min_length=1, max_length=500)]


class GivenExercise(_Strict):
    topic: Text = Field(..., description="The topic the exercise is on (recorded in its lineage).")
    audience: Text = Field(..., description="Who the exercise is for (recorded in its lineage; the solution is written for them).")
    exercise: str = Field(..., max_length=20_000, description="The exercise text, as a student would read it.")


class TextbookConfig(_WordBounds):
    section: ClassVar[str] = "textbook"

    topics: list[Text] = Field(DEFAULT_TOPICS, min_length=1, max_length=10_000,
                               description="Topics to teach; every topic is crossed with every audience.")
    audiences: list[Text] = Field(DEFAULT_AUDIENCES, min_length=1, max_length=1000,
                                  description="Audiences (who the section is written for), e.g. 'a high-school "
                                  "student who is new to programming'.")
    exercises_per_section: int = Field(2, ge=0, le=50, description="Exercises the teacher writes per topic and "
                                       "audience (each then solved as a row of its own); 0 for sections only.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature when writing exercises.")
    max_tokens: int = Field(256, ge=8, le=8192, description="Tokens the teacher may write per request for exercises; "
                            "an exercise cut off there is rejected ('truncated').")
    min_words: int = Field(4, ge=1, le=1000, description="Shorter exercises are rejected ('length').")
    max_words: int = Field(200, ge=1, le=10_000, description="Longer exercises are rejected ('length').")
    extra_exercises: list[GivenExercise] = Field(
        default_factory=list, max_length=100_000,
        description="Exercises from elsewhere (hand-written, another generator): checked like the teacher's "
        "(as round 0), then solved by the teacher.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds the sampling of exercises.")



class TextbookJudgeConfig(JudgeConfig):
    rubric: str = Field(EDUCATIONAL_RUBRIC, min_length=1, description="What the judge scores; the default is the "
                        "Phi-1 filter's question: the educational value for a student of the topic.")


class TextbookRecipe(Recipe):
    """A textbook build (Phi-1): sections and solved exercises for every topic and audience,
    kept when the judge finds them of educational value."""

    flow: Literal["textbook"] = Field("textbook", description="This recipe's flow.")
    source: SourceConfig = Field(default_factory=SourceConfig, description="Unused by the textbook flow: its seeds "
                                 "are textbook.topics crossed with textbook.audiences.")
    judge: TextbookJudgeConfig = Field(default_factory=TextbookJudgeConfig, description="LLM-as-judge scoring and "
                                       "filter; by default on educational value (set judge.min_score to filter).")
    textbook: TextbookConfig = Field(default_factory=TextbookConfig, description="Topics, audiences and exercises (Phi-1).")

    @model_validator(mode="after")
    def _exercises_fit(self) -> "TextbookRecipe":
        if self.textbook.max_tokens >= self.teacher.max_model_len:
            raise ValueError(f"textbook.max_tokens ({self.textbook.max_tokens}) must be smaller than "
                             f"teacher.max_model_len ({self.teacher.max_model_len})")
        return self
