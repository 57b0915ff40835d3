"""A hard budget per job: calls, tokens and money, owned by the driver, drawn on by every executor.

``spark.apwa.budget.maxCalls`` / ``maxTokens`` / ``maxCost`` (money at ``spark.apwa.price.*``) cap a
job. The driver runs a :class:`BudgetServer`, a small HTTP server on the driver's host with a
random secret in its URL, for the length of the job; the URL travels to the executors inside the
job's context (never into settings, manifests or logs). Before each LLM call an executor's client
*reserves* one call and an upper bound of its tokens (the prompt's size / 3 plus ``max_tokens``);
after it, it *settles*: the reservation is replaced by the call's real usage (requests, retries
included, and the endpoint's token counts). A reservation that would pass a limit is refused, and
that row's completion is ``unevaluated`` (error class ``BudgetExhausted``), not ``error``: nothing
was wrong with the row. Answers already in the response cache cost nothing and never ask.

So the budget holds across the cluster up to what is in flight: calls reserved before the limit
was reached finish, and their retries (at most ``llm.maxRetries`` each) are charged when they
settle. A re-run with a larger budget reads the paid answers from the response cache and spends
only on the rows left unevaluated.

The same server counts the processes sending requests under ``spark.apwa.llm.rpm`` / ``tpm``
(route ``share``, :mod:`apwa_spark.llm.ratelimit`): each sending process reports every few seconds,
and each takes the job's rate divided by the processes heard from in the last
:data:`ACTIVE_SECONDS`.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Mapping

import httpx

from apwa_spark.config import BudgetSettings, PriceSettings

UNEVALUATED = "unevaluated"
#: A process that reported within this many seconds counts as sending (for the rate shares).
ACTIVE_SECONDS = 10.0


class BudgetServer:
    """The job's budget and rate shares on the driver; a context manager (serves on a daemon thread until exit).

    Args:
        limits: ``spark.apwa.budget.*``.
        prices: ``spark.apwa.price.*`` (money for ``maxCost``).
        host: the address executors reach the driver at (``127.0.0.1`` for a local master).
        active_seconds: how recent a process's report must be for it to count as sending.

    Attributes:
        url: ``http://host:port/<secret>``: whoever has it can spend the budget; keep it out of logs.
        spent: calls, prompt and completion tokens charged so far (reserved, then settled).
        refused: reservations refused.
    """

    def __init__(self, limits: BudgetSettings, prices: PriceSettings, host: str = "127.0.0.1",
                 active_seconds: float = ACTIVE_SECONDS):
        self.limits, self.prices = limits, prices
        self.active_seconds = active_seconds
        self._seen: dict[str, float] = {}
        self.spent = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.refused = 0
        self._lock = threading.Lock()
        self._secret = secrets.token_urlsafe(16)
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self.url = f"http://{host}:{self._server.server_address[1]}/{self._secret}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __repr__(self) -> str:
        return f"BudgetServer(spent={self.spent}, refused={self.refused})"

    def __enter__(self) -> "BudgetServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def enabled(self) -> bool:
        """Whether the job has a budget (else the server only counts the processes sharing the rates)."""
        return self.limits.enabled

    @property
    def cost(self) -> float | None:
        """Money spent at ``spark.apwa.price.*``; None without prices."""
        return self.prices.cost(self.spent["prompt_tokens"], self.spent["completion_tokens"])

    def reserve(self, prompt_tokens: int, completion_tokens: int) -> str | None:
        """Charge one call of up to these tokens; None when granted, else the limit it would pass."""
        with self._lock:
            calls = self.spent["calls"] + 1
            prompt = self.spent["prompt_tokens"] + prompt_tokens
            completion = self.spent["completion_tokens"] + completion_tokens
            limit = _passed(self.limits, self.prices, calls, prompt, completion)
            if limit:
                self.refused += 1
                return limit
            self.spent.update(calls=calls, prompt_tokens=prompt, completion_tokens=completion)
            return None

    def settle(self, reserved: Mapping[str, int], used: Mapping[str, int]) -> None:
        """Replace a granted reservation (``prompt_tokens``, ``completion_tokens``; one call) by
        what the call used (``calls``, ``prompt_tokens``, ``completion_tokens``)."""
        with self._lock:
            self.spent["calls"] += int(used.get("calls", 1)) - 1
            for k in ("prompt_tokens", "completion_tokens"):
                self.spent[k] += int(used.get(k, 0)) - int(reserved.get(k, 0))

    def share(self, process: str, busy: float = 0.0) -> int:
        """Record that ``process`` is sending, with requests booked for the next ``busy`` seconds;
        the processes sending (still busy, or heard from within :attr:`active_seconds`), itself included."""
        with self._lock:
            now = time.monotonic()
            self._seen[process] = now + max(0.0, busy)
            self._seen = {p: t for p, t in self._seen.items() if now - t <= self.active_seconds}
            return len(self._seen)

    def left_undone(self) -> str:
        """One line for the job's end: what was spent against which limits."""
        parts = [f"{self.spent['calls']} calls" + (f" of {self.limits.max_calls}" if self.limits.max_calls else ""),
                 f"{self.spent['prompt_tokens'] + self.spent['completion_tokens']} tokens"
                 + (f" of {self.limits.max_tokens}" if self.limits.max_tokens else "")]
        if self.cost is not None:
            parts.append(f"{self.cost:.4f} {self.prices.currency}"
                         + (f" of {self.limits.max_cost:g}" if self.limits.max_cost else ""))
        return ", ".join(parts)

    def _handler(self):
        budget = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # the URL holds the secret: nothing is logged
                pass

            def do_POST(self):
                route = self.path.removeprefix(f"/{budget._secret}/")
                if route == self.path or route not in ("reserve", "settle", "share"):
                    return self._send(404, {"error": "unknown budget route"})
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if route == "share":
                    return self._send(200, {"active": budget.share(str(body.get("process", "")), float(body.get("busy", 0)))})
                if route == "reserve":
                    limit = budget.reserve(int(body.get("prompt_tokens", 0)), int(body.get("completion_tokens", 0)))
                    return self._send(200, {"granted": limit is None, "limit": limit})
                budget.settle(body.get("reserved", {}), body.get("used", {}))
                return self._send(200, {"settled": True})

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _passed(limits: BudgetSettings, prices: PriceSettings, calls: int, prompt: int, completion: int) -> str | None:
    """The first limit these totals pass, as ``key=value``; None within all."""
    if limits.max_calls is not None and calls > limits.max_calls:
        return f"spark.apwa.budget.maxCalls={limits.max_calls}"
    if limits.max_tokens is not None and prompt + completion > limits.max_tokens:
        return f"spark.apwa.budget.maxTokens={limits.max_tokens}"
    cost = prices.cost(prompt, completion)
    if limits.max_cost is not None and cost is not None and cost > limits.max_cost:
        return f"spark.apwa.budget.maxCost={limits.max_cost:g}"
    return None


