"""The LLM client: the one place that talks to an OpenAI-compatible endpoint.

Built on the ``openai`` package's ``AsyncOpenAI``: timeouts, and retries of 429, 5xx, connection
errors and timeouts with exponential backoff that honours ``Retry-After`` are the openai client's
own (``max_retries``, ``timeout``). On top of it this module adds what a Spark task needs:

* bounded concurrency per task (``spark.apwa.llm.concurrency`` calls in flight),
* the job's RPM/TPM budgets, one limiter per Python worker process for the whole job, which every
  HTTP request passes (the openai client's retries too) and a 429's ``Retry-After`` pauses
  (:mod:`apwa_spark.llm.ratelimit`),
* a quota-exhausted 429 (``insufficient_quota``: billing, not load) fails at once, unretried, and
  the process's later calls of the job fail without a request (``QuotaExhausted``) for
  :data:`~apwa_spark.llm.ratelimit.QUOTA_HOLD_SECONDS`,
* identical calls in one batch sent once, and answers already paid for read from the response
  cache (:mod:`apwa_spark.llm.cache`) instead of sent,
* retries of malformed response bodies, and one repair attempt for invalid structured output
  (under a length-bounded schema when ``max_tokens`` cut the answer),
* token usage per call, from the endpoint's ``usage`` (its own tokenizer),
* errors as data: every task gets a :class:`Completion` with ``status`` ``ok`` or ``error``;
  nothing raises per row,
* the prompt style chosen by configuration (:mod:`apwa_spark.llm.prompts`), and what differs
  between endpoint kinds (auth headers, token counting, structured output) from
  :mod:`apwa_spark.llm.endpoints`.

An :class:`LLMClient` is made per batch of rows (a pandas UDF call), never per row; the event loop
and the ``AsyncOpenAI`` client underneath are made once per Python worker process and reused by
every batch (:func:`worker_loop`).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Coroutine, Mapping, Sequence, TypeVar

import httpx
import jsonschema
import openai

from apwa_spark.config import Settings
from apwa_spark.llm import endpoints
from apwa_spark.llm.budget import UNEVALUATED, BudgetClient, unevaluated_message
from apwa_spark.llm.cache import ResponseCache, shared_cache
from apwa_spark.llm.endpoints import EndpointUnavailableError
from apwa_spark.llm.prompts import Task, cache_key, render_chat, render_completion
from apwa_spark.llm.ratelimit import RateLimiter, process_limiter, retry_after_seconds
from apwa_spark.llm.json_schema import bounded_by_tokens

T = TypeVar("T")
log = logging.getLogger(__name__)

__all__ = ["Completion", "EndpointUnavailableError", "LLMClient", "repair_task", "run_sync"]


@dataclass(frozen=True)
class Completion:
    """The outcome of one task.

    Attributes:
        text: the completion text (stripped); for an error, the raw output if any came back.
        status: ``ok``, ``error``, or ``unevaluated``: the job's budget was spent before this task's
            call (:mod:`apwa_spark.llm.budget`; error class ``BudgetExhausted``).
        error: ``ErrorClass: message`` when ``status`` is ``error``.
        prompt_tokens / completion_tokens / cached_tokens: from the endpoint's usage (cached: the
            prompt tokens its prefix cache served), summed over the task's answered requests (a
            repaired answer's include the rejected one's); 0 when no call was made.
        calls: LLM requests (attempts) this task caused, retries and the repair attempt included; 0
            for empty input, a duplicate of another task in the batch, or a response-cache hit.
        from_cache: the answer came from the response cache.
        text_tokens: tokens of the answer text (the call's completion tokens, also on a cache hit).
    """

    text: str | None
    status: str
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    calls: int = 0
    from_cache: bool = False
    text_tokens: int = 0

    @property
    def error_class(self) -> str | None:
        """The error's class name (``RateLimitError``, ``InvalidJSON``, ``EmptyInput`` …)."""
        return self.error.split(":", 1)[0] if self.error else None

    @classmethod
    def failed(cls, error: str, text: str | None = None, calls: int = 0) -> "Completion":
        return cls(text=text, status="error", error=error, calls=calls)


#: Structured-output errors that get one repair attempt (:func:`repair_task`).
REPAIRED = ("InvalidJSON", "TruncatedJSON", "SchemaMismatch")

#: The error code of a 429 that no wait fixes: the account's quota or credit is spent (OpenAI's
#: ``insufficient_quota``; LiteLLM's proxy passes the upstream's code through).
QUOTA_CODE = "insufficient_quota"

#: openai errors its client already retried ``maxRetries`` times before raising.
RETRIED_BY_OPENAI = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError, openai.ConflictError)


