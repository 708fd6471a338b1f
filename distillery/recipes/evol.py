"""Evol-Instruct (WizardLM; Xu et al., 2023): the evolution prompts, the parser, the
elimination checks, and the recipe model. Pure logic (no engine, no Prefect, no I/O).

Each generation rewrites every instruction once, by one operation: in-depth evolving
makes it harder (add a constraint, deepen, concretize, ask for more reasoning steps,
complicate its input); in-breadth evolving ("mutation") writes a new, rarer instruction
in the same domain. The templates follow the paper's released ones. A failed evolution
is eliminated (the paper's checks, with cheap stand-ins where the paper asked ChatGPT):

(a) no information gain: the evolved prompt is a near copy of its parent (ROUGE-L at or
    above a threshold, identical after normalization included) or adds no word to it;
(b) it copies the evolving template's words ("#Rewritten Prompt#", "given prompt", ...);
(c) the teacher's answer to it is a refusal: says sorry (or the like) and is short;
(d) it is empty, only punctuation and stop words, too short or too long, or cut off.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from distillery.recipe import Recipe, _WordBounds
from distillery.recipes.rounds import Verdict
from distillery.recipes.self_instruct import lcs_length, tokens
from distillery.text import STOPWORDS

IN_DEPTH = ("add_constraints", "deepen", "concretize", "increase_reasoning", "complicate_input")
BREADTH = "breadth"
OPERATIONS = (*IN_DEPTH, BREADTH)

# The in-depth template (WizardLM's `depth.py`), one method line per operation.
DEPTH_TEMPLATE = (
    "I want you to act as a Prompt Rewriter.\n"
    "Your objective is to rewrite a given prompt into a more complex version to make those famous "
    "AI systems (e.g., ChatGPT and GPT-4) a bit harder to handle.\n"
    "But the rewritten prompt must be reasonable and must be understood and responded by humans.\n"
    "Your rewriting cannot omit the non-text parts such as the table and code in #The Given Prompt#. "
    "Also, please do not omit the input in #The Given Prompt#.\n"
    "You SHOULD complicate the given prompt using the following method:\n"
    "{method}\n"
    "You should try your best not to make the #Rewritten Prompt# become verbose, #Rewritten Prompt# "
    "can only add 10 to 20 words into #The Given Prompt#.\n"
    "'#The Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' are not allowed "
    "to appear in #Rewritten Prompt#\n"
    "#The Given Prompt#:\n{prompt}\n"
    "#Rewritten Prompt#:\n"
)

METHODS = {
    "add_constraints": "Please add one more constraint or requirement into #The Given Prompt#.",
    "deepen": "If #The Given Prompt# contains inquiries about certain issues, the depth and breadth of the "
              "inquiry can be increased.",
    "concretize": "Please replace general concepts with more specific concepts.",
    "increase_reasoning": "If #The Given Prompt# can be solved with just a few simple thinking processes, "
                          "you can rewrite it to explicitly request multiple-step reasoning.",
    "complicate_input": "Add a concrete input for the task to work on, such as a short table, a code "
                        "snippet, a list of numbers or a formula, and include that input in #Rewritten Prompt#.",
}

# The in-breadth template (WizardLM's `breadth.py`).
BREADTH_TEMPLATE = (
    "I want you to act as a Prompt Creator.\n"
    "Your goal is to draw inspiration from the #Given Prompt# to create a brand new prompt.\n"
    "This new prompt should belong to the same domain as the #Given Prompt# but be even more rare.\n"
    "The LENGTH and complexity of the #Created Prompt# should be similar to that of the #Given Prompt#.\n"
    "The #Created Prompt# must be reasonable and must be understood and responded by humans.\n"
    "'#Given Prompt#', '#Created Prompt#', 'given prompt' and 'created prompt' are not allowed to appear "
    "in #Created Prompt#\n"
    "#Given Prompt#:\n{prompt}\n"
    "#Created Prompt#:\n"
)


def evolution_prompt(operation: str, prompt: str) -> str:
    """The evolving prompt that asks the teacher to apply `operation` to `prompt`."""
    if operation == BREADTH:
        return BREADTH_TEMPLATE.format(prompt=prompt)
    if operation not in METHODS:
        raise ValueError(f"unknown evolution operation {operation!r}; choose from {', '.join(OPERATIONS)}")
    return DEPTH_TEMPLATE.format(method=METHODS[operation], prompt=prompt)


def evolution_messages(operation: str, prompt: str) -> list[dict]:
    """The chat for one evolution: the evolving prompt as the only (user) turn."""
    return [{"role": "user", "content": evolution_prompt(operation, prompt)}]


def choose_operation(rng: random.Random, operations: Sequence[str], breadth_share: float) -> str:
    """In-breadth with probability `breadth_share`, else one of the in-depth `operations`."""
    if not operations or rng.random() < breadth_share:
        return BREADTH
    return rng.choice(list(operations))


_LABEL = re.compile(r"^\s*(?:\*\*)?#*\s*(?:the\s+)?(?:rewritten|created|new)\s+prompt\s*#*\s*(?:\*\*)?\s*:\s*(?:\*\*)?\s*", re.IGNORECASE)
_QUOTES = ('"', "'", "\u201c", "\u201d", "`")


def parse_evolved(text: str) -> str:
    """The evolved prompt from the teacher's reply: stripped, without a leading
    '#Rewritten Prompt#:' style label or wrapping quotes. Template words anywhere
    else stay, for `template_leak` to find."""
    text = (text or "").strip()
    text = _LABEL.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


# ---- elimination ----

# (b): the template's own words; the paper names "given prompt", "rewritten prompt", "#Rewritten Prompt#".
_LEAK = re.compile(r"#\s*(?:the\s+)?(?:given|rewritten|created)\s+prompt\s*#|\b(?:given|rewritten|created)\s+prompt\b"
                   r"|\bprompt\s+(?:rewriter|creator)\b", re.IGNORECASE)

# (c): the paper checks for "sorry" in a short answer; the usual refusal openers count too.
REFUSAL_MARKERS = ("sorry", "i apologize", "as an ai", "i cannot", "i can't", "i can not", "i am unable",
                   "i'm unable", "i am not able", "i'm not able")


def normalize(text: str) -> str:
    return " ".join(tokens(text))


def check_form(text: str, min_words: int, max_words: int, finish_reason: str | None = None) -> Verdict:
    """(d): empty, only punctuation and stop words, out of the word bounds, or cut off by max_tokens."""
    if not text.strip():
        return Verdict(False, "empty", "the evolved prompt is empty")
    if finish_reason == "length":
        return Verdict(False, "truncated", "the teacher hit max_tokens before finishing the evolved prompt")
    words = text.split()
    if len(words) < min_words or len(words) > max_words:
        return Verdict(False, "length", f"{len(words)} words; bounds are {min_words}-{max_words}")
    if all(t in STOPWORDS for t in tokens(text)):
        return Verdict(False, "no_content", "only punctuation and stop words")
    return Verdict(True)


def check_leak(text: str) -> Verdict:
    """(b): the evolved prompt copies the evolving template's words."""
    hit = _LEAK.search(text)
    if hit:
        return Verdict(False, "template_leak", f"copies the template's words {hit.group(0)!r}")
    return Verdict(True)


