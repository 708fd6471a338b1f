"""Teachers and judges behind an OpenAI-compatible endpoint (`vllm serve`, a hosted API):
the recipe section, and the pure parts of talking to one (request bodies, reading
answers back into the engine path's completion rows, batch-file lines, backoff, cost).

No HTTP here: adapters/endpoint.py sends the requests. The rows that come out are the
ones vLLM's offline engine gives (`response`, `finish_reason`, `prompt_tokens`,
`completion_tokens`, `sample_index`, `top_logprobs`, and the kd_* targets), so every
stage after generation is the same for both.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CHAT_PATH = "/v1/chat/completions"  # the batch file's `url`, as OpenAI's and vLLM's batch runners want it
TOKEN_ID_PREFIX = "token_id:"  # vLLM's `return_tokens_as_token_ids` spelling of a token


class EndpointConfig(BaseModel):
    """An OpenAI-compatible chat completions endpoint standing in for the in-process engine."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    base_url: str = Field(
        ..., min_length=1,
        description="The API's base URL, up to and including /v1 (http://vllm.internal:8000/v1, https://api.openai.com/v1).",
    )
    model: str = Field(..., min_length=1, description="The model name the endpoint serves (its `model` request field).")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key (e.g. OPENAI_API_KEY). The key itself "
        "never goes in a recipe, log, manifest or card. Null (with api_key_secret null) sends no key.",
    )
    api_key_secret: str | None = Field(
        None, description="Name of a Prefect Secret block holding the API key; used when api_key_env is null.",
    )
    tokenizer: str | None = Field(
        None, description="A local model (name or folder) with the served model's tokenizer: counts prompt tokens for "
        "the context check (against teacher.max_model_len) and maps text logprob tokens to ids for KD. Null: no local "
        "count (the server refuses what does not fit, and the row is quarantined with its words).",
    )
    max_concurrency: int = Field(16, ge=1, le=4096, description="Requests in flight at once, across every flow run using this endpoint.")
    requests_per_minute: int | None = Field(None, ge=1, description="Request rate limit, across every flow run using this endpoint; null for none.")
    tokens_per_minute: int | None = Field(
        None, ge=1, description="Token rate limit (prompt + max_tokens per request, as providers count it), across flow runs; null for none.",
    )
    timeout_seconds: float = Field(600.0, gt=0, le=86_400, description="One request's timeout; a stalled request is retried.")
    max_retries: int = Field(6, ge=0, le=100, description="Retries of a request on connection errors, timeouts, 429 and 5xx (exponential backoff with jitter; Retry-After honoured).")
    backoff_seconds: float = Field(1.0, gt=0, le=600, description="First retry's pause; it doubles each retry, up to 60 s, with full jitter.")
    max_top_logprobs: int = Field(20, ge=0, le=100, description="The most top_logprobs the endpoint returns (OpenAI: 20; vLLM: its --max-logprobs). 0: no logprobs at all.")
    structured_outputs: Literal["auto", "vllm", "none"] = Field(
        "auto", description="How a structured judge is held to its format: 'vllm' sends vLLM's structured_outputs "
        "(regex); 'none' parses free text and asks again once when it does not parse; 'auto' asks the server which it is.",
    )
    price_input_per_million: float | None = Field(None, ge=0, description="USD per million prompt tokens; with the output price, the report and card state the build's cost.")
    price_output_per_million: float | None = Field(None, ge=0, description="USD per million completion tokens.")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint base_url {v!r} must be an http(s) URL such as http://host:8000/v1")
        if parts.username or parts.password:
            raise ValueError("endpoint base_url must not carry credentials; put the key in api_key_env or api_key_secret")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_key(self) -> "EndpointConfig":
        if self.api_key_env and self.api_key_secret:
            raise ValueError("set one of endpoint api_key_env and api_key_secret, not both")
        if (self.price_input_per_million is None) != (self.price_output_per_million is None):
            raise ValueError("set both endpoint prices (price_input_per_million and price_output_per_million) or neither")
        return self

    def limit_name(self) -> str:
        """The Prefect global concurrency limit shared by every flow run using this endpoint."""
        parts = urlsplit(self.base_url)
        return "endpoint-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{parts.netloc}{parts.path}-{self.model}").strip("-")

    def shown(self) -> str:
        return f"{self.model} at {self.base_url}"


