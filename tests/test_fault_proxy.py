"""The fault proxy the endpoint tests put in front of a real server: it passes requests on
unchanged, fails chat requests in the planned ways, and counts what it did. A tiny HTTP
server here stands in for the upstream; httpx is the client."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from endpoints import EMPTY_COMPLETION, FAULT_KINDS, FaultProxy, body_sha256

COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "tiny",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def chat(content: str = "Say hi") -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 8}


class Upstream:
    """A small real HTTP/1.1 server: chat completions get COMPLETION (tagged with `tag`),
    /v1/models a list, and /v1/echo what it was sent."""

    def __init__(self, tag: str = "a"):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def log_message(self, *args):
                pass

            def _answer(self, status: int, payload: dict, **headers: str) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Upstream", outer.tag)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _stream(self, pieces: list[str]) -> None:
                """Server-sent events in chunks of their own, a little apart, as vLLM streams."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                events = [{"choices": [{"index": 0, "delta": {"content": piece}}]} for piece in pieces]
                for data in [*(json.dumps(e) for e in events), "[DONE]"]:
                    chunk = f"data: {data}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    time.sleep(0.05)
                self.wfile.write(b"0\r\n\r\n")

            def do_GET(self):
                if self.path.startswith("/v1/models"):
                    self._answer(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})
                elif self.path.startswith("/v1/echo") or self.path.startswith("/health"):
                    self._answer(200, {"method": "GET", "path": self.path, "headers": dict(self.headers)})
                else:
                    self._answer(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = self._body()
                if self.path == "/v1/chat/completions" and json.loads(body).get("stream"):
                    self._stream(["hi", " there"])
                elif self.path == "/v1/chat/completions":
                    outer.chat_bodies.append(json.loads(body))
                    self._answer(200, {**COMPLETION, "id": f"chatcmpl-{outer.tag}"})
                elif self.path.startswith("/v1/echo"):
                    self._answer(201, {"method": "POST", "path": self.path, "headers": dict(self.headers),
                                       "body": body.decode()}, **{"X-Custom-Answer": "yes"})
                else:
                    self._answer(404, {"error": {"message": "not found"}})

        self.tag = tag
        self.chat_bodies: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture(scope="module")
def upstream():
    server = Upstream("a")
    yield server
    server.stop()


@pytest.fixture
def client():
    with httpx.Client(timeout=10) as c:
        yield c


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_requests_pass_through_unchanged(upstream, client):
    with FaultProxy(upstream.base_url) as proxy:
        models = client.get(f"{proxy.base_url}/models")
        assert models.status_code == 200 and models.json()["data"][0]["id"] == "tiny"

        echo = client.post(f"{proxy.base_url}/echo?x=1", content=b'{"raw": true}',
                           headers={"X-Test": "42", "Authorization": "Bearer k", "Content-Type": "application/json"})
        assert echo.status_code == 201
        assert echo.headers["X-Custom-Answer"] == "yes" and echo.headers["X-Upstream"] == "a"
        seen = echo.json()
        assert seen["method"] == "POST" and seen["path"] == "/v1/echo?x=1" and seen["body"] == '{"raw": true}'
        assert seen["headers"]["X-Test"] == "42" and seen["headers"]["Authorization"] == "Bearer k"
        assert seen["headers"]["Host"] != f"127.0.0.1:{proxy.port}"  # the proxy's Host is not passed on

        body = chat("pass through")
        answer = client.post(f"{proxy.base_url}/chat/completions", json=body)
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "hi"
        assert upstream.chat_bodies[-1] == body
        assert proxy.seen == [("forwarded", body_sha256(body))]
        assert proxy.forwarded_bodies() == {body_sha256(body): 1}
        assert not proxy.faults()


def test_a_stream_is_passed_on_event_by_event(upstream):
    with FaultProxy(upstream.base_url) as proxy, httpx.Client(timeout=10) as c, \
            c.stream("POST", f"{proxy.base_url}/chat/completions", json={**chat(), "stream": True}) as answer:
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "text/event-stream"
        lines = [line for line in answer.iter_lines() if line]
    assert [json.loads(line[6:])["choices"][0]["delta"]["content"] for line in lines[:-1]] == ["hi", " there"]
    assert lines[-1] == "data: [DONE]"
    assert proxy.forwarded_bodies() == {body_sha256({**chat(), "stream": True}): 1}


def test_a_429_says_when_to_retry(upstream, client):
    with FaultProxy(upstream.base_url, {"429": 1.0}, retry_after=2, max_faults_per_body=None) as proxy:
        before = len(upstream.chat_bodies)
        answer = client.post(f"{proxy.base_url}/chat/completions", json=chat())
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "2"
        assert answer.json()["error"]["code"] == 429
        assert len(upstream.chat_bodies) == before  # not forwarded
        assert proxy.faults() == {"429": 1} and not proxy.forwarded_bodies()


def test_a_500_is_a_json_error(upstream, client):
    with FaultProxy(upstream.base_url, {"500": 1.0}, max_faults_per_body=None) as proxy:
        answer = client.post(f"{proxy.base_url}/chat/completions", json=chat())
        assert answer.status_code == 500 and answer.json()["error"]["code"] == 500
        assert proxy.seen == [("500", body_sha256(chat()))]


def test_a_drop_is_a_connection_error_not_a_response(upstream, client):
    with FaultProxy(upstream.base_url, {"drop": 1.0}, max_faults_per_body=None) as proxy:
        for _ in range(2):  # a kept-alive connection too
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
                client.post(f"{proxy.base_url}/chat/completions", json=chat())
        assert client.get(f"{proxy.base_url}/models").status_code == 200  # the proxy itself lives on
        assert proxy.faults() == {"drop": 2}


def test_a_stall_outlasts_the_client_timeout_and_stop_does_not_wait_for_it(upstream):
    with FaultProxy(upstream.base_url, {"stall": 1.0}, stall_seconds=10, max_faults_per_body=None) as proxy:
        with httpx.Client(timeout=1) as c, pytest.raises(httpx.ReadTimeout):  # not the 504 at the stall's end
            c.post(f"{proxy.base_url}/chat/completions", json=chat())
        # One the client does not give up on: still in its stall when the proxy stops.
        hung = threading.Thread(target=lambda: _post_quietly(f"{proxy.base_url}/chat/completions"), daemon=True)
        hung.start()
        deadline = time.monotonic() + 5
        while len(proxy.seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5  # not the 10 s stall
    assert proxy.faults() == {"stall": 2}
    hung.join(5)


def _post_quietly(url: str) -> None:
    try:
        httpx.post(url, json=chat("stalled"), timeout=30)
    except httpx.HTTPError:
        pass


def test_malformed_and_empty_answers(upstream, client):
    with FaultProxy(upstream.base_url, {"malformed": 1.0}, max_faults_per_body=None) as proxy:
        answer = client.post(f"{proxy.base_url}/chat/completions", json=chat())
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
        with pytest.raises(json.JSONDecodeError):
            json.loads(answer.text)
    with FaultProxy(upstream.base_url, {"empty": 1.0}, max_faults_per_body=None) as proxy:
        answer = client.post(f"{proxy.base_url}/chat/completions", json=chat())
        assert answer.status_code == 200 and answer.json() == EMPTY_COMPLETION


def test_a_bad_request_is_rejected_every_time_and_never_forwarded(upstream, client):
    is_bad = lambda body: body["messages"][0]["content"] == "poison"  # noqa: E731
    with FaultProxy(upstream.base_url, {"500": 0.5}, bad_request_when=is_bad, max_faults_per_body=2) as proxy:
        for _ in range(4):
            answer = client.post(f"{proxy.base_url}/chat/completions", json=chat("poison"))
            assert answer.status_code == 400
            error = answer.json()["error"]
            assert error["type"] == "BadRequestError" and error["code"] == 400 and error["message"]
        assert proxy.faults()["400"] == 4
        assert body_sha256(chat("poison")) not in proxy.forwarded_bodies()
        assert chat("poison") not in upstream.chat_bodies


def test_one_body_fails_at_most_max_faults_per_body_times(upstream, client):
    with FaultProxy(upstream.base_url, {"500": 1.0}, max_faults_per_body=2) as proxy:
        url = f"{proxy.base_url}/chat/completions"
        assert [client.post(url, json=chat("one")).status_code for _ in range(4)] == [500, 500, 200, 200]
        assert client.post(url, json=chat("two")).status_code == 500
        assert proxy.forwarded_bodies() == {body_sha256(chat("one")): 2}
        assert proxy.faults() == {"500": 3}


def test_the_plan_shares_are_honoured_and_the_draws_repeat_with_the_seed(upstream):
    plan = {"429": 0.15, "500": 0.1, "drop": 0.05, "malformed": 0.05, "empty": 0.1}
    n, runs = 200, []
    for _ in range(2):
        with FaultProxy(upstream.base_url, plan, seed=7, max_faults_per_body=None) as proxy, \
                httpx.Client(timeout=10) as c:
            for i in range(n):
                try:
                    c.post(f"{proxy.base_url}/chat/completions", json=chat(f"request {i}"))
                except httpx.TransportError:
                    pass  # the drops
            runs.append(proxy.seen)
            faults, forwarded = proxy.faults(), proxy.forwarded_bodies()
    assert runs[0] == runs[1]  # the same seed, the same faults for the same requests
    for kind, share in plan.items():
        spread = 4 * math.sqrt(n * share * (1 - share)) + 1
        assert abs(faults[kind] - n * share) <= spread, (kind, faults)
    assert sum(forwarded.values()) == n - sum(faults.values())
    assert [kind for kind, _ in runs[0]].count("forwarded") == sum(forwarded.values())


def test_set_upstream_repoints_the_proxy(upstream, client):
    other = Upstream("b")
    try:
        with FaultProxy(upstream.base_url) as proxy:
            url = f"{proxy.base_url}/chat/completions"
            assert client.post(url, json=chat()).json()["id"] == "chatcmpl-a"
            proxy.set_upstream(other.base_url)
            assert client.post(url, json=chat()).json()["id"] == "chatcmpl-b"
            assert proxy.forwarded_bodies() == {body_sha256(chat()): 2}
    finally:
        other.stop()


def test_an_unreachable_upstream_is_a_502_and_stop_closes_everything(client):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there
    proxy = FaultProxy(f"http://127.0.0.1:{port}/v1").start()
    thread, proxy_port = proxy._thread, proxy.port
    answer = client.post(f"{proxy.base_url}/chat/completions", json=chat())
    assert answer.status_code == 502 and answer.json()["error"]["code"] == 502
    assert not proxy.forwarded_bodies()
    proxy.stop()
    assert not thread.is_alive() and not accepts(proxy_port)
    proxy.stop()  # a second stop is harmless


def test_unknown_kinds_and_oversized_plans_are_refused():
    with pytest.raises(ValueError):
        FaultProxy("http://127.0.0.1:1/v1", {"teapot": 0.1})
    with pytest.raises(ValueError):
        FaultProxy("http://127.0.0.1:1/v1", {"429": 0.7, "500": 0.7})
    assert set(FAULT_KINDS) == {"429", "500", "drop", "stall", "malformed", "empty"}
