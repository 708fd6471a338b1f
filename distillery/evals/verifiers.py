"""Verifiers for RL with verifiable rewards (RLVR). Pure logic: stdlib only.

A verifiable row is what AllenAI's open-instruct reads for RLVR: `messages` (the
prompt as chat turns), `ground_truth` (a string) and `dataset` (the verifier's name).
`verify(verifier, answer, ground_truth)` says whether an answer earns the reward:

- ``gsm8k``: the LAST number in the answer equals the ground truth numerically
  (Cobbe et al. 2021, GSM8K: the reference answer follows the last ``####``; graders
  take the last number of the completion). Commas as thousands separators, ``$``,
  a leading minus and decimals are read; a sentence's final period is not a decimal
  point; ``18.00`` equals ``18`` (tolerance 1e-6).
- ``math``: the final answer (the last ``\\boxed{}``/``\\fbox{}``, else the text after
  the last "answer is"/"final answer:", else the last ``$...$``, else the whole answer)
  is normalized as Hendrycks et al. 2021's MATH ``strip_string`` together with
  Minerva's ``normalize_final_answer`` (Lewkowycz et al. 2022), then compared as
  strings; when both sides are plain numbers or fractions they are compared as
  numbers (exact fractions; 1e-6 when a decimal is involved).
- ``exact``: case-folded, whitespace-collapsed string equality, trailing period
  ignored; the answer's last non-empty line may match instead of the whole answer.
- ``ifeval``: every instruction of a Google IFEval ground truth passes (Zhou et al.
  2023, "Instruction-Following Evaluation for Large Language Models", checks as in
  google-research/instruction_following_eval/instructions.py). The ground truth is
  IFEval's own form: ``{"instruction_id": [...], "kwargs": [{...}, ...]}``. Supported:
  length_constraints:number_words, length_constraints:number_paragraphs,
  keywords:existence, keywords:forbidden_words, change_case:english_lowercase,
  detectable_format:json_format, startend:end_checker. Where this differs from IFEval:
  words are ``re.findall(r"\\w+")`` (what IFEval's nltk ``RegexpTokenizer(r"\\w+")``
  returns, without nltk); keywords are matched literally (IFEval passes them to
  ``re.search`` unescaped); english_lowercase checks ``str.islower()`` but not
  IFEval's langdetect "is English"; kwargs set to None are dropped, as IFEval's
  evaluation does.

A malformed ground truth (or an unknown verifier) is never a warning: a builder calls
`check_ground_truth` first and rejects the row with the (reason, detail) it returns;
`verify` and `normalize_ground_truth` raise `GroundTruthError` on it.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction

VERIFIERS = ("gsm8k", "math", "exact", "ifeval")

UNKNOWN_VERIFIER = "unknown_verifier"
BAD_GROUND_TRUTH = "bad_ground_truth"

_TOLERANCE = Fraction(1, 10**6)
_GSM8K_FORM = "a number such as '42' or '#### 42'"
_IFEVAL_FORM = '{"instruction_id": [...], "kwargs": [{...}, ...]}'


class GroundTruthError(ValueError):
    """A ground truth the verifier cannot use, or an unknown verifier. `reason` is
    "unknown_verifier" or "bad_ground_truth"; `detail` says what is wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _bad(detail: str) -> GroundTruthError:
    return GroundTruthError(BAD_GROUND_TRUTH, detail)


# ---------------------------------------------------------------- ground truth parsing


def _parse(verifier, ground_truth):
    """The ground truth in the verifier's working form; raises GroundTruthError."""
    if verifier not in VERIFIERS:
        known = ", ".join(VERIFIERS)
        raise GroundTruthError(UNKNOWN_VERIFIER, f"unknown verifier {verifier!r}; known verifiers: {known}")
    if verifier == "ifeval":
        return _parse_ifeval(ground_truth)
    if not isinstance(ground_truth, str):
        raise _bad(f"{verifier} ground truth must be a string, got {type(ground_truth).__name__} {ground_truth!r}")
    if verifier == "gsm8k":
        return _parse_gsm8k(ground_truth)
    if not ground_truth.strip():
        raise _bad(f"{verifier} ground truth must be a non-empty string, got {ground_truth!r}")
    return ground_truth.strip()


def _parse_gsm8k(ground_truth: str) -> str:
    """The bare number: after the last '####' when there is one, commas removed."""
    tail = ground_truth.rsplit("####", 1)[-1].strip()
    bare = tail.replace(",", "")
    if not re.fullmatch(r"-?\d+(?:\.\d+)?", bare):
        raise _bad(f"gsm8k ground truth must be {_GSM8K_FORM}, got {ground_truth!r}")
    return bare