def request_body(model: str, messages: list[dict], params: dict, regex: str | None = None, choice: list[str] | None = None,
                 continue_final: bool = False, structured: bool = True, token_ids: bool = False) -> dict:
    """A chat completions request with the engine path's sampling settings (vLLM
    SamplingParams names: n, temperature, top_p, max_tokens, seed, stop; `logprobs` k is the
    first token's top-k; `kd_top_k` the top-k at every token, as token ids when `token_ids`)."""
    body: dict = {"model": model, "messages": messages}
    for key in ("n", "temperature", "top_p", "max_tokens", "seed", "stop"):
        if params.get(key) is not None:
            body[key] = params[key]
    k = params.get("kd_top_k") or params.get("logprobs") or 0
    if k:
        body["logprobs"] = True
        body["top_logprobs"] = int(k)
        if params.get("kd_top_k") and token_ids:
            body["return_tokens_as_token_ids"] = True  # vLLM: "token_id:N", no string mapping needed
    if structured and (regex or choice):
        body["structured_outputs"] = {"regex": regex} if regex else {"choice": list(choice)}
    if continue_final:  # vLLM's chat extension: continue the pre-filled assistant message
        body["add_generation_prompt"] = False
        body["continue_final_message"] = True
    return body


class MalformedAnswer(ValueError):
    """An answer that is not a usable chat completion (bad JSON, no choices, wrong count)."""


def parse_answer(text: str | bytes, n: int, kd_k: int = 0, to_id: Callable[[dict], int] | None = None,
                 first_k: int = 0) -> list[dict]:
    """A chat completion's choices as the engine path's completions (n of them, by index).
    `usage` gives the prompt tokens; per-choice completion tokens come from the logprobs
    when present, else usage's completion tokens split over the n choices."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise MalformedAnswer(f"answer is not JSON ({err.__class__.__name__}: {str(err)[:80]})") from None
    if not isinstance(data, dict):
        raise MalformedAnswer("answer is not a JSON object")
    return completions_from(data, n, kd_k, to_id, first_k)


def completions_from(data: dict, n: int, kd_k: int = 0, to_id: Callable[[dict], int] | None = None,
                     first_k: int = 0) -> list[dict]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedAnswer("answer has no choices")
    if len(choices) != n:
        raise MalformedAnswer(f"answer has {len(choices)} choices, asked for {n}")
    usage = data.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    total_completion = int(usage.get("completion_tokens") or 0)
    out = []
    for rank, choice in enumerate(sorted(choices, key=lambda c: c.get("index", 0))):
        message = choice.get("message") or {}
        text = message.get("content")
        if not isinstance(text, str):
            raise MalformedAnswer(f"choice {rank} has no message content")
        content = (choice.get("logprobs") or {}).get("content") or []
        share = total_completion // n + (1 if rank < total_completion % n else 0)
        done = {
            "response": text,
            "finish_reason": choice.get("finish_reason"),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(content) if content else share,
            "sample_index": int(choice.get("index", rank)),
            "top_logprobs": None,
        }
        if first_k and content:
            done["top_logprobs"] = {t["token"]: float(t["logprob"]) for t in content[0].get("top_logprobs") or []}
        if kd_k:
            done.update(kd_targets(content, kd_k, to_id))
        out.append(done)
    return out


def kd_targets(content: list[dict], k: int, to_id: Callable[[dict], int] | None) -> dict:
    """The kd_* columns from an answer's per-token logprobs: each position's top entries
    (ranked by logprob; kd.targets keeps ranks 1..k) plus the sampled token with its logprob."""
    from distillery.kd import targets

    if not content:
        raise MalformedAnswer("asked for logprobs, the answer has none")
    to_id = to_id or token_id
    ids, dists = [], []
    for entry in content:
        tid = to_id(entry)
        dist = {}
        # ranked by logprob: vLLM lists the sampled token first, before the top-k
        tops = sorted(entry.get("top_logprobs") or [], key=lambda t: -float(t["logprob"]))
        for rank, top in enumerate(tops, start=1):
            dist.setdefault(to_id(top), (float(top["logprob"]), rank))
        dist.setdefault(tid, (float(entry["logprob"]), None))
        ids.append(tid)
        dists.append(dist)
    return targets(ids, dists, k)


def token_id(entry: dict) -> int:
    """A token id from vLLM's `token_id:N` spelling."""
    token = entry.get("token", "")
    if not token.startswith(TOKEN_ID_PREFIX):
        raise MalformedAnswer(f"logprob token {token[:40]!r} is not an id; give the endpoint a local tokenizer")
    return int(token[len(TOKEN_ID_PREFIX):])


