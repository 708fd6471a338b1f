"""The soft-target stages (distillery/stages/kd.py) on a stand-in engine: the source's answers
as rows (`given`), a teacher's targets (`score-<teacher>`), and the mixture of several
teachers' (`kd-merge`), run through the executor like any stage. The real engine's targets
are checked against transformers in test_kd_e2e.py."""

from __future__ import annotations

import math

import pytest

from distillery.kd import KDError, conversation, merge
from distillery.prompts import render_messages
from distillery.schema import content_id
from distillery.stages.kd import TARGETS_SCHEMA, Given, Merge, Score
from distillery.stages.prompts import PROMPT_SCHEMA
from conftest import read_seeds

K = 3


class ScoringStandIn:
    """Targets that depend on the conversation: a system prompt moves the teacher's mass, so
    two teachers' targets differ. Token ids are the answer's own or its words' lengths."""

    def __init__(self):
        self.calls: list[tuple[list[list[dict]], list]] = []

    def score(self, conversations, k, answer_ids=None):
        self.calls.append((conversations, list(answer_ids or [])))
        out = []
        for n, conv in enumerate(conversations):
            tokens = list(answer_ids[n]) if answer_ids and answer_ids[n] else [len(w) for w in conv[-1]["content"].split()]
            shift = 0.5 if conv[0]["role"] == "system" and "short" in conv[0]["content"] else 0.0
            ids, lps = [], []
            for t in tokens:
                support = [t, t + 1, t + 2][:k]
                weights = [math.exp(-shift * j) * (3 - j) for j in range(len(support))]
                z = sum(weights)
                ids.append(support)
                lps.append([math.log(w / z) for w in weights])
            out.append({"kd_token_ids": tokens, "kd_token_logprobs": [lp[0] for lp in lps], "kd_topk_ids": ids, "kd_topk_logprobs": lps})
        return out


def prompt_rows(count: int = 6) -> list[dict]:
    seeds = [{"seed_id": s["id"], "instruction": s["instruction"], "input": s["instances"][0]["input"],
              "response": f"answer number {i} " + "word " * i} for i, s in enumerate(read_seeds()[:count])]
    return render_messages(seeds, "Be helpful.")


def stage_file(store, path: str, rows: list[dict], schema):
    from distillery.stages.contract import StagedFile
    from distillery.stages.staged import encode, nullable

    data, sha = encode(rows, nullable(schema))
    store.write(path, data)
    return StagedFile(path, sha, len(data), len(rows))


def staged_schema_with_kd():
    from distillery.kd import with_kd
    from distillery.schema import ROW_SCHEMA
    from distillery.stages.engine import staged_schema

    return staged_schema(with_kd(ROW_SCHEMA, "float32"))


def test_given_answers_become_rows_and_one_that_does_not_fit_is_rejected_whole():
    rows = prompt_rows()
    counted = []

    def count(model, convs):
        counted.append(model)
        return [200 if "number 5" in c[-1]["content"] else 10 for c in convs]

    out = Given("teacher", "m", "Be helpful.", 100, PROMPT_SCHEMA, count=count).run(rows, 0)
    assert counted == ["m"]
    assert len(out.rows) == 5 and [r["seed_id"] for r in out.rejected] == [rows[5]["seed_id"]]
    (bad,) = out.rejected
    assert bad["stage"] == "render" and bad["reason"] == "prompt_too_long" and "200 tokens" in bad["detail"]
    for given, row in zip(out.rows, rows):
        assert given["messages"] == [*row["messages"], {"role": "assistant", "content": row["response"]}]
        assert given["id"] == content_id(row["messages"], row["response"])
        assert given["finish_reason"] == "given" and given["teacher"] == "teacher" and given["teacher_model"] == "m"
        # What the scorer sees: the prompt under the system prompt, the given answer last, once.
        assert conversation(given, "Be helpful.") == [*row["messages"], {"role": "assistant", "content": row["response"]}]