def check_ground_truth(verifier: str, ground_truth) -> tuple[str, str] | None:
    """None when `ground_truth` is usable by `verifier`; else (reason, detail)."""
    try:
        _parse(verifier, ground_truth)
    except GroundTruthError as error:
        return error.reason, error.detail
    return None


def normalize_ground_truth(verifier: str, ground_truth) -> str:
    """The canonical string for the row's `ground_truth` column: gsm8k the bare number,
    ifeval compact JSON with sorted keys, others the stripped string."""
    parsed = _parse(verifier, ground_truth)
    if verifier == "ifeval":
        return json.dumps(parsed, sort_keys=True, separators=(",", ":"))
    return parsed


# ---------------------------------------------------------------- ifeval ground truth


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_words(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(w, str) and w.strip() for w in value)


def _is_phrase(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


# instruction id -> {kwarg: (valid?, the form expected)}; all listed kwargs are required.
_IFEVAL_KWARGS = {
    "length_constraints:number_words": {
        "relation": (lambda v: v in ("less than", "at least"), "'less than' or 'at least'"),
        "num_words": (_is_count, "a positive integer"),
    },
    "length_constraints:number_paragraphs": {"num_paragraphs": (_is_count, "a positive integer")},
    "keywords:existence": {"keywords": (_is_words, "a non-empty list of words")},
    "keywords:forbidden_words": {"forbidden_words": (_is_words, "a non-empty list of words")},
    "change_case:english_lowercase": {},
    "detectable_format:json_format": {},
    "startend:end_checker": {"end_phrase": (_is_phrase, "a non-empty string")},
}


def _load_ifeval(ground_truth) -> dict:
    if isinstance(ground_truth, dict):
        return ground_truth
    if not isinstance(ground_truth, str):
        raise _bad(f"ifeval ground truth must be a JSON string {_IFEVAL_FORM}, got {type(ground_truth).__name__}")
    try:
        loaded = json.loads(ground_truth)
    except ValueError as error:
        raise _bad(f"ifeval ground truth is not valid JSON ({error}); expected {_IFEVAL_FORM}") from None
    if not isinstance(loaded, dict):
        raise _bad(f"ifeval ground truth must be a JSON object {_IFEVAL_FORM}, got {ground_truth!r}")
    return loaded


def _parse_ifeval(ground_truth) -> dict:
    """IFEval's {"instruction_id": [...], "kwargs": [...]}, None-valued kwargs dropped."""
    loaded = _load_ifeval(ground_truth)
    ids, kwargs = loaded.get("instruction_id"), loaded.get("kwargs")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise _bad(f"ifeval 'instruction_id' must be a non-empty list of ids; expected {_IFEVAL_FORM}")
    if not isinstance(kwargs, list) or not all(isinstance(k, dict) for k in kwargs):
        raise _bad(f"ifeval 'kwargs' must be a list of objects, one per instruction; expected {_IFEVAL_FORM}")
    if len(ids) != len(kwargs):
        raise _bad(f"ifeval has {len(ids)} instruction ids but {len(kwargs)} kwargs; the lists must be the same length")
    cleaned = [_check_instruction(i, k) for i, k in zip(ids, kwargs)]
    return {"instruction_id": list(ids), "kwargs": cleaned}


def _check_instruction(instruction_id: str, kwargs: dict) -> dict:
    if instruction_id not in _IFEVAL_KWARGS:
        supported = ", ".join(_IFEVAL_KWARGS)
        raise _bad(f"unknown IFEval instruction id {instruction_id!r}; supported: {supported}")
    spec = _IFEVAL_KWARGS[instruction_id]
    given = {k: v for k, v in kwargs.items() if v is not None}
    for name, (valid, form) in spec.items():
        if name not in given:
            raise _bad(f"IFEval instruction {instruction_id!r} needs kwarg {name!r} ({form})")
        if not valid(given[name]):
            raise _bad(f"IFEval instruction {instruction_id!r} kwarg {name!r} must be {form}, got {given[name]!r}")
    extra = sorted(set(given) - set(spec))
    if extra:
        raise _bad(f"IFEval instruction {instruction_id!r} takes no kwarg {extra[0]!r}; it takes {sorted(spec) or 'none'}")
    return given


def ifeval_instructions(ground_truth) -> list[str]:
    """The IFEval instruction ids of a ground truth, for reporting."""
    return list(_parse_ifeval(ground_truth)["instruction_id"])


# ---------------------------------------------------------------- ifeval checks


def _count_words(text: str) -> int:
    # IFEval counts nltk RegexpTokenizer(r"\w+") tokens: the same as re.findall.
    return len(re.findall(r"\w+", text))


def _number_words(response: str, relation: str, num_words: int) -> bool:
    count = _count_words(response)
    return count < num_words if relation == "less than" else count >= num_words


def _number_paragraphs(response: str, num_paragraphs: int) -> bool:
    chunks = re.split(r"\s?\*\*\*\s?", response)
    count = len(chunks)
    for index, chunk in enumerate(chunks):
        if not chunk.strip():
            if index in (0, len(chunks) - 1):
                count -= 1
            else:
                return False
    return count == num_paragraphs


def _existence(response: str, keywords: list) -> bool:
    return all(re.search(re.escape(word), response, flags=re.IGNORECASE) for word in keywords)


def _forbidden_words(response: str, forbidden_words: list) -> bool:
    return not any(re.search(r"\b" + re.escape(w) + r"\b", response, flags=re.IGNORECASE) for w in forbidden_words)


def _english_lowercase(response: str) -> bool:
    return response.islower()


def _json_format(response: str) -> bool:
    value = response.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        value = value.removeprefix(fence)
    value = value.removesuffix("```").strip()
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def _end_checker(response: str, end_phrase: str) -> bool:
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


_IFEVAL_CHECKS = {
    "length_constraints:number_words": _number_words,
    "length_constraints:number_paragraphs": _number_paragraphs,
    "keywords:existence": _existence,
    "keywords:forbidden_words": _forbidden_words,
    "change_case:english_lowercase": _english_lowercase,
    "detectable_format:json_format": _json_format,
    "startend:end_checker": _end_checker,
}


def _verify_ifeval(answer: str, truth: dict) -> bool:
    pairs = zip(truth["instruction_id"], truth["kwargs"])
    return all(_IFEVAL_CHECKS[i](answer, **kwargs) for i, kwargs in pairs)


def _quoted(words: list) -> str:
    quoted = [f"'{w}'" for w in words]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _describe(instruction_id: str, kwargs: dict) -> str:
    if instruction_id == "length_constraints:number_words":
        bound = "at least" if kwargs["relation"] == "at least" else "fewer than"
        return f"Answer in {bound} {kwargs['num_words']} words."
    if instruction_id == "length_constraints:number_paragraphs":
        n = kwargs["num_paragraphs"]
        return f"Write exactly {n} paragraph{'s' if n != 1 else ''}, separated by the markdown divider ***."
    if instruction_id == "keywords:existence":
        words = kwargs["keywords"]
        return f"Use the word{'s' if len(words) > 1 else ''} {_quoted(words)}."
    if instruction_id == "keywords:forbidden_words":
        words = kwargs["forbidden_words"]
        listed = _quoted(words).replace("' and '", "' or '")
        return f"Do not use the word{'s' if len(words) > 1 else ''} {listed}."
    if instruction_id == "change_case:english_lowercase":
        return "Write your entire answer in English using lowercase letters only; no capital letters."
    if instruction_id == "detectable_format:json_format":
        return "Wrap your entire answer in JSON format; you may use markdown ticks such as ```."
    return f'End your answer with the exact phrase "{kwargs["end_phrase"]}"; no other words should follow it.'


def describe_constraints(ground_truth) -> str:
    """A short human sentence per IFEval instruction, joined: what to append to a prompt
    so that a model can meet the ground truth, e.g. "Answer in at least 50 words. Use
    the words 'river' and 'bank'." Raises GroundTruthError on a malformed ground truth."""
    truth = _parse_ifeval(ground_truth)
    return " ".join(_describe(i, k) for i, k in zip(truth["instruction_id"], truth["kwargs"]))


# ---------------------------------------------------------------- gsm8k

_NUMBER = re.compile(r"(?P<sign>(?<![\w.])-)?\$?(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<frac>\.\d+)?")


def _last_number(text: str) -> Fraction | None:
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    digits = last["int"].replace(",", "") + (last["frac"] or "")
    return -Fraction(digits) if last["sign"] else Fraction(digits)


def _verify_gsm8k(answer: str, truth: str) -> bool:
    number = _last_number(answer)
    return number is not None and abs(number - Fraction(truth)) <= _TOLERANCE


# ---------------------------------------------------------------- math


def _last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} or \\fbox{...} (balanced braces)."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:].removeprefix("\\boxed").removeprefix("\\fbox")
    if rest.startswith(" "):  # "\boxed 5", as Hendrycks' last_boxed_only_string reads it
        return rest.strip().split("$")[0].strip() or None
    if not rest.startswith("{"):
        return None
    depth = 0
    for index, char in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[1:index]
    return None


