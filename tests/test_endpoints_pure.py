"""The pure parts of endpoint teachers: request bodies, answers read back into the engine
path's rows, backoff, batch-file lines, cost, the recipe's checks and the accounting."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from distillery.endpoints import (EndpointConfig, MalformedAnswer, batch_answer, batch_line, completions_from, cost_usd,
                                  custom_id, error_message, estimated_tokens, parse_answer, read_batch_output,
                                  request_body, retry_delay, teacher_request)
from distillery.recipe import RecipeError, build_recipe
from distillery.report import accounting_errors, summary_from_counts

URL = "http://127.0.0.1:8000/v1"


def endpoint(**extra) -> dict:
    return {"base_url": URL, "model": "smollm2", **extra}


def answer(texts: list[str], prompt_tokens: int = 11, completion_tokens: int = 9, logprobs=None) -> dict:
    choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop",
                **({"logprobs": {"content": logprobs}} if logprobs else {})} for i, t in enumerate(texts)]
    return {"id": "x", "choices": choices[::-1],  # out of order on purpose: read back by index
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}


def test_request_body_carries_the_engine_sampling_settings():
    msgs = [{"role": "user", "content": "hi"}]
    body = request_body("m", msgs, {"n": 2, "temperature": 0.7, "top_p": 0.9, "max_tokens": 32, "seed": 5, "stop": ["\n\n"]})
    assert body == {"model": "m", "messages": msgs, "n": 2, "temperature": 0.7, "top_p": 0.9, "max_tokens": 32, "seed": 5,
                    "stop": ["\n\n"]}
    kd = request_body("m", msgs, {"n": 1, "max_tokens": 4, "seed": None, "kd_top_k": 5}, token_ids=True)
    assert kd["logprobs"] is True and kd["top_logprobs"] == 5 and kd["return_tokens_as_token_ids"] is True
    assert "seed" not in kd
    judge = request_body("m", msgs, {"n": 1, "max_tokens": 1, "logprobs": 20}, continue_final=True)
    assert judge["top_logprobs"] == 20 and "return_tokens_as_token_ids" not in judge
    assert judge["continue_final_message"] is True and judge["add_generation_prompt"] is False
    assert request_body("m", msgs, {"n": 1}, regex="[0-9]", structured=True)["structured_outputs"] == {"regex": "[0-9]"}
    assert "structured_outputs" not in request_body("m", msgs, {"n": 1}, regex="[0-9]", structured=False)


def test_answers_read_back_as_engine_completions_by_index():
    done = parse_answer(json.dumps(answer(["first", "second"], completion_tokens=9)), n=2)
    assert [d["response"] for d in done] == ["first", "second"]
    assert [d["sample_index"] for d in done] == [0, 1]
    assert [d["completion_tokens"] for d in done] == [5, 4]  # usage split over the choices, nothing lost
    assert all(d["prompt_tokens"] == 11 and d["finish_reason"] == "stop" for d in done)


@pytest.mark.parametrize("text, why", [
    ('{"choices": ', "not JSON"),
    ('{"choices": [], "usage": {}}', "no choices"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"choices": [{"index": 0, "message": {"content": None}}]}), "no message content"),
])
def test_malformed_answers_are_refused_with_the_reason(text, why):
    with pytest.raises(MalformedAnswer, match=why):
        parse_answer(text, n=1)


def test_an_answer_with_the_wrong_number_of_choices_is_malformed():
    with pytest.raises(MalformedAnswer, match="2 choices, asked for 3"):
        completions_from(answer(["a", "b"]), n=3)


def test_kd_targets_from_logprobs_rank_by_logprob_not_server_order():
    # vLLM lists the sampled token first, ahead of the true top-k (here it is rank 3)
    pos = lambda tid, lp, tops: {"token": f"token_id:{tid}", "logprob": lp,
                                 "top_logprobs": [{"token": f"token_id:{i}", "logprob": l} for i, l in tops]}
    content = [pos(7, -2.0, [(7, -2.0), (1, -0.5), (2, -1.0)]), pos(3, -0.1, [(3, -0.1), (4, -3.0)])]
    done = completions_from(answer(["ab"], logprobs=content), n=1, kd_k=2)[0]
    assert done["kd_token_ids"] == [7, 3]
    assert done["kd_topk_ids"] == [[1, 2], [3, 4]]
    assert done["completion_tokens"] == 2
    first = completions_from(answer(["x"], logprobs=content[:1]), n=1, first_k=3)[0]
    assert first["top_logprobs"] == {"token_id:7": -2.0, "token_id:1": -0.5, "token_id:2": -1.0}
    with pytest.raises(MalformedAnswer, match="the answer has none"):
        completions_from(answer(["x"]), n=1, kd_k=2)
    text = [{"token": "Hi", "logprob": -1.0, "top_logprobs": [{"token": "Hi", "logprob": -1.0}]}]
    with pytest.raises(MalformedAnswer, match="local tokenizer"):
        completions_from(answer(["Hi"], logprobs=text), n=1, kd_k=1)


def test_retry_after_is_honoured_else_full_jitter_backoff():
    rng = random.Random(0)
    assert retry_delay(0, "3", 1.0, rng) == 3.0
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert retry_delay(0, format_datetime(now + timedelta(seconds=7), usegmt=True), 1.0, rng, now=now) == pytest.approx(7.0)
    delays = [retry_delay(4, None, 1.0, rng) for _ in range(500)]
    assert 0 <= min(delays) and max(delays) <= 16.0 and len(set(delays)) > 400  # jittered up to base * 2**4
    assert max(retry_delay(20, None, 1.0, rng) for _ in range(200)) <= 60.0  # capped


def test_error_messages_keep_the_servers_words():
    body = json.dumps({"error": {"message": "This model's maximum context length is 2048 tokens.", "code": 400}})
    assert error_message(400, body) == "HTTP 400: This model's maximum context length is 2048 tokens."
    assert error_message(502, b"<html>Bad Gateway</html>") == "HTTP 502: <html>Bad Gateway</html>"


def test_custom_ids_change_with_the_request_and_batch_lines_round_trip():
    row = {"seed_id": "seed_task_3", "messages": [{"role": "user", "content": "hi"}]}
    params = {"n": 1, "temperature": 0.0, "max_tokens": 8, "seed": 0}
    cid, body = teacher_request("t", "m", row, params, token_ids=False)
    assert cid.startswith("t:seed_task_3:") and cid == teacher_request("t", "m", row, params, False)[0]
    assert teacher_request("t", "m", row, {**params, "max_tokens": 9}, False)[0] != cid  # other settings, other id
    assert teacher_request("t", "m", {**row, "messages": [{"role": "user", "content": "ho"}]}, params, False)[0] != cid
    line = json.loads(batch_line(cid, body))
    assert line == {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}
    assert custom_id("t", row, body) == cid


def test_batch_output_lines_answer_or_say_why_not():
    ok = {"custom_id": "a", "response": {"status_code": 200, "body": answer(["x"])}, "error": None}
    bad = {"custom_id": "b", "response": {"status_code": 400, "body": {"error": {"message": "too long"}}}, "error": None}
    failed = {"custom_id": "c", "response": None, "error": {"message": "expired"}}
    found = read_batch_output([json.dumps(x) for x in (ok, bad, failed)] + [""], "out.jsonl")
    assert batch_answer(found["a"])[0]["choices"]
    assert batch_answer(found["b"]) == (None, "HTTP 400: too long")
    assert batch_answer(found["c"]) == (None, "batch error: expired")
    assert batch_answer(None) == (None, "no answer in the responses file for this request")
    with pytest.raises(ValueError, match="out.jsonl: line 2 is not JSON"):
        read_batch_output([json.dumps(ok), "{oops"], "out.jsonl")
    with pytest.raises(ValueError, match="line 1 has no custom_id"):
        read_batch_output([json.dumps({"id": 1})], "out.jsonl")


def test_cost_and_token_estimates():
    assert cost_usd(1_000_000, 500_000, 0.15, 0.60) == pytest.approx(0.45)
    assert cost_usd(10, 10, None, None) is None
    body = {"messages": [{"content": "x" * 40}], "max_tokens": 16, "n": 2}
    assert estimated_tokens(body) == 10 + 32 and estimated_tokens(body, prompt_tokens=3) == 35


def test_endpoint_config_refuses_keys_in_urls_and_half_prices():
    with pytest.raises(ValueError, match="must not carry credentials"):
        EndpointConfig(base_url="https://user:sk-123@api.example.com/v1", model="m")
    with pytest.raises(ValueError, match="http"):
        EndpointConfig(base_url="api.example.com/v1", model="m")
    with pytest.raises(ValueError, match="not both"):
        EndpointConfig(**endpoint(api_key_env="K", api_key_secret="s"))
    with pytest.raises(ValueError, match="both endpoint prices"):
        EndpointConfig(**endpoint(price_input_per_million=1.0))
    config = EndpointConfig(base_url=URL + "/", model="org/model:v1")
    assert config.base_url == URL and config.limit_name() == "endpoint-127.0.0.1-8000-v1-org-model-v1"


def test_recipe_endpoints_inherit_and_refuse_what_an_endpoint_cannot_do():
    recipe = build_recipe({"teacher": {"endpoint": endpoint()},
                           "extra_teachers": [{"name": "warm", "temperature": 1.0},
                                              {"name": "local", "model": "smollm2-135m-instruct"}]})
    assert sorted(recipe.endpoints()) == ["teacher", "warm"]  # `local` names its own model: the in-process engine
    assert [m for _, m, _, _ in recipe.teachers()] == ["smollm2", "smollm2", "smollm2-135m-instruct"]
    assert recipe.judge_endpoint.model == "smollm2" and recipe.judge_model == "smollm2"
    assert build_recipe({"teacher": {"endpoint": endpoint()}, "judge": {"model": "smollm2-135m-instruct"}}).judge_endpoint is None
    with pytest.raises(RecipeError, match="kd.top_k 8 exceeds the endpoint's max_top_logprobs 5"):
        build_recipe({"teacher": {"endpoint": endpoint(max_top_logprobs=5)}, "kd": {"top_k": 8}})
    with pytest.raises(RecipeError, match="max_top_logprobs is 0"):
        build_recipe({"teacher": {"endpoint": endpoint(max_top_logprobs=0)}, "kd": {"top_k": 4}})
    with pytest.raises(RecipeError, match="need the in-process engine"):
        build_recipe({"teacher": {"endpoint": endpoint()}, "extra_teachers": [{"name": "b"}],
                      "kd": {"top_k": 4, "teacher_weights": {"teacher": 1.0, "b": 1.0}}})
    with pytest.raises(RecipeError, match="method 'logprob' reads 20"):
        build_recipe({"teacher": {"endpoint": endpoint(max_top_logprobs=5)}, "judge": {"method": "logprob"}})


def test_prompts_an_endpoint_refused_are_accounted_per_prompt():
    # 10 prompts, two teachers with n=2 and n=1; teacher A's endpoint refused 2 prompts
    rejected = Counter({("render", "prompt_too_long"): 1, ("generate", "endpoint_error"): 2, ("judge", "low_score"): 3})
    generated = (10 - 1) * 3 - 2 * 2
    summary = summary_from_counts(10, 3, generated, generated - 3, rejected, 0, 0, None, 0, {}, not_generated=4)
    assert summary["rejected_at_generation"] == 2 and summary["rejected_after_generation"] == 3
    assert accounting_errors(summary) == []
    summary["not_generated"] = 0
    assert accounting_errors(summary)  # the refused prompts' completions must be counted somewhere


class FreeTextEndpoint:
    """A stand-in for an endpoint without structured outputs: the first judgement of each
    conversation rambles, the second gives a score; it refuses one prompt with a 400."""

    holds_format = False

    def __init__(self):
        self.asked: Counter = Counter()

    def count_prompt_tokens(self, conversations):
        return [0] * len(conversations)

    def chat(self, conversations, params, **extra):
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            self.asked[text] += 1
            if "refuse me" in text:
                out.append([{"error": "HTTP 400: this prompt is not allowed"}])
            elif self.asked[text] == 1:
                out.append([{"response": "What a lovely answer, I am not sure.", "prompt_tokens": 7, "completion_tokens": 5}])
            else:
                out.append([{"response": "Score: 8\nRationale: fine", "prompt_tokens": 7, "completion_tokens": 4}])
        return out


def test_a_judge_without_structured_outputs_asks_again_once_and_quarantines_refusals():
    from distillery.judge import absolute_regex
    from distillery.schema import ROW_SCHEMA
    from distillery.stages.engine import Judge, staged_schema

    rows = [{"id": str(i), "seed_id": f"s{i}", "prompt": p, "response": "an answer"}
            for i, p in enumerate(["first", "second", "please refuse me"])]
    engine = FreeTextEndpoint()
    judge = Judge("m", "rubric", (), "structured", {"n": 1, "temperature": 0.0, "max_tokens": 8}, {"regex": absolute_regex(())},
                  batch_size=8, max_model_len=60, schema=staged_schema(ROW_SCHEMA), open_engine=lambda: engine)
    out = judge.run(rows, 0)
    assert [r["judge_score"] for r in out.rows] == [8, 8]  # the second answer stands
    assert [(r["seed_id"], r["reason"], r["detail"]) for r in out.rejected] == [("s2", "endpoint_error", "HTTP 400: this prompt is not allowed")]
    assert max(engine.asked.values()) == 2  # once more, not more
    assert out.facts["prompt_tokens"] == 14 and out.facts["completion_tokens"] == 8