class BudgetClient:
    """An executor's side of the budget: async reserve/settle against the driver's :class:`BudgetServer`.

    Args:
        url: :attr:`BudgetServer.url`.
        timeout: seconds per request; a budget that cannot be reached refuses (nothing is spent
            that the driver cannot count).
    """

    def __init__(self, url: str, timeout: float = 30.0):
        self._url, self._timeout = url, timeout

    def __repr__(self) -> str:
        return "BudgetClient(<driver>)"

    async def reserve(self, http: httpx.AsyncClient, prompt_tokens: int, completion_tokens: int) -> str | None:
        """None when granted; else why not (the limit passed, or that the driver cannot be reached)."""
        try:
            response = await http.post(f"{self._url}/reserve", json={"prompt_tokens": prompt_tokens,
                                                                      "completion_tokens": completion_tokens},
                                       timeout=self._timeout)
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return f"the driver's budget server (unreachable: {type(exc).__name__})"
        return None if answer.get("granted") else str(answer.get("limit"))

    async def settle(self, http: httpx.AsyncClient, reserved: Mapping[str, int], used: Mapping[str, int]) -> None:
        try:
            await http.post(f"{self._url}/settle", json={"reserved": dict(reserved), "used": dict(used)}, timeout=self._timeout)
        except httpx.HTTPError:
            pass  # the reservation stands: the driver counts the call at its reserved upper bound


def unevaluated_message(limit: str) -> str:
    """The ``error`` of a row the budget left unevaluated."""
    return (f"BudgetExhausted: the job's budget ({limit}) is spent; no LLM call made. Re-run the job with a larger "
            "budget: paid answers come from the response cache, and only the rows left unevaluated are sent")