_ANSWER_IS = re.compile(r"(?:final answer\s*(?:is)?\s*:?|answer is\s*:?)", re.IGNORECASE)


def _after_answer_is(text: str) -> str | None:
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    line = text[matches[-1].end():].split("\n")[0]
    sentence = re.split(r"\.(?:\s|$)", line)[0].strip().strip("$").strip()
    return sentence or None


def _last_inline_math(text: str) -> str | None:
    found = re.findall(r"\$([^$]+)\$", text)
    return found[-1] if found else None


def extract_math_answer(text: str) -> str:
    """The final answer of a MATH-style solution (see the module docstring)."""
    for extract in (_last_boxed, _after_answer_is, _last_inline_math):
        found = extract(text)
        if found is not None:
            return found
    return text.strip()


def _fix_fracs(text: str) -> str:
    r"""\frac12 -> \frac{1}{2}, \frac1{2} and \frac{1}2 likewise (Hendrycks' _fix_fracs)."""
    arg = r"(\{[^{}]*\}|[0-9A-Za-z])"
    return re.sub(r"\\frac" + arg + arg, lambda m: "\\frac" + _braced(m[1]) + _braced(m[2]), text)


def _braced(arg: str) -> str:
    return arg if arg.startswith("{") else "{" + arg + "}"