def test_score_keeps_generated_token_ids_and_slim_rows_hold_only_ids_and_targets():
    rows = [{**r, "id": f"r{i}", "kd_token_ids": [7, 8, 9] if i % 2 else None} for i, r in enumerate(prompt_rows(4))]
    engine = ScoringStandIn()
    full = Score("t", "m", "Be helpful.", K, {"model": "m"}, 3, PROMPT_SCHEMA, open_engine=lambda: engine).run(rows, 0)
    assert [len(c) for c, _ in engine.calls] == [3, 1]  # batch_size 3
    assert engine.calls[0][1] == [None, [7, 8, 9], None]
    assert [r["kd_token_ids"] for r in full.rows][1] == [7, 8, 9]
    assert all(r["seed_id"] == s["seed_id"] for r, s in zip(full.rows, rows))
    slim = Score("t", "m", "Be helpful.", K, {"model": "m"}, 3, TARGETS_SCHEMA, open_engine=lambda: engine, slim=True).run(rows, 0)
    assert [set(r) for r in slim.rows] == [{"id", "kd_token_ids", "kd_token_logprobs", "kd_topk_ids", "kd_topk_logprobs"}] * 4
    assert [r["kd_topk_ids"] for r in slim.rows] == [r["kd_topk_ids"] for r in full.rows]
    assert "engine_seconds" in slim.facts


def test_scores_and_merge_through_the_executor_give_kd_merge_of_each_row(tmp_path):
    """Two teachers score shard 0 (slim, staged), kd-merge mixes them: each row's targets are
    kd.merge of the two, the record balances, and a rerun skips every shard."""
    from distillery.adapters.storage import open_dataset
    from distillery.stages.executor import read_rows, run_shard

    store = open_dataset(str(tmp_path))
    rows = [{**r, "id": f"r{i}", "messages": [*r["messages"], {"role": "assistant", "content": r["response"]}]}
            for i, r in enumerate(prompt_rows(5))]
    schema = staged_schema_with_kd()
    engine = ScoringStandIn()
    source = stage_file(store, "in/part-00000.parquet", [{k: v for k, v in r.items() if k in schema.names} for r in rows], schema)
    files = []
    for name, system in (("plain", "Be helpful."), ("terse", "Answer in one short sentence.")):
        stage = Score(name, "m", system, K, {"model": "m"}, 8, TARGETS_SCHEMA, open_engine=lambda: engine, slim=True)
        record, ran = run_shard(store, "_temporary/t", stage, 0, [source])
        assert ran and record.rows_out == 5 and record.stage == f"score-{name}"
        files.append(record.files[0])
    weights = (("plain", 3.0), ("terse", 1.0))
    merge_stage = Merge(weights, schema, targets=lambda shard: [read_rows(store, [f]) for f in files])
    record, ran = run_shard(store, "_temporary/t", merge_stage, 0, [source], ["digest"])
    assert ran and record.rows_in == record.rows_out == 5 and record.balanced()
    merged = read_rows(store, [record.files[0]])
    plain, terse = (read_rows(store, [f]) for f in files)
    for row, p, t in zip(merged, plain, terse):
        expected = merge([p, t], [3.0, 1.0])
        assert row["kd_topk_ids"] == expected["kd_topk_ids"] and row["kd_token_ids"] == p["kd_token_ids"]
        for got, want in zip(row["kd_topk_logprobs"], expected["kd_topk_logprobs"]):
            assert got == pytest.approx(want, abs=1e-6)
            assert sum(math.exp(x) for x in got) == pytest.approx(1.0, abs=1e-5)
        assert p["kd_topk_logprobs"] != t["kd_topk_logprobs"]  # the mixture is of two different teachers
    again, ran = run_shard(store, "_temporary/t", merge_stage, 0, [source], ["digest"])
    assert not ran and again == record


def test_merge_refuses_targets_of_other_rows():
    rows = [{"id": "a"}, {"id": "b"}]
    target = {"kd_token_ids": [1], "kd_token_logprobs": [0.0], "kd_topk_ids": [[1]], "kd_topk_logprobs": [[0.0]]}
    swapped = Merge((("x", 1.0),), TARGETS_SCHEMA, targets=lambda shard: [[{"id": "b", **target}, {"id": "a", **target}]])
    with pytest.raises(KDError, match="not for row a"):
        swapped.run(rows, 0)
    short = Merge((("x", 1.0),), TARGETS_SCHEMA, targets=lambda shard: [[{"id": "a", **target}]])
    with pytest.raises(KDError, match="2 rows"):
        short.run(rows, 0)