def check_gain(text: str, parent: str, threshold: float) -> Verdict:
    """(a) without a judge: no information gain when the evolved prompt is its parent after
    normalization, a near copy of it (ROUGE-L >= threshold), or adds no word to it."""
    new, old = tokens(text), tokens(parent)
    if new == old:
        return Verdict(False, "no_gain", "identical to its parent after normalization")
    lcs = lcs_length(new, old)
    score = 0.0 if lcs == 0 else 2 * lcs / (len(new) + len(old))  # ROUGE-L F1
    if score >= threshold:
        return Verdict(False, "no_gain", f"ROUGE-L {score:.2f} with its parent (limit {threshold})")
    if len(new) - lcs == 0:
        return Verdict(False, "no_gain", "adds no words to its parent (only removes some)")
    return Verdict(True)


def eliminate(text: str, parent: str, *, min_words: int, max_words: int, threshold: float,
              finish_reason: str | None = None) -> Verdict:
    """The prompt-side checks in order: form (d), template leak (b), information gain (a)."""
    for verdict in (check_form(text, min_words, max_words, finish_reason), check_leak(text)):
        if not verdict.keep:
            return verdict
    return check_gain(text, parent, threshold)


def is_refusal(response: str, max_words: int = 80) -> Verdict:
    """(c): the answer says sorry (or refuses) and is short: the teacher could not do the task."""
    low = (response or "").lower().replace("\u2019", "'")
    hit = next((m for m in REFUSAL_MARKERS if m in low), None)
    words = len(low.split())
    if hit and words < max_words:
        return Verdict(False, "refusal", f"the answer says {hit!r} in {words} words (< {max_words})")
    return Verdict(True)


