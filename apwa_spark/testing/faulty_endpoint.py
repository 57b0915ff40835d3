"""A deliberately faulty OpenAI-compatible endpoint: a real HTTP proxy on 127.0.0.1.

It forwards every request to an upstream endpoint (the embedded llama-server) and, per request,
injects one fault with the configured probabilities:

* ``non_json``: HTTP 200 whose body is not JSON at all;
* ``bad_json_output``: a well-formed completion response whose *text* is broken JSON
  (what a model gives when it ignores a JSON schema);
* ``http_500``: HTTP 500.

Faults are drawn from a seeded ``random.Random``, so a run is repeatable. ``requests`` counts the
requests received on completion routes. Usage::

    with FaultyEndpoint(upstream="http://127.0.0.1:8080/v1", non_json=1.0) as proxy:
        settings = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url})
"""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

FAULTS = ("non_json", "bad_json_output", "http_500")


class FaultyEndpoint:
    """Proxy with injected faults; a context manager (starts a server thread, stops it on exit).

    Args:
        upstream: base URL of the real endpoint, e.g. ``http://127.0.0.1:8080/v1``.
        seed: seed of the fault draws.
        **rates: probability in [0, 1] per fault name in :data:`FAULTS`; their sum must be <= 1.

    Raises:
        ValueError: an unknown fault name or rates summing above 1.
    """

    def __init__(self, upstream: str, seed: int = 0, **rates: float):
        unknown = set(rates) - set(FAULTS)
        if unknown or sum(rates.values()) > 1:
            raise ValueError(f"fault rates must be among {FAULTS} and sum to <= 1, got {rates}")
        self.upstream = upstream.rstrip("/")
        self.rates = rates
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.faults: dict[str, int] = {name: 0 for name in FAULTS}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _draw(self) -> str | None:
        with self.lock:
            self.requests += 1
            x, edge = self.random.random(), 0.0
            for name, rate in self.rates.items():
                edge += rate
                if x < edge:
                    self.faults[name] += 1
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
                fault = proxy._draw() if self.path.endswith("completions") else None
                if fault == "non_json":
                    return self._send(200, b"<html>upstream exploded</html>", "application/json")
                if fault == "http_500":
                    return self._send(500, b'{"error": {"message": "injected failure"}}', "application/json")
                self._forward(body, broken_output=fault == "bad_json_output")

            def _forward(self, body: bytes, broken_output: bool = False):
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
                self._send(response.status_code, payload, response.headers.get("content-type", "application/json"))

            def _send(self, status: int, payload: bytes, content_type: str):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def __enter__(self) -> "FaultyEndpoint":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
