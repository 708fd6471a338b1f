"""An OpenAI-compatible endpoint as an engine: the in-process engine's `chat` and
`count_prompt_tokens`, answered over HTTP (`vllm serve`, a hosted API).

Requests go out async, `max_concurrency` lanes at a time. Connection errors, timeouts, 429 and 5xx
are retried with exponential backoff and full jitter (Retry-After honoured); when a
request has used its retries the batch fails with one line naming the endpoint (a rerun
resends only unanswered batches: batches are cached task runs). Any other 4xx is the
request's own fault: not retried, its row comes back as `{"error": why}` and is
quarantined by the stage. A malformed answer (bad JSON, no choices) is retried twice,
then quarantined the same way.

Limits hold across every flow run sharing the endpoint: a Prefect global concurrency
limit named after it (`EndpointConfig.limit_name`), and rate limits with slot decay for
requests and tokens per minute, besides the same limits in this process. The API key is
read when the client opens, kept only in the request header, and never in a message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import cached_property, lru_cache

from distillery.endpoints import (EndpointConfig, MalformedAnswer, error_message, estimated_tokens, parse_answer,
                                  request_body, retry_delay)
from distillery.errors import DistilleryError

log = logging.getLogger("distillery.endpoint")
MALFORMED_RETRIES = 2


class EndpointError(DistilleryError, RuntimeError):
    """The endpoint could not be used: unreachable, the key refused, or out of retries."""


@dataclass(frozen=True)
class EndpointSpec:
    """Which endpoint and who uses it (`label`: "teacher 'teacher'", "judge"): hashable, so
    a process keeps one client per endpoint, and free of the key."""

    label: str
    config_json: str

    @classmethod
    def of(cls, label: str, config: EndpointConfig) -> "EndpointSpec":
        return cls(label, config.model_dump_json())

    @cached_property
    def config(self) -> EndpointConfig:
        return EndpointConfig.model_validate_json(self.config_json)

    @property
    def model(self) -> str:
        return self.config.model

    def identity(self) -> dict:
        """What shapes an answer (the cache key's part): the server and model, not limits or keys."""
        return {"endpoint": self.config.base_url, "model": self.config.model}


def api_key(config: EndpointConfig, label: str) -> str | None:
    """The key, from the named environment variable or Prefect Secret block."""
    if config.api_key_env:
        key = os.environ.get(config.api_key_env)
        if not key:
            raise EndpointError(f"{label} ({config.shown()}): environment variable {config.api_key_env} is not set; "
                                f"export it, or name another with endpoint.api_key_env")
        return key
    if config.api_key_secret:
        from prefect.blocks.system import Secret

        try:
            return str(Secret.load(config.api_key_secret, _sync=True).get())
        except ValueError:
            raise EndpointError(f"{label} ({config.shown()}): no Prefect Secret block named {config.api_key_secret!r}; "
                                f"create it in the UI or with Secret(value=...).save({config.api_key_secret!r})") from None
    return None


class _Bucket:
    """A per-minute budget in this process (requests or tokens), refilled continuously."""

    def __init__(self, per_minute: int):
        self.rate, self.capacity = per_minute / 60.0, float(per_minute)
        self.level, self.at = float(per_minute), time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, amount: float) -> None:
        amount = min(amount, self.capacity)
        async with self.lock:
            while True:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
                self.at = now
                if self.level >= amount:
                    self.level -= amount
                    return
                await asyncio.sleep((amount - self.level) / self.rate)


