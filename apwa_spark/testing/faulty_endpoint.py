"""A deliberately faulty OpenAI-compatible endpoint: a real HTTP proxy on 127.0.0.1.

It forwards every request to an upstream endpoint (the embedded llama-server) and, per request,
injects one fault with the configured probabilities:

* ``http_429``: HTTP 429 with ``Retry-After: <retry_after>`` seconds;
* ``insufficient_quota``: HTTP 429 with OpenAI's quota-exhausted body (``"code": "insufficient_quota"``);
* ``http_500``: HTTP 500;
* ``stall``: holds the request ``stall_seconds`` (past the client's timeout), then closes without answering;
* ``truncated``: sends the headers and half the body, then closes the connection;
* ``non_json``: HTTP 200 whose body is not JSON at all;
* ``bad_json_output``: a well-formed completion response whose *text* is broken JSON
  (what a model gives when it ignores a JSON schema).

With ``fail_marker``, every completion request whose body contains that string gets HTTP 500,
whatever the draws: a test can make one chosen row fail every attempt. With ``script``, the first
completion requests get those faults in order (``None``: forwarded). Other faults are drawn from
a seeded ``random.Random``, so a run is repeatable. ``requests`` counts the
requests received on completion routes, ``bodies`` keeps their bodies, ``arrivals`` their
``(time.monotonic(), fault)`` in order, and ``max_in_flight`` the most forwarded at once. Usage::

    with FaultyEndpoint(upstream="http://127.0.0.1:8080/v1", non_json=1.0) as proxy:
        settings = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url})
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

FAULTS = ("http_429", "insufficient_quota", "http_500", "stall", "truncated", "non_json", "bad_json_output")
#: OpenAI's body for a spent quota (its error-codes guide: "You exceeded your current quota").
QUOTA_BODY = (b'{"error": {"message": "You exceeded your current quota, please check your plan and billing details.", '
              b'"type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}')


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up on a stalled or truncated answer are expected here, not errors."""

    def handle_error(self, request, client_address):
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class FaultyEndpoint:
    """Proxy with injected faults; a context manager (starts a server thread, stops it on exit).

    Args:
        upstream: base URL of the real endpoint, e.g. ``http://127.0.0.1:8080/v1``.
        seed: seed of the fault draws.
        retry_after: seconds sent in ``Retry-After`` with each 429.
        stall_seconds: how long a ``stall`` waits before forwarding.
        fail_marker: completion requests whose body contains it always get HTTP 500 (counted in
            ``faults["http_500"]``).
        script: faults of the first completion requests, in order (``None``: no fault).
        **rates: probability in [0, 1] per fault name in :data:`FAULTS`; their sum must be <= 1.

    Raises:
        ValueError: an unknown fault name or rates summing above 1.
    """

    def __init__(self, upstream: str, seed: int = 0, retry_after: float = 1.0, stall_seconds: float = 10.0,
                 fail_marker: str | None = None, script: tuple[str | None, ...] = (), **rates: float):
        unknown = (set(rates) | set(script)) - set(FAULTS) - {None}
        if unknown or sum(rates.values()) > 1:
            raise ValueError(f"fault rates must be among {FAULTS} and sum to <= 1, got {rates}")
        self.upstream = upstream.rstrip("/")
        self.retry_after, self.stall_seconds = retry_after, stall_seconds
        self.rates = rates
        self.fail_marker = fail_marker.encode() if fail_marker else None
        self.random = random.Random(seed)
        self.script = list(script)
        self.arrivals: list[tuple[float, str | None]] = []
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = self.max_in_flight = 0  # completion requests being forwarded at once, and the most seen
        self.bodies: list[bytes] = []  # request bodies received on completion routes, in order
        self.faults: dict[str, int] = {name: 0 for name in FAULTS}
        self.server = _QuietServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _draw(self, forced: str | None = None) -> str | None:
        with self.lock:
            self.requests += 1
            fault = forced or (self.script.pop(0) if self.script else self._drawn())
            if fault:
                self.faults[fault] += 1
            self.arrivals.append((time.monotonic(), fault))
            return fault

    @contextlib.contextmanager
    def forwarding(self, counted: bool):
        """Counts a completion request in flight to the upstream (``in_flight``, ``max_in_flight``)."""
        with self.lock:
            self.in_flight += counted
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self.lock:
                self.in_flight -= counted

    def _drawn(self) -> str | None:
        x, edge = self.random.random(), 0.0
        for name, rate in self.rates.items():
            edge += rate
            if x < edge:
                return name
        return None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                self._forward(b"")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fault = None
                if self.path.endswith("completions"):
                    proxy.bodies.append(body)
                    fault = proxy._draw(forced="http_500" if proxy.fail_marker and proxy.fail_marker in body else None)
                if fault == "non_json":
                    return self._send(200, b"<html>upstream exploded</html>", "application/json")
                if fault == "http_500":
                    return self._send(500, b'{"error": {"message": "injected failure"}}', "application/json")
                if fault == "http_429":
                    return self._send(429, b'{"error": {"message": "rate limited"}}', "application/json",
                                      {"Retry-After": str(proxy.retry_after)})
                if fault == "insufficient_quota":
                    return self._send(429, QUOTA_BODY, "application/json")
                if fault == "stall":  # the client times out first; the upstream is never asked
                    time.sleep(proxy.stall_seconds)
                    self.close_connection = True
                    return
                with proxy.forwarding(self.path.endswith("completions")):
                    self._forward(body, broken_output=fault == "bad_json_output", truncate=fault == "truncated")

            def _forward(self, body: bytes, broken_output: bool = False, truncate: bool = False):
                path = self.path[len("/v1"):] if self.path.startswith("/v1") else self.path
                url = (proxy.upstream if self.path.startswith("/v1") else proxy.upstream[: -len("/v1")]) + path
                with httpx.Client(timeout=600) as http:
                    response = http.request(self.command, url, content=body or None,
                                            headers={"Content-Type": "application/json"})
                payload = response.content
                if broken_output and response.status_code == 200:
                    data = json.loads(payload)
                    for choice in data.get("choices", []):
                        if "text" in choice:
                            choice["text"] = '{"summary": "unterminated'
                        else:
                            choice["message"]["content"] = '{"summary": "unterminated'
                    payload = json.dumps(data).encode()
                if truncate:
                    self._send(response.status_code, payload, "application/json", length=len(payload))
                    self.close_connection = True
                    return
                self._send(response.status_code, payload, response.headers.get("content-type", "application/json"))

            def _send(self, status: int, payload: bytes, content_type: str, headers: dict | None = None,
                      length: int | None = None):
                """Send ``payload``; with ``length``, announce that many bytes but send only half."""
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(length or len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload if length is None else payload[: length // 2])

        return Handler

    def __enter__(self) -> "FaultyEndpoint":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
