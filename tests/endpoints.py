"""Real OpenAI-compatible endpoints for the tests (helpers, not a test module).

`VllmServer` starts vLLM's own OpenAI-compatible server (`vllm serve`, through
`python -m distillery.vllm_cli` so the CPU wheel works too) on 127.0.0.1, in a process
group of its own that `procs` tracks; `run_batch` runs `vllm run-batch` on an OpenAI
batch file. `FaultProxy` is a real HTTP reverse proxy on 127.0.0.1 in front of such an
endpoint that fails a planned share of chat requests in the ways a remote endpoint
fails (429 with Retry-After, 500, a dropped connection, a stall, a malformed or empty
answer, a deterministic 400), and counts what it did.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import procs

# ------------------------------------------------------------------------------------ vLLM


def vllm_env() -> dict[str, str]:
    """The environment vLLM's CLI runs in for the tests: a small KV cache, quiet, no telemetry."""
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB
    env["VLLM_NO_USAGE_STATS"] = "1"
    env["DO_NOT_TRACK"] = "1"
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    return env


def _engine_args(name: str, max_model_len: int) -> list[str]:
    return ["--served-model-name", name, "--dtype", "bfloat16", "--max-model-len", str(max_model_len), "--seed", "0"]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _get_json(url: str, timeout: float = 5, api_key: str | None = None) -> tuple[int, object]:
    """(status, parsed JSON body or None); status 0 when nothing answered."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, None


class VllmServer:
    """`vllm serve MODEL_DIR` on 127.0.0.1:port, serving the model as `name`.

    `start()` returns once /health answers 200 and /v1/models lists `name`; `stop()` kills
    the whole process group and waits until the port is closed. Pass `port` to restart on
    the same port; `lasting=True` for a server a session/module fixture shares (see procs).
    """

    def __init__(self, model_dir: str | Path, name: str, log_path: str | Path, port: int | None = None,
                 max_model_len: int = 2048, extra_args: list[str] | tuple[str, ...] = (), lasting: bool = False,
                 api_key: str | None = None):
        self.model_dir = str(model_dir)
        self.name = name
        self.log_path = Path(log_path)
        self.port = port if port is not None else procs.free_port()
        self.max_model_len = max_model_len
        self.extra_args = list(extra_args)
        self.lasting = lasting
        self.api_key = api_key  # the key the server was started with (--api-key in extra_args), for its readiness check
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "distillery.vllm_cli", "serve", self.model_dir,
                "--host", "127.0.0.1", "--port", str(self.port),
                *_engine_args(self.name, self.max_model_len), *self.extra_args]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 600) -> "VllmServer":
        if self.running():
            return self
        if _accepts(self.port):
            raise RuntimeError(f"port {self.port} already accepts connections: something else listens there")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = procs.spawn(self.command(), lasting=self.lasting, stdout=self._log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=vllm_env())
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise RuntimeError(f"vLLM server exited with {code} before it was ready; "
                                   f"last lines of {self.log_path}:\n{_tail(self.log_path)}")
            if self.ready():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"vLLM server on port {self.port} not ready after {timeout:.0f} s; "
                                   f"last lines of {self.log_path}:\n{_tail(self.log_path)}")
            time.sleep(1)

    def ready(self) -> bool:
        status, _ = _get_json(f"{self.origin}/health")
        if status != 200:
            return False
        status, models = _get_json(f"{self.base_url}/models", api_key=self.api_key)
        return status == 200 and isinstance(models, dict) and any(
            m.get("id") == self.name for m in models.get("data", []))

    def stop(self, timeout: float = 60) -> None:
        if self.proc is not None:
            procs.kill(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        deadline = time.monotonic() + timeout
        while _accepts(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} still accepts connections {timeout:.0f} s after the server was killed")
            time.sleep(0.2)

    def __enter__(self) -> "VllmServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_batch(model_dir: str | Path, name: str, input_path: str | Path, output_path: str | Path,
              log_path: str | Path, timeout: float = 900, max_model_len: int = 2048,
              extra_args: list[str] | tuple[str, ...] = ()) -> list[dict]:
    """`vllm run-batch` on an OpenAI batch file (one request a line); its output lines, parsed.

    The command's stdout and stderr go to `log_path`; a non-zero exit raises with their tail."""
    cmd = [sys.executable, "-m", "distillery.vllm_cli", "run-batch", "-i", str(input_path), "-o", str(output_path),
           "--model", str(model_dir), *_engine_args(name, max_model_len), *extra_args]
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = procs.run(cmd, timeout=timeout, env=vllm_env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(f"vllm run-batch did not finish in {timeout:.0f} s") from exc
    log_path.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"vllm run-batch exited with {done.returncode}; last lines of {log_path}:\n{_tail(log_path)}")
    return [json.loads(line) for line in Path(output_path).read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------- the proxy

FAULT_KINDS = ("429", "500", "drop", "stall", "malformed", "empty")
CHAT_PATH = "/v1/chat/completions"
# Not passed on either way: hop-by-hop headers, and the ones the proxy sets itself.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
               "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
EMPTY_COMPLETION = {"id": "x", "object": "chat.completion", "choices": [],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def body_sha256(body: object) -> str:
    """The sha256 of a request body's canonical JSON (json.dumps(body, sort_keys=True))."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _error(status: int, message: str, type_: str) -> dict:
    return {"error": {"message": message, "type": type_, "code": status}}


class FaultProxy:
    """A reverse proxy on 127.0.0.1 (aiohttp, its own event loop in a daemon thread) in front of
    `upstream` (a base URL such as "http://127.0.0.1:8000/v1").

    Every request is passed on unchanged, except POSTs to /v1/chat/completions: a JSON body
    matching `bad_request_when` is answered 400 every time, and otherwise a fault is drawn
    from `plan` (a share per kind of FAULT_KINDS; the rest is forwarded) with a
    random.Random(seed). After `max_faults_per_body` faults for one body (None: no cap),
    that body is forwarded. What happened to each chat request is in `seen`."""

    def __init__(self, upstream: str, plan: dict[str, float] | None = None, seed: int = 0, *,
                 retry_after: float = 1, stall_seconds: float = 30.0,
                 bad_request_when: Callable[[dict], bool] | None = None,
                 max_faults_per_body: int | None = 2, port: int | None = None):
        plan = dict(plan or {})
        unknown = set(plan) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        if any(share < 0 for share in plan.values()) or sum(plan.values()) > 1 + 1e-9:
            raise ValueError(f"fault shares must be >= 0 and sum to at most 1: {plan}")
        self.plan = plan
        self.seed = seed
        self.retry_after = retry_after
        self.stall_seconds = stall_seconds
        self.bad_request_when = bad_request_when
        self.max_faults_per_body = max_faults_per_body
        self._requested_port = port or 0
        self.port: int | None = None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._seen: list[tuple[str, str]] = []
        self._forwarded: collections.Counter = collections.Counter()
        self._faults_per_body: collections.Counter = collections.Counter()
        self.set_upstream(upstream)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None
        self._session = None
        self._closing: asyncio.Event | None = None

    # -- the test thread's side

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def set_upstream(self, url: str) -> None:
        """Point the proxy at another upstream base URL (taken as ".../v1" when it has no path)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) base URL: {url!r}")
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            self._origin = origin
            self._base = origin + (parts.path.rstrip("/") or "/v1")

    @property
    def seen(self) -> list[tuple[str, str]]:
        """(kind, body sha256) per chat request in arrival order; kind "forwarded" or a fault kind or "400"."""
        with self._lock:
            return list(self._seen)

    def forwarded_bodies(self) -> collections.Counter:
        """sha256 of the canonical JSON body -> times it was forwarded and answered 200 upstream."""
        with self._lock:
            return collections.Counter(self._forwarded)

    def faults(self) -> collections.Counter:
        """Fault kind ("429", ..., "400") -> how many chat requests got it."""
        with self._lock:
            return collections.Counter(kind for kind, _ in self._seen if kind != "forwarded")

    def start(self, timeout: float = 30) -> "FaultProxy":
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._setup())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                self._loop.close()
                return
            ready.set()
            try:
                self._loop.run_forever()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=serve, name=f"fault-proxy-{id(self):x}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("the fault proxy did not start")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self, timeout: float = 30) -> None:
        if self._thread is None:
            return
        loop = self._loop
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("the fault proxy's thread did not end")
            self._thread = None
            self._loop = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the loop's side

    async def _setup(self) -> None:
        import aiohttp
        from aiohttp import web

        self._closing = asyncio.Event()
        # No overall timeout upstream: the client decides how long it waits. Bodies are passed
        # on as they are (no decompression), with their Content-Encoding.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None),
                                              auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a handler stops when its client goes away (a stalled one too).
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._requested_port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        self._closing.set()  # wakes stalled handlers
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _target(self, path_qs: str) -> str:
        with self._lock:
            base, origin = self._base, self._origin
        if path_qs == "/v1" or path_qs.startswith(("/v1/", "/v1?")):
            return base + path_qs[3:]
        return origin + path_qs

    def _draw(self, sha: str) -> str:
        with self._lock:
            r, kind, edge = self._rng.random(), "forwarded", 0.0
            for name, share in self.plan.items():
                edge += share
                if r < edge:
                    kind = name
                    break
            if kind != "forwarded":
                if self.max_faults_per_body is not None and self._faults_per_body[sha] >= self.max_faults_per_body:
                    kind = "forwarded"
                else:
                    self._faults_per_body[sha] += 1
            return kind

    def _record(self, kind: str, sha: str) -> None:
        with self._lock:
            self._seen.append((kind, sha))

    async def _handle(self, request):
        from aiohttp import web

        raw = await request.read()
        if request.method != "POST" or request.path != CHAT_PATH:
            return await self._forward(request, raw, None)
        try:
            body = json.loads(raw)
            sha = body_sha256(body)
        except ValueError:
            body, sha = None, hashlib.sha256(raw).hexdigest()
        if isinstance(body, dict) and self.bad_request_when is not None and self.bad_request_when(body):
            self._record("400", sha)
            return web.json_response(_error(400, "the fault proxy rejects this request body: it matches the "
                                                 "test's bad_request_when rule (an invalid request)",
                                            "BadRequestError"), status=400)
        kind = self._draw(sha)
        self._record(kind, sha)
        if kind == "forwarded":
            return await self._forward(request, raw, sha)
        if kind == "429":
            return web.json_response(
                _error(429, "Rate limit reached (fault proxy); retry after the Retry-After delay.", "RateLimitError"),
                status=429, headers={"Retry-After": f"{self.retry_after:g}"})
        if kind == "500":
            return web.json_response(_error(500, "Internal server error (fault proxy).", "InternalServerError"),
                                     status=500)
        if kind == "drop":
            # Reset the connection before any byte of a response: the client sees a disconnect.
            request.transport.abort()
            raise asyncio.CancelledError  # nothing to write; aiohttp drops the handler quietly
        if kind == "stall":
            try:
                await asyncio.wait_for(self._closing.wait(), self.stall_seconds)
            except asyncio.TimeoutError:
                pass
            return web.json_response(_error(504, "Upstream timed out (fault proxy stall).", "APITimeoutError"),
                                     status=504)
        if kind == "malformed":
            return web.Response(status=200, body=b'{"choices": ', content_type="application/json")
        if kind == "empty":
            return web.json_response(EMPTY_COMPLETION, status=200)
        raise AssertionError(kind)

    async def _forward(self, request, raw: bytes, sha: str | None):
        import aiohttp
        from aiohttp import web

        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        response = None
        try:
            async with self._session.request(request.method, self._target(request.path_qs), headers=headers,
                                             data=raw if raw else None, allow_redirects=False) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in _HOP_BY_HOP:
                        response.headers.add(key, value)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                if sha is not None and upstream.status == 200:
                    # Counted before the answer's end goes out: once the client has it, so has the count.
                    with self._lock:
                        self._forwarded[sha] += 1
                await response.write_eof()
                return response
        except aiohttp.ClientError as exc:
            if response is not None and response.prepared:
                # The upstream broke off mid-answer: so does the proxy.
                if request.transport is not None:
                    request.transport.abort()
                raise
            return web.json_response(_error(502, f"fault proxy: upstream failed: {exc}", "BadGatewayError"),
                                     status=502)