def _drop_variable(text: str) -> str:
    """"x = 5" -> "5" when the left side is a single variable."""
    parts = text.split("=")
    if len(parts) == 2 and re.fullmatch(r"\s*(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?\s*", parts[0]):
        return parts[1]
    return text


_REMOVE = ("\n", "\\!", "\\left", "\\right", "^{\\circ}", "^\\circ", "\\$", "\\%", "\\,", "\\;")


def normalize_math(text: str) -> str:
    """Hendrycks' MATH strip_string with Minerva's \\text{} unwrapping."""
    text = text.strip().replace("\\\\", "\\").replace("tfrac", "frac").replace("dfrac", "frac")
    for token in _REMOVE:
        text = text.replace(token, "")
    text = re.sub(r"(.)\\text\{\s[^{}]*\}\s*$", r"\1", text)  # "10\text{ cm}": a unit
    text = re.sub(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}", r"\1", text)
    text = _drop_variable(text).strip().rstrip(".").strip()
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if text.startswith("."):
        text = "0" + text
    text = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", text).replace(" ", "")
    text = _fix_fracs(text)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")
    return text


def _as_number(text: str) -> tuple[Fraction, bool] | None:
    """(value, written as a decimal) for a plain number or a fraction of integers."""
    if re.fullmatch(r"-?\d+(?:\.\d+)?", text):
        return Fraction(text), "." in text
    frac = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", text) or re.fullmatch(r"(-?)(\d+)/(\d+)", text)
    if frac and int(frac[3]) != 0:
        value = Fraction(int(frac[2]), int(frac[3]))
        return (-value if frac[1] else value), False
    return None


def _verify_math(answer: str, truth: str) -> bool:
    ours = normalize_math(extract_math_answer(answer))
    theirs = normalize_math(_last_boxed(truth) or truth.strip().strip("$"))
    if ours == theirs:
        return True
    a, b = _as_number(ours), _as_number(theirs)
    if a is None or b is None:
        return False
    if a[1] or b[1]:
        return abs(a[0] - b[0]) <= _TOLERANCE
    return a[0] == b[0]


# ---------------------------------------------------------------- exact


def _normalize_exact(text: str) -> str:
    text = " ".join(text.casefold().split())
    return text.removesuffix(".").strip()


def _verify_exact(answer: str, truth: str) -> bool:
    expected = _normalize_exact(truth)
    lines = [line for line in answer.splitlines() if line.strip()]
    return _normalize_exact(answer) == expected or (bool(lines) and _normalize_exact(lines[-1]) == expected)


# ---------------------------------------------------------------- the API

_VERIFY = {"gsm8k": _verify_gsm8k, "math": _verify_math, "exact": _verify_exact, "ifeval": _verify_ifeval}


def verify(verifier: str, answer: str, ground_truth: str) -> bool:
    """Whether `answer` earns the reward. A non-string answer (a failed generation)
    earns nothing; a malformed ground truth raises GroundTruthError."""
    truth = _parse(verifier, ground_truth)
    if not isinstance(answer, str):
        return False
    return _VERIFY[verifier](answer, truth)


def pass_rate(verifier: str, answers: list[str], ground_truth: str) -> float:
    """The share of `answers` that pass; 0.0 for none."""
    if not answers:
        return 0.0
    truth = _parse(verifier, ground_truth)
    passed = sum(isinstance(a, str) and _VERIFY[verifier](a, truth) for a in answers)
    return passed / len(answers)


def in_band(rate: float, low: float, high: float) -> bool:
    """Whether a pass rate lies in [low, high] (both ends included)."""
    return low <= rate <= high


def openinstruct_row(prompt: str, ground_truth: str, verifier: str, system: str | None = None) -> dict:
    """A row as open-instruct's RLVR training reads it."""
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages.append({"role": "user", "content": prompt})
    return {"messages": messages, "ground_truth": ground_truth, "dataset": verifier}