class EndpointEngine:
    """An endpoint with the engine's batch calls. `shared_limits`: also take the Prefect
    global limits (in a flow run); off, only this process's limits apply (benchmarks)."""

    dead = False

    def __init__(self, spec: EndpointSpec, shared_limits: bool = True, check: bool = True):
        self.spec, self.config, self.label = spec, spec.config, spec.label
        self._key = api_key(self.config, self.label)
        self.requests = 0  # requests sent (answered or not), for tests and benchmarks
        self.tokenizer = self._tokenizer()
        self.server = "unknown"
        self.shared = shared_limits and _ensure_shared_limits(self.config)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="endpoint")
        if check:
            self.server = self.check()

    def __repr__(self) -> str:  # never the key
        return f"EndpointEngine({self.label}: {self.config.shown()})"

    @property
    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def _tokenizer(self):
        name = self.config.tokenizer
        if not name:
            return None
        from distillery.adapters.engine import tokenizer_for

        return tokenizer_for(name)

    def check(self) -> str:
        """Before any generation: the server answers, takes the key and serves the model.
        Returns 'vllm' when it is a vLLM server (structured outputs, token ids), else 'openai'."""
        import httpx

        c, where = self.config, f"{self.label} ({self.config.shown()})"
        try:
            r = httpx.get(f"{c.base_url}/models", headers=self._headers, timeout=min(30.0, c.timeout_seconds))
        except httpx.HTTPError as err:
            raise EndpointError(f"{where}: cannot reach {c.base_url} ({err.__class__.__name__}); check endpoint.base_url "
                                f"and that the server is up") from None
        if r.status_code in (401, 403):
            raise EndpointError(f"{where}: the server refused the API key ({error_message(r.status_code, r.content)}); "
                                f"check endpoint.api_key_env / api_key_secret")
        if r.status_code != 200:
            raise EndpointError(f"{where}: GET {c.base_url}/models answered {error_message(r.status_code, r.content)}; "
                                f"is this an OpenAI-compatible API (base_url ending in /v1)?")
        try:
            models = r.json().get("data") or []
        except ValueError:
            raise EndpointError(f"{where}: GET {c.base_url}/models did not answer JSON; is base_url an OpenAI-compatible API?") from None
        served = [m.get("id") for m in models if isinstance(m, dict)]
        if served and c.model not in served:
            raise EndpointError(f"{where}: the server does not serve {c.model!r}; it serves {served[:10]}; set endpoint.model")
        vllm = any(isinstance(m, dict) and m.get("owned_by") == "vllm" for m in models)
        return "vllm" if vllm else "openai"

    def check_tokenizer(self, local: str) -> None:
        """KD ids must index the vocabulary the dataset ships (`local`, a local model's
        tokenizer): on a vLLM server, its /tokenize of a probe must equal the local one's.
        Another server names logprob tokens by text, mapped through endpoint.tokenizer."""
        import httpx

        from distillery.adapters.engine import tokenizer_for

        where = f"{self.label} ({self.config.shown()})"
        if self.server != "vllm":
            if self.tokenizer is None:
                raise EndpointError(f"{where}: KD needs token ids and this server names tokens by text; set endpoint.tokenizer "
                                    f"to a local model with the served model's tokenizer")
            return
        probe = "Distillery checks the tokenizer: naïve café, 1234 tokens; déjà vu!"
        root = self.config.base_url[: -len("/v1")] if self.config.base_url.endswith("/v1") else self.config.base_url
        r = httpx.post(f"{root}/tokenize", json={"model": self.config.model, "prompt": probe, "add_special_tokens": False},
                       headers=self._headers, timeout=30.0)
        if r.status_code != 200:
            raise EndpointError(f"{where}: POST {root}/tokenize answered {error_message(r.status_code, r.content)}; KD needs it "
                                f"to check the server's tokenizer against {local!r}")
        theirs = r.json().get("tokens")
        ours = tokenizer_for(local).encode(probe, add_special_tokens=False)
        if theirs != ours:
            raise EndpointError(f"{where}: the server's tokenizer differs from {local!r} (a probe is {len(theirs)} tokens "
                                f"there, {len(ours)} here); KD ids would not line up; set endpoint.tokenizer")

    @property
    def holds_format(self) -> bool:
        """Can a judge's output be held to its format (vLLM's structured outputs)? If not, the
        judge parses free text and asks again once when it does not parse."""
        return self.config.structured_outputs == "vllm" or (self.config.structured_outputs == "auto" and self.server == "vllm")

    def count_prompt_tokens(self, conversations: list[list[dict]]) -> list[int]:
        """Prompt lengths with the local tokenizer's chat template; 0 each without one (the
        server then rejects what does not fit, and the row is quarantined with its reason)."""
        if self.tokenizer is None:
            return [0] * len(conversations)
        return [len(self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False))
                for c in conversations]

    def chat(self, conversations: list[list[dict]], sampling: dict, regex: str | None = None,
             choice: list[str] | None = None, continue_final: bool = False) -> list[list[dict]]:
        """Per conversation, its n completions (the engine's rows), or `[{"error": why}]`."""
        if not conversations:
            return []
        n = int(sampling.get("n") or 1)
        kd_k = int(sampling.get("kd_top_k") or 0)
        first_k = int(sampling.get("logprobs") or 0)
        structured = self.holds_format
        bodies = [request_body(self.config.model, conv, sampling, regex, choice, continue_final, structured,
                               token_ids=self.server == "vllm") for conv in conversations]
        counted = self.count_prompt_tokens(conversations) if self.tokenizer is not None else [None] * len(bodies)
        to_id = None if self.server == "vllm" else self._to_id
        return self._pool.submit(asyncio.run, self._send_all(bodies, counted, n, kd_k, first_k, to_id)).result()

    def answer_raw(self, bodies: list[dict]) -> list[dict]:
        """Send ready request bodies; per body, the server's JSON answer or {"error": why} (benchmarks)."""
        return self._pool.submit(asyncio.run, self._send_all(bodies, [None] * len(bodies), 0, 0, 0, None, raw=True)).result()

    async def _send_all(self, bodies, counted, n, kd_k, first_k, to_id, raw=False) -> list:
        """Every body through `lanes` (max_concurrency, fewer for a small batch): a lane holds
        one slot of the endpoint's shared limit while it works through the queue, so the
        Prefect API is asked once per lane, not once per request."""
        import httpx

        c = self.config
        self._rpm = _Bucket(c.requests_per_minute) if c.requests_per_minute else None
        self._tpm = _Bucket(c.tokens_per_minute) if c.tokens_per_minute else None
        self._rng = random.Random()
        timeout = httpx.Timeout(c.timeout_seconds, connect=min(30.0, c.timeout_seconds))
        lanes = min(c.max_concurrency, len(bodies))
        limits = httpx.Limits(max_connections=lanes, max_keepalive_connections=lanes)
        results: list = [None] * len(bodies)
        queue = list(range(len(bodies)))[::-1]

        async def lane(client):
            async with AsyncExitStack() as held:
                if self.shared:
                    from prefect.concurrency.asyncio import concurrency

                    await held.enter_async_context(concurrency(c.limit_name(), occupy=1, lease_duration=c.timeout_seconds + 60))
                while queue:
                    i = queue.pop()
                    results[i] = await self._one(client, bodies[i], counted[i], n, kd_k, first_k, to_id, raw)

        async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=self._headers) as client:
            await asyncio.gather(*(lane(client) for _ in range(lanes)))
        return results

    async def _one(self, client, body: dict, prompt_tokens, n, kd_k, first_k, to_id, raw):
        import httpx

        c, url = self.config, f"{self.config.base_url}/chat/completions"
        failures, malformed, last = 0, 0, ""
        while True:
            retry_after = None
            await self._paced(estimated_tokens(body, prompt_tokens))
            self.requests += 1
            try:
                r = await client.post(url, json=body)
            except httpx.TimeoutException:
                last = f"no answer within {c.timeout_seconds:g} s"
                r = None
            except httpx.HTTPError as err:
                last = f"{err.__class__.__name__}: {str(err)[:200] or 'connection failed'}"
                r = None
            if r is not None:
                if r.status_code == 200:
                    try:
                        return r.json() if raw else parse_answer(r.content, n, kd_k, to_id, first_k)
                    except (MalformedAnswer, ValueError) as err:
                        malformed += 1
                        if malformed > MALFORMED_RETRIES:
                            return [{"error": f"malformed answer after {malformed} tries: {err}"}]
                        await asyncio.sleep(self._rng.uniform(0, c.backoff_seconds))
                        continue
                if r.status_code != 429 and r.status_code < 500:
                    return [{"error": error_message(r.status_code, r.content)}]  # the request's own fault
                last, retry_after = error_message(r.status_code, r.content), r.headers.get("retry-after")
            failures += 1
            if failures > c.max_retries:
                raise EndpointError(f"{self.label} ({c.shown()}): request failed after {c.max_retries} retries: {last}; "
                                    f"rerun when the server is back: answered batches are not sent again")
            delay = retry_delay(failures - 1, retry_after, c.backoff_seconds, self._rng)
            log.warning("%s: %s; retry %d of %d in %.1f s", self.label, last, failures, c.max_retries, delay)
            await asyncio.sleep(delay)

    async def _paced(self, tokens: int) -> None:
        if self._rpm is not None:
            await self._rpm.take(1)
        if self._tpm is not None:
            await self._tpm.take(tokens)
        if self.shared and (self.config.requests_per_minute or self.config.tokens_per_minute):
            from prefect.concurrency.asyncio import rate_limit

            name = self.config.limit_name()
            if self.config.requests_per_minute:
                await rate_limit(f"{name}-rpm", occupy=1)
            if self.config.tokens_per_minute:
                await rate_limit(f"{name}-tpm", occupy=min(tokens, self.config.tokens_per_minute))

    def _to_id(self, entry: dict) -> int:
        if self.tokenizer is None:
            raise MalformedAnswer("logprob tokens come as text; set endpoint.tokenizer to map them to ids")
        return id_by_bytes(self.config.tokenizer)(entry)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