def error_message(status: int, text: str | bytes) -> str:
    """The server's own message from an error answer (OpenAI's {"error": {"message"}}), short."""
    try:
        data = json.loads(text)
        err = data.get("error", data) if isinstance(data, dict) else data
        message = err.get("message") if isinstance(err, dict) else str(err)
    except (ValueError, UnicodeDecodeError, AttributeError):
        message = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return f"HTTP {status}: {' '.join(str(message).split())[:400]}"


def retry_delay(attempt: int, retry_after: str | None, base: float, rng: random.Random, cap: float = 60.0,
                now: datetime | None = None) -> float:
    """Seconds before retry `attempt` (0-based): the server's Retry-After (seconds or an
    HTTP date) when it gives one, else exponential backoff with full jitter."""
    if retry_after:
        try:
            return max(0.0, min(float(retry_after), 3600.0))
        except ValueError:
            try:
                when = parsedate_to_datetime(retry_after)
                return max(0.0, min((when - (now or datetime.now(timezone.utc))).total_seconds(), 3600.0))
            except (TypeError, ValueError):
                pass
    return rng.uniform(0, min(cap, base * 2 ** attempt))


def teacher_request(teacher: str, model: str, row: dict, params: dict, token_ids: bool) -> tuple[str, dict]:
    """A rendered row's request for one teacher, as a batch file holds it: (custom_id, body).
    Both `distillery batch-file` and `run --responses` make it with this, so they agree."""
    body = request_body(model, row["messages"], params, token_ids=token_ids)
    return custom_id(teacher, row, body), body


def custom_id(teacher: str, row: dict, body: dict) -> str:
    """A batch request's id: the teacher, the seed, and a digest of the exact request, so an
    answer made for another prompt or other settings never matches."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]
    return f"{teacher}:{row['seed_id']}:{digest}"


def batch_line(cid: str, body: dict) -> str:
    """One line of an OpenAI batch input file."""
    return json.dumps({"custom_id": cid, "method": "POST", "url": CHAT_PATH, "body": body}, sort_keys=True)


def read_batch_output(lines: Sequence[str], where: str) -> dict[str, dict]:
    """An OpenAI batch output file -> {custom_id: line}. Each line has `response`
    ({status_code, body}) or `error`; a line that is not JSON names its number."""
    out: dict[str, dict] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise ValueError(f"{where}: line {number} is not JSON; pass the output file of an OpenAI batch or `vllm run-batch`") from None
        if not isinstance(item, dict) or "custom_id" not in item:
            raise ValueError(f"{where}: line {number} has no custom_id; pass the output file of an OpenAI batch or `vllm run-batch`")
        out[item["custom_id"]] = item
    return out


def batch_answer(item: dict | None) -> tuple[dict | None, str | None]:
    """A batch output line -> (the chat completion, None) or (None, why it is unusable)."""
    if item is None:
        return None, "no answer in the responses file for this request"
    if item.get("error"):
        err = item["error"]
        return None, f"batch error: {err.get('message', err) if isinstance(err, dict) else err}"
    response = item.get("response") or {}
    status = int(response.get("status_code") or 0)
    body = response.get("body")
    if status != 200:
        return None, error_message(status, json.dumps(body) if body is not None else "")
    if not isinstance(body, dict):
        return None, "batch response body is not a JSON object"
    return body, None


def cost_usd(prompt_tokens: int, completion_tokens: int, price_in: float | None, price_out: float | None) -> float | None:
    if price_in is None or price_out is None:
        return None
    return round((prompt_tokens * price_in + completion_tokens * price_out) / 1e6, 6)


def estimated_tokens(body: dict, prompt_tokens: int | None = None) -> int:
    """What a tokens-per-minute limit charges a request before it is sent: its prompt
    (counted, or ~4 characters a token) plus max_tokens for each of its n answers."""
    if prompt_tokens is None:
        prompt_tokens = math.ceil(sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) / 4)
    return prompt_tokens + int(body.get("max_tokens") or 0) * int(body.get("n") or 1)
