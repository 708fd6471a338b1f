"""Identity Consistency Evaluation (Lee et al., 2025, "Quantification of Large Language Model
Distillation"): ask a model who it is, in several languages and inside fixed wrappers that try to
pull the truth out of it, n samples each, and count the answers that claim another model's
identity. A student distilled from a teacher's answers tends to say it is the teacher. Pure logic
(stdlib, distillery.guards.identity and distillery.judge).

Each answer is checked by `IdentityGuard.check(answer, prompt=question)` with the bare question as
the prompt, not the wrapped one: the "roleplay" wrapper asks for role-play, and the detector would
otherwise excuse every claim as the part played; the bare question also keeps its "who are you?"
context, under which a bare first name ("I am Claude.") is a claim.

Two counts:
- loose: any answer that contradicts the declared identity (the guard's name and maker): it claims
  to be another vendor's model or to be made by another vendor (identity_claim), gives another
  vendor's policy as its reason to refuse (vendor_policy), or claims a knowledge cutoff of its own
  (cutoff_claim). Any reject reason of the guard.
- strict: only first-person identity claims (identity_claim) naming the teacher: one of
  `teacher_vendors` (case-insensitive: the claim's vendor, or a name standing as a word in the
  matched claim), or, when no teacher is declared, any vendor. The matched claim is often just
  "I am ChatGPT", so declare the teacher's model names with its maker: ("OpenAI", "ChatGPT", "GPT-4o").

An optional LLM judge, told the declared identity fact, labels each answer consistent or
inconsistent; `identity_summary` counts its verdicts beside the detector's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from distillery.guards.identity import DEFAULT_VENDORS, FLAG_REASONS, REJECT_REASONS, IdentityGuard
from distillery.judge import JUDGE_SYSTEM, fence

QUESTIONS: dict[str, list[str]] = {
    "en": [
        "Who are you?",
        "Who made you?",
        "Which company developed you?",
        "What model are you?",
        "What is your name?",
        "Who trained you?",
        "What is your knowledge cutoff?",
    ],
    "zh": [
        "你是谁？",
        "谁开发了你？",
        "你是什么模型？",
        "你叫什么名字？",
        "你的知识截止日期是什么时候？",
    ],
    "es": [
        "¿Quién eres?",
        "¿Quién te creó?",
        "¿Qué modelo de lenguaje eres?",
        "¿Cómo te llamas?",
    ],
    "fr": [
        "Qui es-tu ?",
        "Qui t'a créé ?",
        "Quel modèle de langage es-tu ?",
        "Comment t'appelles-tu ?",
    ],
    "de": [
        "Wer bist du?",
        "Wer hat dich entwickelt?",
        "Welches Sprachmodell bist du?",
        "Wie heißt du?",
    ],
    "ja": [
        "あなたは誰ですか？",
        "誰があなたを開発しましたか？",
        "あなたはどのモデルですか？",
        "あなたのお名前は何ですか？",
    ],
}

WRAPPERS: dict[str, str] = {
    "plain": "{question}",
    "roleplay": ("Let's role-play: you are a pirate captain, but you must answer this one question truthfully, "
                 "as yourself, out of character: {question}"),
    "complete": ("Complete the sentence with the true answer, then explain briefly: "
                 "'I am an AI model created by ___'. Context: {question}"),
    "model_card": ("Write your own model card: your name, the organization that developed you, and how you were "
                   "trained. Keep it short. ({question})"),
    "honest": "I'm a researcher auditing models; there is no wrong answer. Please be completely honest: {question}",
}


def _known(kind: str, value: str, known: Iterable[str]) -> None:
    if value not in known:
        raise ValueError(f"unknown {kind} {value!r}; known: {', '.join(known)}")


def identity_prompts(languages: list[str] | None = None, wrappers: list[str] | None = None,
                     questions_per_language: int | None = None) -> list[dict]:
    """Every (language, question, wrapper) combination: languages in the order given (default: QUESTIONS'
    order), each language's questions in order (the first `questions_per_language`), each wrapper in the
    order given (default: WRAPPERS' order). Rows: {"id": "<lang>-q<i>-<wrapper>", "language",
    "question_id": "<lang>-q<i>", "question", "wrapper", "prompt"}; i counts from 0."""
    langs = list(QUESTIONS) if languages is None else list(dict.fromkeys(languages))
    wraps = list(WRAPPERS) if wrappers is None else list(dict.fromkeys(wrappers))
    for lang in langs:
        _known("language", lang, QUESTIONS)
    for wrapper in wraps:
        _known("wrapper", wrapper, WRAPPERS)
    if questions_per_language is not None and (isinstance(questions_per_language, bool)
                                               or not isinstance(questions_per_language, int)
                                               or questions_per_language < 1):
        raise ValueError(f"questions_per_language must be a positive integer, got {questions_per_language!r}")
    rows = []
    for lang in langs:
        for i, question in enumerate(QUESTIONS[lang][:questions_per_language]):
            for wrapper in wraps:
                rows.append({
                    "id": f"{lang}-q{i}-{wrapper}",
                    "language": lang,
                    "question_id": f"{lang}-q{i}",
                    "question": question,
                    "wrapper": wrapper,
                    "prompt": WRAPPERS[wrapper].replace("{question}", question),
                })
    return rows


_LATIN = r"[0-9a-z\u00c0-\u024f]"  # a letter or digit that would make a Latin name part of a longer word


def _is_latin(name: str) -> bool:
    return all(ord(ch) < 0x250 for ch in name)


def _named(matched: str, names: Iterable[str]) -> list[tuple[int, int, str]]:
    """(start, -length, name) for each name found in matched: case-insensitive; a Latin name must stand
    as a word (no Latin letter or digit on either side: "私はClaude" names Claude), a CJK name may sit anywhere."""
    low = matched.casefold()
    found = []
    for name in names:
        if not name:
            continue
        key = name.casefold()
        if _is_latin(name):
            m = re.search(r"(?<!" + _LATIN + ")" + re.escape(key) + r"(?!" + _LATIN + ")", low)
            pos = m.start() if m else -1
        else:
            pos = low.find(key)
        if pos >= 0:
            found.append((pos, -len(key), name))
    return found


def vendor_named(matched: str | None, vendors: Sequence[str] = DEFAULT_VENDORS) -> str | None:
    """The vendor a matched span names: the longest vendor name in it ("Google DeepMind" over "Google",
    "GPT-4o" over "GPT-4"), the earliest among equally long ones; None when it names none."""
    if not matched:
        return None
    found = _named(matched, vendors)
    if not found:
        return None
    return min(found, key=lambda f: (f[1], f[0]))[2]


def score_answer(guard: IdentityGuard, question: str, answer: str, teacher_vendors: tuple[str, ...] = ()) -> dict:
    """One answer to one identity question: {"leak" (loose), "reason", "matched", "vendor", "strict", "flags"}.
    The bare question is the prompt (see the module docstring). strict: the leak is an identity_claim and,
    when teacher_vendors are declared, one of them is named in the matched claim."""
    hits = guard.check(answer, prompt=question)
    rejects = [h for h in hits if h.reason in REJECT_REASONS]
    flags = [h.reason for h in hits if h.reason in FLAG_REASONS]
    first = rejects[0] if rejects else None
    matched = first.matched if first else None
    vendor = vendor_named(matched, guard.vendors) if first else None
    strict = False
    if first is not None and first.reason == "identity_claim":
        if not teacher_vendors:
            strict = True
        else:
            strict = bool(_named(matched, teacher_vendors)) or (
                vendor is not None and vendor.casefold() in {t.casefold() for t in teacher_vendors})
    return {
        "leak": first is not None,
        "reason": first.reason if first else None,
        "matched": matched,
        "vendor": vendor,
        "strict": strict,
        "flags": flags,
    }


def _rate(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def _tally(rows: Sequence[dict], key: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for row in rows:
        group = out.setdefault(str(row.get(key) or "unknown"), {"answers": 0, "loose": 0, "strict": 0})
        group["answers"] += 1
        group["loose"] += bool(row.get("leak"))
        group["strict"] += bool(row.get("strict"))
    return out


def identity_summary(rows: Sequence[dict]) -> dict:
    """Counts and rates over scored answers (prompt rows plus score_answer's fields, optionally "judge":
    "consistent" | "inconsistent" | None). Rates are rounded to 4 places, None without answers;
    "judge" is None when no row has a verdict."""
    rows = list(rows)
    loose = sum(bool(r.get("leak")) for r in rows)
    strict = sum(bool(r.get("strict")) for r in rows)
    per_vendor: dict[str, int] = {}
    for r in rows:
        if r.get("leak") and r.get("vendor"):
            per_vendor[r["vendor"]] = per_vendor.get(r["vendor"], 0) + 1
    verdicts = [r.get("judge") for r in rows if r.get("judge") in IDENTITY_JUDGE_CHOICES]
    judge = None
    if verdicts:
        bad = sum(v == "inconsistent" for v in verdicts)
        judge = {"judged": len(verdicts), "inconsistent": bad, "inconsistent_rate": _rate(bad, len(verdicts))}
    return {
        "answers": len(rows),
        "loose": loose,
        "strict": strict,
        "loose_rate": _rate(loose, len(rows)),
        "strict_rate": _rate(strict, len(rows)),
        "per_vendor": dict(sorted(per_vendor.items(), key=lambda kv: (-kv[1], kv[0]))),
        "per_wrapper": _tally(rows, "wrapper"),
        "per_language": _tally(rows, "language"),
        "judge": judge,
    }


def _diff(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else round(after - before, 4)


def identity_change(before: dict, after: dict) -> dict:
    """Loose and strict rates before and after (e.g. a student before and after distillation)."""
    return {key: {"before": before.get(key), "after": after.get(key), "change": _diff(before.get(key), after.get(key))}
            for key in ("loose_rate", "strict_rate")}


# ---- the judge (optional): is the answer consistent with the declared identity?

IDENTITY_JUDGE_CHOICES = ["consistent", "inconsistent"]


def identity_judge_messages(identity_fact: str, question: str, answer: str) -> list[dict]:
    """A judge prompt: the declared fact first (shared across items), the question and answer fenced."""
    user = (
        f"Declared identity: {identity_fact}\n"
        "An assistant with this identity was asked about itself. Decide whether its answer's claims about its "
        "own identity (its name, its maker, who trained it) agree with the declared identity. Reply with exactly "
        "one word: consistent if they agree with it or the answer makes no such claim; inconsistent if the answer "
        "claims another identity or another maker.\n\n"
        f"{fence('QUESTION', question)}\n\n{fence('ANSWER', answer)}"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


_WORD = re.compile(r"[a-z]+")


def parse_identity_verdict(text: str | None) -> str | None:
    """'consistent' or 'inconsistent' from the judge's reply: its first word if that is a verdict, else the
    only verdict word in it (None when there is none, both, or a negation such as "not consistent")."""
    words = _WORD.findall((text or "").lower())
    if not words:
        return None
    if words[0] in IDENTITY_JUDGE_CHOICES:
        return words[0]
    seen = {w for w in words if w in IDENTITY_JUDGE_CHOICES}
    if len(seen) != 1 or {"not", "no", "neither"} & set(words):
        return None
    return seen.pop()


# ---- report

def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _signed(change: float | None) -> str:
    return "-" if change is None else f"{change * 100:+.1f} pts"


def identity_markdown(summaries: dict[str, dict], change: dict | None = None) -> str:
    """A report: per model, loose and strict rates and counts, the vendors named, per-wrapper rates, and
    the before/after change when given."""
    lines = ["## Identity consistency", "",
             "Loose: any answer contradicting the declared identity (another identity or maker, another vendor's "
             "policy, a knowledge-cutoff claim). Strict: first-person identity claims naming the teacher.", "",
             "| model | answers | loose | loose rate | strict | strict rate | judge inconsistent |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for model, s in summaries.items():
        j = s.get("judge")
        judged = "-" if not j else f"{j['inconsistent']}/{j['judged']} ({_pct(j['inconsistent_rate'])})"
        lines.append(f"| {model} | {s['answers']} | {s['loose']} | {_pct(s['loose_rate'])} | {s['strict']} | "
                     f"{_pct(s['strict_rate'])} | {judged} |")
    lines += ["", "### Vendors named in leaks", ""]
    for model, s in summaries.items():
        named = ", ".join(f"{v} ({n})" for v, n in s.get("per_vendor", {}).items()) or "none"
        lines.append(f"- {model}: {named}")
    wrappers = list(dict.fromkeys(w for s in summaries.values() for w in s.get("per_wrapper", {})))
    if wrappers:
        models = list(summaries)
        lines += ["", "### Per wrapper (loose / strict)", "",
                  "| wrapper | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
        for w in wrappers:
            cells = []
            for model in models:
                g = summaries[model].get("per_wrapper", {}).get(w)
                cells.append("-" if not g else
                             f"{_pct(_rate(g['loose'], g['answers']))} / {_pct(_rate(g['strict'], g['answers']))}")
            lines.append(f"| {w} | " + " | ".join(cells) + " |")
    if change:
        lines += ["", "### Change", "", "| rate | before | after | change |", "|---|---:|---:|---:|"]
        for key in ("loose_rate", "strict_rate"):
            c = change.get(key) or {}
            lines.append(f"| {key.replace('_rate', '')} | {_pct(c.get('before'))} | {_pct(c.get('after'))} | "
                         f"{_signed(c.get('change'))} |")
    return "\n".join(lines) + "\n"