def split_refusals(rows: list[dict], max_words: int) -> tuple[list[dict], list[dict]]:
    """Check (c) on the teacher's answers: (kept, rejected as 'refusal')."""
    kept, refused = [], []
    for row in rows:
        v = is_refusal(row.get("response") or "", max_words)
        if v.keep:
            kept.append(row)
        else:
            refused.append({**row, "stage": "filter", "reason": v.reason, "detail": v.detail})
    return kept, refused


# ---- the recipe ----

InDepth = Literal["add_constraints", "deepen", "concretize", "increase_reasoning", "complicate_input"]


class EvolConfig(_WordBounds):
    section: ClassVar[str] = "evol"

    depth: int = Field(2, ge=1, le=16, description="Generations: every instruction is evolved this many times in a row "
                       "(the paper: 4). Evolved prompts from every generation become rows.")
    operations: list[InDepth] = Field(
        ["add_constraints", "deepen", "concretize", "increase_reasoning", "complicate_input"], min_length=1,
        description="In-depth evolutions to choose from, uniformly: add_constraints, deepen, concretize, "
        "increase_reasoning, complicate_input.")
    breadth_share: float = Field(0.2, ge=0.0, le=1.0, description="Share of evolutions that are in-breadth "
                                 "(a new, rarer prompt in the same domain) instead of in-depth.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature when evolving instructions.")
    max_tokens: int = Field(256, ge=8, le=8192, description="Tokens the teacher may write per evolved prompt; a prompt "
                            "cut off there is eliminated as 'truncated'.")
    min_words: int = Field(3, ge=1, le=1000, description="Evolved prompts with fewer words are eliminated ('length').")
    max_words: int = Field(300, ge=1, le=10_000, description="Evolved prompts with more words are eliminated ('length').")
    no_gain_threshold: float = Field(0.9, gt=0.0, le=1.0, description="Eliminate an evolved prompt whose ROUGE-L with "
                                     "its parent reaches this ('no_gain': no information gain).")
    refusal_max_words: int = Field(80, ge=1, le=10_000, description="A teacher answer that says sorry (or refuses) in "
                                   "fewer words than this is a failed evolution ('refusal'; the paper: 80).")
    candidates_uri: str | None = Field(
        None,
        description="Optional file of evolved prompts from elsewhere (an earlier run, another generator), any source "
        "format, with 'instruction' (the evolved prompt) and 'parent' (the prompt it was evolved from) columns: they "
        "go through the same elimination first, as generation 0, and are not evolved further.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds the choice of operations and the evolution sampling.")



class EvolInstructRecipe(Recipe):
    """An Evol-Instruct build (WizardLM): seeds evolved in depth and breadth, failed evolutions
    eliminated, the survivors answered by the teacher."""

    flow: Literal["evol_instruct"] = Field("evol_instruct", description="This recipe's flow.")
    evol: EvolConfig = Field(default_factory=EvolConfig, description="Instruction evolution (Evol-Instruct).")

    @model_validator(mode="after")
    def _evolution_fits(self) -> "EvolInstructRecipe":
        if self.evol.max_tokens >= self.teacher.max_model_len:
            raise ValueError(f"evol.max_tokens ({self.evol.max_tokens}) must be smaller than teacher.max_model_len "
                             f"({self.teacher.max_model_len})")
        return self
