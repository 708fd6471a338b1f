"""The endpoint client against real HTTP: a small upstream server here (it answers each chat
request with its prompt, checks the key, and counts requests in flight), and the fault
proxy in front of it. No model: what is under test is the client's retries, limits,
quarantine and key handling. The same client against `vllm serve` is in
test_endpoint_e2e.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from distillery.adapters.endpoint import EndpointEngine, EndpointError, EndpointSpec, _Bucket
from distillery.endpoints import EndpointConfig
from endpoints import FaultProxy

KEY = "sk-test-0123456789abcdef"


class Upstream:
    """Chat completions answer "echo: <last message>" after `delay` seconds; requests without
    the key get 401; `inflight_max` is the most requests it held at once."""

    def __init__(self, delay: float = 0.0, key: str | None = KEY):
        outer = self
        self.delay, self.key = delay, key
        self.lock = threading.Lock()
        self.inflight = self.inflight_max = self.chats = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if outer.key and self.headers.get("Authorization") != f"Bearer {outer.key}":
                    self._answer(401, {"error": {"message": "Incorrect API key provided", "code": 401}})
                    return False
                return True

            def do_GET(self):
                if self._authorized():
                    self._answer(200, {"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "test"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if not self._authorized():
                    return
                with outer.lock:
                    outer.chats += 1
                    outer.inflight += 1
                    outer.inflight_max = max(outer.inflight_max, outer.inflight)
                try:
                    time.sleep(outer.delay)
                    text = "echo: " + body["messages"][-1]["content"]
                    choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                               for i in range(body.get("n", 1))]
                    self._answer(200, {"id": "c", "object": "chat.completion", "choices": choices,
                                       "usage": {"prompt_tokens": 5, "completion_tokens": 2 * body.get("n", 1)}})
                finally:
                    with outer.lock:
                        outer.inflight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("TEST_ENDPOINT_KEY", KEY)


def client(base_url: str, **config) -> EndpointEngine:
    settings = {"base_url": base_url, "model": "tiny", "api_key_env": "TEST_ENDPOINT_KEY", "max_retries": 4,
                "backoff_seconds": 0.05, "timeout_seconds": 5.0, **config}
    return EndpointEngine(EndpointSpec.of("teacher 'teacher'", EndpointConfig(**settings)), shared_limits=False)


def convs(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"prompt {i}"}] for i in range(n)]


GREEDY = {"n": 1, "temperature": 0.0, "max_tokens": 8, "seed": 0}


def test_answers_come_back_in_order_with_lanes_bounded(upstream, key):
    upstream.delay = 0.05
    engine = client(upstream.base_url, max_concurrency=3)
    done = engine.chat(convs(24), GREEDY)
    assert [d[0]["response"] for d in done] == [f"echo: prompt {i}" for i in range(24)]
    assert upstream.chats == 24 == engine.requests
    assert upstream.inflight_max == 3  # lanes: never more than max_concurrency in flight, and that many used
    assert KEY not in repr(engine)
    sampled = engine.chat(convs(2), {**GREEDY, "n": 3, "temperature": 0.7})
    assert [len(d) for d in sampled] == [3, 3] and [s["sample_index"] for s in sampled[0]] == [0, 1, 2]


def test_faults_are_retried_and_every_row_answered_once(upstream, key):
    plan = {"429": 0.15, "500": 0.15, "drop": 0.1, "stall": 0.05, "malformed": 0.05, "empty": 0.05}
    with FaultProxy(upstream.base_url, plan, seed=3, retry_after=0.2, stall_seconds=3.0, max_faults_per_body=3) as proxy:
        engine = client(proxy.base_url, max_concurrency=4, timeout_seconds=1.0, max_retries=6)
        done = engine.chat(convs(60), GREEDY)
        faults = proxy.faults()
        forwarded = proxy.forwarded_bodies()
    assert [d[0]["response"] for d in done] == [f"echo: prompt {i}" for i in range(60)]
    assert all(faults[kind] > 0 for kind in plan), faults  # every planned fault happened
    assert len(forwarded) == 60 and set(forwarded.values()) == {1}  # each answered exactly once upstream
    assert engine.requests == 60 + sum(faults.values())


def test_retry_after_is_waited_for(upstream, key):
    with FaultProxy(upstream.base_url, {"429": 1.0}, retry_after=1.5, max_faults_per_body=1) as proxy:
        engine = client(proxy.base_url)
        started = time.monotonic()
        done = engine.chat(convs(1), GREEDY)
        waited = time.monotonic() - started
    assert done[0][0]["response"] == "echo: prompt 0"
    assert waited >= 1.5  # the server's Retry-After, not the 0.05 s backoff


def test_a_bad_request_is_quarantined_with_the_servers_reason_and_not_retried(upstream, key):
    bad = lambda body: body["messages"][-1]["content"] == "prompt 2"
    with FaultProxy(upstream.base_url, bad_request_when=bad) as proxy:
        engine = client(proxy.base_url)
        done = engine.chat(convs(4), GREEDY)
        seen = [kind for kind, _ in proxy.seen]
    assert len(done[2]) == 1 and done[2][0]["error"].startswith("HTTP 400: ")
    assert [d[0]["response"] for i, d in enumerate(done) if i != 2] == ["echo: prompt 0", "echo: prompt 1", "echo: prompt 3"]
    assert seen.count("400") == 1 and engine.requests == 4  # once, no retry


def test_answers_malformed_every_time_are_quarantined_after_retries(upstream, key):
    with FaultProxy(upstream.base_url, {"malformed": 1.0}, max_faults_per_body=None) as proxy:
        engine = client(proxy.base_url)
        done = engine.chat(convs(2), GREEDY)
        assert proxy.faults()["malformed"] == 6  # 3 tries each
    assert all(d[0]["error"].startswith("malformed answer after 3 tries: answer is not JSON") for d in done)
    with FaultProxy(upstream.base_url, {"empty": 1.0}, max_faults_per_body=None) as proxy:
        done = client(proxy.base_url).chat(convs(1), GREEDY)
    assert done[0][0]["error"] == "malformed answer after 3 tries: answer has no choices"


def test_a_server_that_keeps_failing_fails_the_batch_in_one_line(upstream, key):
    with FaultProxy(upstream.base_url, {"500": 1.0}, max_faults_per_body=None) as proxy:
        engine = client(proxy.base_url, max_retries=2)
        with pytest.raises(EndpointError) as err:
            engine.chat(convs(1), GREEDY)
        assert proxy.faults()["500"] == 3  # the first try and 2 retries
    message = str(err.value)
    assert "\n" not in message and proxy.base_url in message and "after 2 retries: HTTP 500" in message
    assert KEY not in message


def test_before_any_request_unreachable_wrong_key_and_wrong_model_fail_clearly(upstream, key, monkeypatch):
    with pytest.raises(EndpointError, match=r"cannot reach http://127.0.0.1:9/v1 \(ConnectError\)"):
        client("http://127.0.0.1:9/v1")
    monkeypatch.setenv("TEST_ENDPOINT_KEY", "sk-wrong-key-999")
    with pytest.raises(EndpointError) as err:
        client(upstream.base_url)
    assert "refused the API key (HTTP 401: Incorrect API key provided)" in str(err.value)
    assert "sk-wrong-key-999" not in str(err.value) and upstream.base_url in str(err.value)
    monkeypatch.setenv("TEST_ENDPOINT_KEY", KEY)
    with pytest.raises(EndpointError, match=r"does not serve 'gpt-4o'; it serves \['tiny'\]"):
        client(upstream.base_url, model="gpt-4o")
    monkeypatch.delenv("TEST_ENDPOINT_KEY")
    with pytest.raises(EndpointError, match="environment variable TEST_ENDPOINT_KEY is not set"):
        client(upstream.base_url)
    assert upstream.chats == 0


def test_a_rate_bucket_paces_past_its_burst():
    async def take(n: int) -> float:
        bucket = _Bucket(120)  # 2 a second, a burst of 120
        started = time.monotonic()
        for _ in range(n):
            await bucket.take(1)
        return time.monotonic() - started

    assert asyncio.run(take(120)) < 0.5
    assert 0.9 <= asyncio.run(take(122)) < 3.0  # two past the burst: one second


def test_the_concurrency_limit_holds_across_clients_through_prefect(upstream, key):
    """Two clients (as two flow runs would have) of one endpoint with max_concurrency 2:
    together never more than 2 requests in flight, through the Prefect global concurrency
    limit named after the endpoint; each alone would use 2."""
    from prefect.client.orchestration import get_client

    upstream.delay = 0.1
    config = EndpointConfig(base_url=upstream.base_url, model="tiny", api_key_env="TEST_ENDPOINT_KEY", max_concurrency=2,
                            backoff_seconds=0.05)
    engines = [EndpointEngine(EndpointSpec.of(f"teacher 'run{i}'", config)) for i in range(2)]
    assert all(e.shared for e in engines)
    with get_client(sync_client=True) as prefect:
        limit = prefect.read_global_concurrency_limit_by_name(config.limit_name())
    assert limit.limit == 2 and limit.active
    done: list = [None, None]
    threads = [threading.Thread(target=lambda i=i: done.__setitem__(i, engines[i].chat(convs(8), GREEDY))) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [len(d) for d in done] == [8, 8] and upstream.chats == 16
    assert upstream.inflight_max == 2