class LLMClient:
    """Sends :class:`Task` batches to the configured endpoint.

    Args:
        settings: endpoint, concurrency, retries, limits and cache location.
        tasks: Spark tasks that may run at once in this job; each Python worker process takes
            ``1/tasks`` of the job's ``llm.rpm`` / ``llm.tpm`` budgets until the job server says how
            many processes are sending.
        cache_options: delta-rs storage options of an object-store response cache (``cache.path``).
        run_id: the job's run id: clients of one job in one process share one
            :func:`~apwa_spark.llm.ratelimit.process_limiter`.
        budget_url: the job's :class:`~apwa_spark.llm.budget.BudgetServer` URL (a secret): its budget
            (when ``spark.apwa.budget.*`` is set) and the count of processes sharing the rates;
            None: no budget, and the rates' share is ``1/tasks``.

    Example::

        client = LLMClient(settings)
        [c] = client.complete([Task(template, "Two households ...", max_tokens=64)])
        c.status, c.text, c.prompt_tokens
    """

    def __init__(self, settings: Settings, tasks: int = 1, cache_options: Mapping[str, str] | None = None,
                 run_id: str = "", budget_url: str | None = None):
        if not settings.llm.base_url:
            raise ValueError("LLMClient needs spark.apwa.llm.baseUrl (start the embedded endpoint first)")
        self.settings = settings
        self.base_url = settings.llm.base_url.rstrip("/")
        self.tasks = tasks
        self.limiter = process_limiter(run_id, settings.llm.rpm, settings.llm.tpm, tasks,
                                       budget_url if settings.llm.rpm or settings.llm.tpm else None)
        self.budget = BudgetClient(budget_url) if budget_url and settings.budget.enabled else None
        self.cache = (shared_cache(settings.cache.path, cache_options, run_id)
                      if settings.cache.enabled and settings.cache.path else None)

    @property
    def concurrency(self) -> int:
        """Calls this client keeps in flight (:func:`calls_in_flight`)."""
        return calls_in_flight(self.settings, self.tasks)

    # ---- public, synchronous (pandas UDFs, driver) -------------------------------------------
    def complete(self, tasks: Sequence[Task]) -> list[Completion]:
        """Run ``tasks`` with at most :attr:`concurrency` in flight; one :class:`Completion` each, in order.

        Identical tasks are sent once; answers in the response cache are not sent at all.
        """
        return run_sync(self.acomplete(tasks))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts of ``texts`` by the endpoint's own tokenizer (llama.cpp and vLLM ``/tokenize``),
        :attr:`concurrency` requests at a time; ``ceil(chars / 3.0)`` where the endpoint kind has no
        tokenizer route or counting fails (:func:`apwa_spark.llm.endpoints.count_tokens`). Never raises.
        """
        return run_sync(endpoints.count_tokens(self.settings, texts, self.concurrency))

    def cache_keys(self, tasks: Sequence[Task]) -> list[str]:
        """Each task's response-cache key (:func:`~apwa_spark.llm.prompts.cache_key`: model, prompt
        style, rendered prompt, generation parameters, output schema)."""
        llm = self.settings.llm
        params = {"temperature": llm.temperature, "seed": llm.seed, "frequency_penalty": llm.frequency_penalty}
        return [cache_key(task, endpoints.prompt_style(llm), llm.model, params) for task in tasks]

    # ---- async core ------------------------------------------------------------------------------
    async def acomplete(self, tasks: Sequence[Task]) -> list[Completion]:
        llm = self.settings.llm
        keys = self.cache_keys(tasks)
        unique = {key: task for key, task in zip(keys, tasks)}
        readable = [key for key, task in unique.items() if task.cacheable]  # uncacheable: never read nor written
        cached = await asyncio.to_thread(self.cache.get_many, readable) if self.cache and readable else {}
        to_send = {key: task for key, task in unique.items() if key not in cached}
        recorder = _CacheRecorder(self.cache, llm.model, self.settings.cache.max_uncommitted, self.settings.cache.commit_seconds)
        semaphore = asyncio.Semaphore(self.concurrency)
        client = _worker_client(self.settings, self.limiter)
        async with (httpx.AsyncClient(trust_env=False) if self.budget else contextlib.nullcontext()) as budget_http:
            sent = await asyncio.gather(*(self._one(client, budget_http, semaphore, task, key, recorder)
                                          for key, task in to_send.items()))
        await recorder.flush()
        by_key = {key: _from_cache(row) for key, row in cached.items()} | dict(zip(to_send, sent))
        out, seen = [], set()
        for key in keys:
            result = by_key[key]
            out.append(result if key not in seen else _duplicate_of(result))
            seen.add(key)
        return out

    async def _one(self, client, budget_http, semaphore, task: Task, key: str, recorder: "_CacheRecorder") -> Completion:
        if task.input is None or not task.input.strip():
            return Completion.failed("EmptyInput: input text is empty or null; no LLM call made")
        async with semaphore:
            result = await self._budgeted(client, budget_http, task)
            if task.json_schema is not None and result.error_class in REPAIRED:
                repaired = await self._budgeted(client, budget_http, repair_task(task, result))
                result = result if repaired.status == UNEVALUATED else _after(repaired, result)
            if result.status == "ok" and task.cacheable:
                await recorder.record(key, result)
        return result

    async def _budgeted(self, client, budget_http, task: Task) -> Completion:
        """:meth:`_attempts` within the job's budget: one call and an upper bound of its tokens
        reserved first (refused: ``unevaluated``, no request), the real usage settled after."""
        if self.budget is None:
            return await self._attempts(client, task)
        prompt = (len(task.input) + len(task.template.instruction) + len(task.template.cue or "")) // 3 + 8
        reserved = {"prompt_tokens": prompt, "completion_tokens": task.max_tokens}
        limit = await self.budget.reserve(budget_http, **reserved)
        if limit:
            return Completion(text=None, status=UNEVALUATED, error=unevaluated_message(limit))
        result = await self._attempts(client, task)
        await self.budget.settle(budget_http, reserved, {"calls": result.calls, "prompt_tokens": result.prompt_tokens,
                                                         "completion_tokens": result.completion_tokens})
        return result

    async def _attempts(self, client, task: Task) -> Completion:
        """One task's call. HTTP-level retries (429 with ``Retry-After``, 5xx, connection errors,
        timeouts) are the openai client's; malformed bodies, which it does not retry, are retried
        here, up to ``maxRetries`` times. Every request waits on the process's limiter (the
        ``httpx`` request hook of :func:`_limiter_hooks`)."""
        llm = self.settings.llm
        calls, last = 0, ""
        for _ in range(llm.max_retries + 1):
            if self.limiter.quota_spent:
                return Completion.failed(_quota_message(self.settings), calls=calls)
            try:
                with self.limiter.sending():  # counted by the job server while it is in flight
                    text, usage, finish, retries = await self._request(client, task)
            except openai.RateLimitError as exc:
                if _is_quota(exc):  # not retried (the response hook said so); nor is any later call
                    self.limiter.spend_quota()
                    return Completion.failed(_quota_message(self.settings), calls=calls + 1)
                return Completion.failed(f"{type(exc).__name__}: {_short(exc)}", calls=calls + llm.max_retries + 1)
            except RETRIED_BY_OPENAI as exc:
                where = f"cannot reach {endpoints.host_of(self.settings)}: " if isinstance(exc, openai.APIConnectionError) else ""
                return Completion.failed(f"{type(exc).__name__}: {where}{_short(exc)}", calls=calls + llm.max_retries + 1)
            except openai.APIStatusError as exc:  # other 4xx: not retryable (bad request, schema rejected, auth)
                return Completion.failed(f"{type(exc).__name__}: {_short(exc)}", calls=calls + 1)
            except (openai.APIResponseValidationError, ValueError) as exc:  # a garbage body
                calls += 1
                last = f"MalformedResponse: {type(exc).__name__}: {_short(exc)}"
                continue
            return _add_calls(_checked(task, text, usage, finish), calls + retries + 1)
        return Completion.failed(last, calls=calls)

    async def _request(self, client: openai.AsyncOpenAI, task: Task) -> tuple[str, Any, str | None, int]:
        """(completion text, usage, finish reason, retries the openai client took) of one request."""
        llm = self.settings.llm
        style = endpoints.prompt_style(llm)
        strict = task.json_schema is not None and endpoints.uses_strict(llm, style)
        params: dict[str, Any] = dict(
            model=llm.model,
            max_tokens=task.max_tokens + (endpoints.strict_overhead(task.json_schema) if strict else 0),
            temperature=llm.temperature,
            frequency_penalty=llm.frequency_penalty,
        )
        if llm.seed is not None:
            params["seed"] = llm.seed
        structured = endpoints.structured_params(llm, style, task.json_schema) if task.json_schema else {}
        if style == "completion":
            prompt, stop = render_completion(task)
            stop = None if task.json_schema else stop  # the grammar ends the output; a stop could cut the JSON
            raw = await client.completions.with_raw_response.create(prompt=prompt, stop=stop, **structured, **params)
            response = raw.parse()
            choice_text = response.choices[0].text
            if isinstance(choice_text, str) and task.template.answer_prefix:
                choice_text = task.template.answer_prefix + choice_text
        else:
            raw = await client.chat.completions.with_raw_response.create(messages=render_chat(task), **structured, **params)
            response = raw.parse()
            choice_text = response.choices[0].message.content
            if isinstance(choice_text, str) and strict:
                choice_text = endpoints.from_strict(choice_text, task.json_schema)
        if not isinstance(choice_text, str):
            raise ValueError(f"endpoint returned no completion text (got {type(choice_text).__name__})")
        return choice_text, response.usage, response.choices[0].finish_reason, raw.retries_taken


class _CacheRecorder:
    """Appends ok answers to the response cache as they arrive, each commit taking every answer that
    arrived since the previous one (group commit), at most one commit per ``interval`` seconds.

    A caller goes on (freeing its concurrency slot) once its answer is queued, unless more than
    ``window`` answers are then waiting for a commit: it waits for its commit, which then starts
    without waiting out the interval (back-pressure). So at any moment at most ``window +
    concurrency`` answers per task are not yet durable, and a kill repeats only those calls;
    ``window`` 0 makes every caller wait. :meth:`flush` commits the rest at once and waits for it
    before a batch returns. Each commit costs CPU that a local endpoint on the same machine would
    otherwise use (:mod:`apwa_spark.llm.cache`): hence the interval.
    """

    def __init__(self, cache: ResponseCache | None, model: str, window: int, interval: float):
        self.cache, self.model, self.window, self.interval = cache, model, window, interval
        self.pending: list[tuple[tuple, asyncio.Future]] = []
        self.uncommitted = 0
        self.writer: asyncio.Task | None = None
        self.now = asyncio.Event()  # commit without waiting out the interval
        self.last_commit = float("-inf")

    async def record(self, key: str, c: Completion) -> None:
        if self.cache is None:
            return
        committed = asyncio.get_running_loop().create_future()
        self.pending.append(((key, c.text, self.model, c.prompt_tokens, c.completion_tokens), committed))
        self.uncommitted += 1
        if self.writer is None or self.writer.done():
            self.writer = asyncio.ensure_future(self._drain())
        if self.uncommitted > self.window:
            self.now.set()
            await committed

    async def flush(self) -> None:
        """Commit every recorded answer now, and wait until they are committed."""
        self.now.set()
        if self.writer is not None:
            await self.writer

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self.pending:
            wait = self.last_commit + self.interval - loop.time()
            if wait > 0 and not self.now.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.now.wait(), wait)
            self.now.clear()
            self.last_commit = loop.time()
            batch, self.pending = self.pending, []
            try:
                await asyncio.to_thread(self.cache.put_many, [row for row, _ in batch])
            except Exception as exc:  # the answer stands; only its reuse after a crash is lost
                log.warning("response cache write failed (%s: %s); answers stay valid but are not cached",
                            type(exc).__name__, exc)
            self.uncommitted -= len(batch)
            for _, committed in batch:
                committed.set_result(None)


def repair_task(task: Task, failed: Completion) -> Task:
    """The one repair attempt for invalid structured output: the same task, told what was wrong.

    An answer cut at ``max_tokens`` (``TruncatedJSON``, typically a small model repeating itself
    inside a string) is not quoted back; the repair runs under
    :func:`~apwa_spark.llm.json_schema.bounded_by_tokens` of the schema instead, so a grammar-constrained
    endpoint must close the JSON within the same budget.
    """
    if failed.error_class == "TruncatedJSON":
        note = (f"\n\nA previous answer ran past the {task.max_tokens}-token limit. "
                "Answer again with JSON that matches the schema; keep every value short.")
        return dataclasses.replace(task, input=task.input + note,
                                   json_schema=bounded_by_tokens(task.json_schema, task.max_tokens))
    note = (f"\n\nA previous answer was rejected ({failed.error}). Previous answer: {failed.text!r}. "
            "Answer again with JSON that matches the schema.")
    return dataclasses.replace(task, input=task.input + note)


def _limiter_hooks(limiter: RateLimiter) -> dict[str, list]:
    """``httpx`` event hooks that put every request, the openai client's retries included, through
    ``limiter``: the request hook waits for the request's share (1 request, and its body's size / 3
    plus its ``max_tokens`` as tokens); the response hook pauses the limiter for a 429's
    ``Retry-After``, and marks a quota-exhausted 429 ``x-should-retry: false``, the header the openai
    client obeys (``_should_retry``), so it is not retried."""
    async def on_request(request) -> None:
        body = request.content or b""
        try:
            max_tokens = int(json.loads(body).get("max_tokens") or 0) if body else 0
        except (ValueError, AttributeError):
            max_tokens = 0
        await limiter.acquire(len(body) // 3 + max_tokens)

    async def on_response(response) -> None:
        if response.status_code != 429:
            return
        await response.aread()
        if QUOTA_CODE in response.text:
            response.headers["x-should-retry"] = "false"
        elif (seconds := retry_after_seconds(response.headers.get("retry-after"))) is not None:
            limiter.pause(seconds)

    return {"request": [on_request], "response": [on_response]}


def _is_quota(exc: openai.RateLimitError) -> bool:
    return getattr(exc, "code", None) == QUOTA_CODE or QUOTA_CODE in str(getattr(exc, "body", "") or exc)


def _quota_message(settings: Settings) -> str:
    return (f"QuotaExhausted: {endpoints.host_of(settings)} answered 429 {QUOTA_CODE}: the account's quota or "
            "credit is spent, which waiting does not fix; raise the quota or switch spark.apwa.llm.baseUrl, "
            "then re-drive the failed rows with apwa-spark retry-failed")


def _add_calls(c: Completion, calls: int) -> Completion:
    """``c`` with ``calls`` more requests behind it (earlier attempts)."""
    return dataclasses.replace(c, calls=c.calls + calls)


def _after(c: Completion, earlier: Completion) -> Completion:
    """``c`` with the requests and tokens of the ``earlier`` attempt it repaired added."""
    return dataclasses.replace(c, calls=c.calls + earlier.calls, prompt_tokens=c.prompt_tokens + earlier.prompt_tokens,
                               completion_tokens=c.completion_tokens + earlier.completion_tokens,
                               cached_tokens=c.cached_tokens + earlier.cached_tokens)


def _from_cache(row: dict) -> Completion:
    return Completion(text=row["text"], status="ok", from_cache=True, text_tokens=row["completion_tokens"])


def _checked(task: Task, text: str, usage: Any, finish_reason: str | None) -> Completion:
    tokens = dict(
        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        cached_tokens=_cached_tokens(usage),
    )
    text = text.strip()
    if task.json_schema is not None:
        try:
            jsonschema.validate(json.loads(text), task.json_schema)
        except json.JSONDecodeError as exc:
            if finish_reason == "length":
                return Completion(text=text, status="error", **tokens, error=(
                    f"TruncatedJSON: the answer reached max_tokens ({task.max_tokens}) before its JSON closed ({exc})"))
            return Completion(text=text, status="error", error=f"InvalidJSON: {exc}", **tokens)
        except jsonschema.ValidationError as exc:
            return Completion(text=text, status="error", error=f"SchemaMismatch: {exc.message}", **tokens)
    if not text:
        return Completion(text=text, status="error", error="EmptyCompletion: the model returned no text", **tokens)
    return Completion(text=text, status="ok", text_tokens=tokens["completion_tokens"], **tokens)


def _cached_tokens(usage: Any) -> int:
    details = getattr(usage, "prompt_tokens_details", None)
    return int(getattr(details, "cached_tokens", 0) or 0) if details else 0


def _duplicate_of(result: Completion) -> Completion:
    return dataclasses.replace(result, prompt_tokens=0, completion_tokens=0, cached_tokens=0, calls=0)


def _short(exc: Exception, limit: int = 500) -> str:
    message = str(exc)
    return message if len(message) <= limit else message[:limit] + "…"


def calls_in_flight(settings: Settings, tasks: int) -> int:
    """Calls one task keeps in flight when ``tasks`` run at once: ``llm.concurrency``, capped at
    ``ceil(llm.serverSlots / tasks)`` when the endpoint's slots are known."""
    slots, most = settings.llm.server_slots, settings.llm.concurrency
    return min(most, -(-slots // max(tasks, 1))) if slots else most


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on this process's worker loop (:func:`worker_loop`), from any
    thread (a pandas UDF's, the driver's, a notebook kernel's inside its own running loop)."""
    loop = worker_loop()
    if threading.current_thread() is _WORKER["thread"]:  # called from a coroutine on the loop itself
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coro).result()
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


#: This process's worker loop, its thread, the pid that made them, and the AsyncOpenAI clients on it.
_WORKER: dict[str, Any] = {"loop": None, "thread": None, "pid": None, "clients": {}}
_WORKER_LOCK = threading.Lock()


def worker_loop() -> asyncio.AbstractEventLoop:
    """One event loop per Python worker process, run forever by a daemon thread and reused by every
    batch of rows (pandas UDF call) of every job in the process, so the openai clients on it
    (:func:`_worker_client`) keep their connections across batches. Made on first use, and again
    after a fork (Spark's Python daemon forks its workers)."""
    with _WORKER_LOCK:
        if _WORKER["pid"] != os.getpid() or _WORKER["loop"] is None or _WORKER["loop"].is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="apwa-llm-loop", daemon=True)
            thread.start()
            _WORKER.update(loop=loop, thread=thread, pid=os.getpid(), clients={})
            atexit.register(_close_worker_clients, loop)
        return _WORKER["loop"]


def _close_worker_clients(loop: asyncio.AbstractEventLoop) -> None:
    """At interpreter exit: close the worker loop's openai clients (their connection pools)."""
    async def close_all() -> None:
        await asyncio.gather(*(c.close() for c in _WORKER["clients"].values()), return_exceptions=True)
        _WORKER["clients"].clear()

    if loop.is_running() and _WORKER["loop"] is loop:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), loop).result(timeout=5)


def _worker_client(settings: Settings, limiter: RateLimiter) -> openai.AsyncOpenAI:
    """The running loop's ``AsyncOpenAI`` client for this endpoint (URL, key, headers), transport,
    timeout, retries and job limiter: made once, then reused by every batch, so a process keeps one
    connection pool per endpoint and job."""
    llm = settings.llm
    options = endpoints.client_options(settings)
    key = (json.dumps(options, sort_keys=True, default=str), llm.transport, llm.timeout, llm.max_retries, id(limiter),
           id(asyncio.get_running_loop()))
    clients = _WORKER["clients"]
    if key not in clients:
        http = openai.DefaultAioHttpClient if llm.transport == "aiohttp" else openai.DefaultAsyncHttpxClient
        clients[key] = openai.AsyncOpenAI(**options, timeout=llm.timeout, max_retries=llm.max_retries,
                                          http_client=http(event_hooks=_limiter_hooks(limiter)))
        while len(clients) > MAX_WORKER_CLIENTS:  # an earlier job's client: close its connections
            asyncio.ensure_future(clients.pop(next(iter(clients))).close())
    return clients[key]


#: AsyncOpenAI clients a worker process keeps open (the most recent jobs' and endpoints').
MAX_WORKER_CLIENTS = 4