@lru_cache(maxsize=4)
def id_by_bytes(tokenizer: str):
    """`entry -> token id` for logprob entries named by text and bytes (OpenAI), through a
    local tokenizer's vocabulary keyed by token bytes (byte-level BPE); `token_id:N` entries
    (vLLM) are read as they are."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    from distillery.adapters.engine import tokenizer_for
    from distillery.endpoints import TOKEN_ID_PREFIX, token_id

    decoder = {u: b for b, u in bytes_to_unicode().items()}
    table: dict[bytes, int] = {}
    for token, tid in tokenizer_for(tokenizer).get_vocab().items():
        try:
            table.setdefault(bytes(decoder[ch] for ch in token), tid)
        except KeyError:
            table.setdefault(token.encode(), tid)

    def to_id(entry: dict) -> int:
        if str(entry.get("token", "")).startswith(TOKEN_ID_PREFIX):
            return token_id(entry)
        raw = bytes(entry["bytes"]) if entry.get("bytes") is not None else str(entry.get("token", "")).encode()
        if raw not in table:
            raise MalformedAnswer(f"logprob token {raw[:40]!r} is not in the local tokenizer {tokenizer!r}")
        return table[raw]

    return to_id


def _ensure_shared_limits(config: EndpointConfig) -> bool:
    """Create or update the endpoint's Prefect global limits (concurrency; rpm and tpm as
    rate limits with slot decay). False when no Prefect API answers: local limits only."""
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
        from prefect.exceptions import ObjectNotFound
    except ImportError:
        return False
    name = config.limit_name()
    wanted = [(name, config.max_concurrency, 0.0)]
    if config.requests_per_minute:
        wanted.append((f"{name}-rpm", config.requests_per_minute, config.requests_per_minute / 60.0))
    if config.tokens_per_minute:
        wanted.append((f"{name}-tpm", config.tokens_per_minute, config.tokens_per_minute / 60.0))
    try:
        with get_client(sync_client=True) as client:
            for limit_name, limit, decay in wanted:
                try:
                    found = client.read_global_concurrency_limit_by_name(limit_name)
                except ObjectNotFound:
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(
                        name=limit_name, limit=limit, slot_decay_per_second=decay))
                    continue
                if found.limit != limit or (found.slot_decay_per_second or 0.0) != decay or not found.active:
                    client.update_global_concurrency_limit(limit_name, GlobalConcurrencyLimitUpdate(
                        limit=limit, slot_decay_per_second=decay, active=True))
    except Exception as err:  # no API (a bare benchmark): this process's limits still hold
        log.warning("endpoint limits for %s are local to this process: the Prefect API did not answer (%s)",
                    name, err.__class__.__name__)
        return False
    return True


_clients: dict[EndpointSpec, EndpointEngine] = {}
_lock = threading.Lock()


def get_endpoint(spec: EndpointSpec) -> EndpointEngine:
    """The process's client for `spec`, opened (and checked) on first use."""
    with _lock:
        if spec not in _clients:
            _clients[spec] = EndpointEngine(spec)
        return _clients[spec]


def close_endpoints() -> None:
    with _lock:
        while _clients:
            _clients.popitem()[1].close()
