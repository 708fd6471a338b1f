"""What every shard column means, for the dataset card. Pure logic.

One dict: a key is a column name, or `kind/name` where a name means something else in
one kind of shard (kinds are the schemas' `distillery.kind`: kept, preferences, rejected).
A test checks that every column of every declared schema has a description here.
"""

from __future__ import annotations

DESCRIPTIONS: dict[str, str] = {
    "id": "Row id: a sha256 of the row's content (stable across reruns of the same recipe).",
    "messages": "The conversation in chat format (list of {role, content}): system message if any, the user turn, the teacher's answer.",
    "prompt_text": "The user turn as plain text (not named `prompt`, which TRL would read as a prompt-completion column).",
    "kept/prompt": "The user turn as plain text (the name `prompt_text` has in builds written before it was renamed).",
    "response": "The teacher's answer as plain text.",
    "instruction": "The seed's instruction, as given in the source.",
    "input": "The seed's input (context for the instruction), as given; empty when it has none.",
    "seed_id": "Id of the seed task this row came from.",
    "sample_index": "Which of the n completions of its prompt this is (0-based).",
    "teacher": "Name of the teacher that wrote the answer (teacher.name or an extra_teachers entry).",
    "teacher_model": "The teacher model (local path or Hugging Face id).",
    "sampling": "JSON of the sampling settings the answer was generated with (n, temperature, top_p, max_tokens, seed).",
    "finish_reason": "Why generation stopped: 'stop' (end of answer) or 'length' (hit max_tokens).",
    "prompt_tokens": "Tokens in the prompt as the teacher's chat template rendered it.",
    "completion_tokens": "Tokens in the answer.",
    "judge_model": "The model that judged the answer (empty when the judge was disabled).",
    "judge_method": "How the score was read: structured (JSON), free_text or logprob (expected score).",
    "judge_score": "The judge's score, 1-10 (empty when the judge was disabled or its output did not parse).",
    "judge_score_expected": "With judge.method=logprob: the probability-weighted mean score; else empty.",
    "judge_aspects": "Per-aspect scores 1-10 (helpfulness, honesty, instruction_following) when the recipe asked for aspects.",
    "judge_rationale": "The judge's stated reason for its score.",
    "dedup_cluster": "Id of the near-duplicate cluster the row belongs to (rows removed as its copies are in rejected/).",
    "guard_flags": "What the guard stage noted but kept (ai_boilerplate: 'As an AI language model'; identity leaks when guards.identity.action is flag); empty when nothing.",
    "lineage": "JSON: how a synthesized prompt was made (recipe, round, parent); empty for seed prompts.",
    "run_id": "The Prefect flow run that built the row.",
    "created_at": "When the build started (UTC).",
    # knowledge distillation (kd.top_k > 0)
    "kd_token_ids": "The answer's tokens in the teacher's vocabulary (hard targets), length T.",
    "kd_token_logprobs": "The teacher's logprob of each answer token.",
    "kd_topk_ids": "At each position t, the teacher's top-K token ids, best first: the distribution that predicted kd_token_ids[t].",
    "kd_topk_logprobs": "The logprobs of kd_topk_ids.",
    # preference pairs
    "preferences/prompt": "The conversation before the answer: the system message the answers were generated with (if any) and the user turn.",
    "chosen": "The preferred answer, as a list with one assistant message.",
    "rejected": "The dispreferred answer, as a list with one assistant message.",
    "score_chosen": "Judge score of the chosen answer (expected score with judge.method=logprob).",
    "score_rejected": "Judge score of the rejected answer.",
    "chosen_teacher": "Teacher that wrote the chosen answer.",
    "rejected_teacher": "Teacher that wrote the rejected answer.",
    "chosen_id": "Row id of the chosen answer (as a kept row of the same build would have it).",
    "rejected_id": "Row id of the rejected answer.",
    "pairwise_verdict": "The pairwise check in both orders: 'x' (the judge preferred the chosen answer in both orders) or 'not_checked' (preferences.pairwise_check was off).",
    # rejected rows (rejected/)
    "stage": "The stage that removed the row: load, render, dedup, judge, filter, preferences, ...",
    "reason": "Why it was removed (malformed_json, near_duplicate, low_score, pairwise_tie, ...).",
    "detail": "More about the reason (e.g. the Jaccard similarity, the parse error).",
    "rejected/prompt": "The user prompt as plain text, when the row got that far.",
    "rejected/response": "The answer, when one was generated.",
    "judge_raw": "The judge's raw output, when it did not parse.",
    "duplicate_of": "Id of the row this one duplicates (exact or near), for dedup rejects.",
    "raw": "The source record as read, for rows rejected at load.",
}


def describe(name: str, kind: str = "kept") -> str | None:
    """The description of column `name` in a shard of `kind`; None when there is none."""
    return DESCRIPTIONS.get(f"{kind}/{name}") or DESCRIPTIONS.get(name)
