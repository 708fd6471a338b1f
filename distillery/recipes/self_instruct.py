"""Self-Instruct (Wang et al., 2023), as Alpaca used it: the prompts, the parsers and the
filters. Pure logic.

Each request shows the teacher 8 tasks from the pool (6 human, 2 machine-written
once there are some) and asks it to continue the list; the new tasks it writes are
parsed, filtered (length, keyword blacklist, punctuation, novelty against the whole
pool by ROUGE-L with a MinHash prefilter) and added to the pool.

Then every new task gets an instance, input first (the paper's method for tasks that
are not classification): the teacher is shown seed tasks with their inputs (and some
that need none, written `<noinput>`) and writes the new task's input; the answer (the
output) comes from the common generation stage, on the instruction and that input.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
from datasketch import MinHashLSH
from datasketch.lean_minhash import LeanMinHash

from pydantic import Field

from distillery.minhash import permutations, signatures
from distillery.recipe import Recipe, _WordBounds
from distillery.recipes.rounds import Verdict

# The paper's filter list (its code filters instructions that mention these: a text model cannot do them).
BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
             "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
HEADER = "Come up with a series of tasks:\n\n"
INPUT_HEADER = ("Come up with an input for each task: the text, data or question the task is applied to. "
                "If a task needs no input, write <noinput>.\n\n")
NO_INPUT = "<noinput>"
# The input ends where the teacher goes on to another field or another task.
INPUT_STOP = ("\nTask:", "\nTask ", "\nOutput:", "\nInput:")
_NO_INPUT_ANSWERS = {"noinput", "no input", "none", "n/a", "na", "nothing", "empty", "no input needed", "no input required"}


def request(tasks: Sequence[str]) -> tuple[list[dict], int]:
    """The chat for one request: the numbered tasks as the user turn, and the assistant
    turn opened at the next number (continued by the teacher). Returns (messages, next number)."""
    body = HEADER + "\n".join(f"Task {i}: {t}" for i, t in enumerate(tasks, start=1))
    nxt = len(tasks) + 1
    return [{"role": "user", "content": body + f"\nTask {nxt}:"}, {"role": "assistant", "content": f"Task {nxt}:"}], nxt


def pick_context(human: Sequence[str], machine: Sequence[str], rng: random.Random, n_human: int = 6, n_machine: int = 2) -> list[str]:
    """6 human and 2 machine tasks (fewer machine ones while the pool has none), shuffled."""
    take_m = min(n_machine, len(machine))
    chosen = rng.sample(list(human), min(len(human), n_human + n_machine - take_m)) + rng.sample(list(machine), take_m)
    rng.shuffle(chosen)
    return chosen


def parse(continuation: str) -> list[str]:
    """New instructions from a continuation of 'Task N:': its first part, then each
    'Task M:' that follows. A part ends at a blank line or an Input:/Output: field."""
    out = []
    for part in re.split(r"\n\s*Task\s*\d+\s*[:.]", "\n" + continuation):
        part = re.split(r"\n\s*\n|\n\s*(?:Input|Output)\s*:", part.strip())[0]
        part = re.sub(r"\s+", " ", part).strip()
        if part:
            out.append(part)
    return out


def tokens(text: str) -> list[str]:
    """rouge_score's default tokenization: lowercase, alphanumeric runs."""
    return re.findall(r"[a-z0-9]+", text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F-measure of two token lists (longest common subsequence)."""
    lcs = lcs_length(a, b) if a and b else 0
    if lcs == 0:
        return 0.0
    p, r = lcs / len(b), lcs / len(a)
    return 2 * p * r / (p + r)


def basic_filter(instruction: str, min_words: int, max_words: int) -> Verdict:
    words = instruction.split()
    if len(words) < min_words or len(words) > max_words:
        return Verdict(False, "length", f"{len(words)} words; bounds are {min_words}-{max_words}")
    low = instruction.lower()
    hit = next((w for w in BLACKLIST if re.search(rf"\b{re.escape(w)}\b", low)), None)
    if hit:
        return Verdict(False, "blacklisted", f"mentions {hit!r}, which a text model cannot act on")
    if not instruction[0].isalnum():
        return Verdict(False, "starts_with_punctuation", instruction[:20])
    if not instruction[0].isascii():
        return Verdict(False, "non_english_start", instruction[:20])
    return Verdict(True)


@dataclass
class NoveltyIndex:
    """The pool's instructions, for 'is this new?': MinHash-LSH on word unigrams finds the
    candidates (ROUGE-L >= 0.7 implies unigram Jaccard >= ~0.54, well above the LSH
    threshold of 0.4), exact ROUGE-L decides."""

    threshold: float = 0.7
    num_perm: int = 128
    texts: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.a, self.b = permutations(self.num_perm)
        self.lsh = MinHashLSH(threshold=0.4, num_perm=self.num_perm)
        self._tokens: list[list[str]] = []

    def _sig(self, text: str) -> np.ndarray:
        return signatures([" ".join(tokens(text)) or "-"], 1, self.a, self.b)[0].astype(np.uint64)

    def add(self, text: str, ident: str) -> None:
        n = len(self.texts)
        self.texts.append(text)
        self.ids.append(ident)
        self._tokens.append(tokens(text))
        self.lsh.insert(n, LeanMinHash(seed=1, hashvalues=self._sig(text)))

    def nearest(self, text: str) -> tuple[float, str | None]:
        """The highest ROUGE-L against any candidate the prefilter finds, and its id."""
        toks = tokens(text)
        best, who = 0.0, None
        for n in self.lsh.query(LeanMinHash(seed=1, hashvalues=self._sig(text))):
            score = rouge_l(toks, self._tokens[n])
            if score > best:
                best, who = score, self.ids[n]
        return best, who

    def check(self, text: str) -> Verdict:
        score, who = self.nearest(text)
        if score >= self.threshold:
            return Verdict(False, "not_novel", f"ROUGE-L {score:.2f} with {who} (limit {self.threshold})")
        return Verdict(True)


def pick_examples(pool: Sequence[dict], rng: random.Random, n: int) -> list[dict]:
    """n pool tasks to show as input examples: half with an input and half without, as far
    as the pool has them (a pool with no inputs teaches only <noinput>), shuffled."""
    with_input = [t for t in pool if (t.get("input") or "").strip()]
    without = [t for t in pool if not (t.get("input") or "").strip()]
    k = min(len(with_input), max(n - len(without), (n + 1) // 2))
    chosen = rng.sample(with_input, k) + rng.sample(without, min(len(without), n - k))
    rng.shuffle(chosen)
    return chosen


def input_request(examples: Sequence[dict], instruction: str) -> list[dict]:
    """The chat asking for one task's input: the examples as 'Task:/Input:' pairs, then the
    new task, with the assistant turn opened at 'Input:' (continued by the teacher)."""
    shown = "\n\n".join(f"Task: {t['instruction']}\nInput: {(t.get('input') or '').strip() or NO_INPUT}" for t in examples)
    return [{"role": "user", "content": f"{INPUT_HEADER}{shown}\n\nTask: {instruction}\nInput:"},
            {"role": "assistant", "content": "Input:"}]


def parse_input(continuation: str) -> str:
    """The input in a continuation of 'Input:', '' when the teacher says the task needs none
    (<noinput>, 'none', 'N/A', or nothing). It ends at a 'Task:', 'Output:' or 'Input:' line."""
    text = re.split(r"\n\s*(?:Task(?:\s*\d+)?|Output|Input)\s*:", "\n" + continuation)[0].strip()
    bare = re.sub(r"[<>\[\]().\s_-]+", " ", text.lower()).strip()
    if not bare or bare in _NO_INPUT_ANSWERS or text.lower().startswith(NO_INPUT):
        return ""
    return text


def check_input(instruction: str, text: str, finish_reason: str | None, copy_threshold: float) -> Verdict:
    """The checks on a written input: cut off by max_tokens, or a copy of the task itself."""
    if finish_reason == "length":
        return Verdict(False, "input_truncated", "the teacher hit self_instruct.input_max_tokens before the input ended")
    if text:
        score = rouge_l(tokens(text), tokens(instruction))
        if score >= copy_threshold:
            return Verdict(False, "input_copies_task", f"ROUGE-L {score:.2f} with its own instruction (limit {copy_threshold})")
    return Verdict(True)


# ---------------------------------------------------------------------------------------
# The recipe model


class SelfInstructConfig(_WordBounds):
    section: ClassVar[str] = "self_instruct"

    target: int = Field(20, ge=1, le=1_000_000, description="New instructions to keep; rounds run until there are this many "
                        "(the last round's surplus is rejected as 'over_target'; the input step may reject a few more).")
    max_rounds: int = Field(10, ge=1, le=10_000, description="Stop after this many rounds even below the target.")
    requests_per_round: int = Field(8, ge=1, le=4096, description="Prompts per round (one engine batch); each shows 8 pool tasks.")
    human_in_context: int = Field(6, ge=1, le=16, description="Human seed tasks shown per prompt (the paper: 6).")
    machine_in_context: int = Field(2, ge=0, le=16, description="Machine-written tasks shown per prompt once the pool has some (the paper: 2).")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="Sampling temperature when proposing instructions.")
    max_tokens: int = Field(192, ge=8, le=4096, description="Tokens the teacher may write per proposal prompt.")
    min_words: int = Field(3, ge=1, le=1000, description="Shorter instructions are rejected ('length').")
    max_words: int = Field(150, ge=1, le=10_000, description="Longer instructions are rejected ('length').")
    rouge_threshold: float = Field(0.7, gt=0.0, le=1.0, description="Reject an instruction whose ROUGE-L with any pool instruction reaches this ('not_novel').")
    candidates_uri: str | None = Field(
        None,
        description="Optional file of candidate instructions from elsewhere (an earlier run, another "
        "generator), in any source format with an 'instruction' column: they go through the same "
        "filters first, as round 0.",
    )
    generate_inputs: bool = Field(
        True,
        description="Have the teacher write an input for every new instruction before it is answered (Self-Instruct's "
        "input-first instance generation), or <noinput> when the task needs none. Off: instructions are answered as they are.",
    )
    input_examples: int = Field(6, ge=1, le=32, description="Pool tasks shown, with their inputs, when asking for an input "
                                "(about half with an input, half without).")
    input_temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature when writing inputs (0: greedy).")
    input_max_tokens: int = Field(128, ge=4, le=4096, description="Tokens the teacher may write per input; an input cut "
                                  "off there is rejected ('input_truncated').")
    seed: int = Field(0, description="Seeds the choice of in-context tasks and the sampling.")


class SelfInstructRecipe(Recipe):
    """A Self-Instruct build: the common recipe plus how instructions are bootstrapped."""

    flow: Literal["self_instruct"] = Field("self_instruct", description="This recipe's flow.")
    self_instruct: SelfInstructConfig = Field(default_factory=SelfInstructConfig, description="Instruction bootstrapping (Self-Instruct).")
