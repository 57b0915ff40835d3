"""The LLM client: the one place that talks to an OpenAI-compatible endpoint.

Built on the ``openai`` package's ``AsyncOpenAI``: timeouts, and retries of 429, 5xx, connection
errors and timeouts with exponential backoff that honours ``Retry-After`` are the openai client's
own (``max_retries``, ``timeout``). On top of it this module adds what a Spark task needs:

* bounded concurrency per task (``spark.apwa.llm.concurrency`` calls in flight),
* identical calls in one batch sent once,
* token usage per call, from the endpoint's ``usage`` (its own tokenizer),
* errors as data: every task gets a :class:`Completion` with ``status`` ``ok`` or ``error``;
  nothing raises per row,
* the prompt style chosen by configuration (:mod:`apwa_spark.llm.prompts`).

One client is made per batch of rows (a pandas UDF call), never per row.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
from dataclasses import dataclass
from typing import Any, Coroutine, Sequence, TypeVar
from urllib.parse import urlsplit

import httpx
import openai

from apwa_spark.config import Settings
from apwa_spark.llm.prompts import Task, cache_key, render_chat, render_completion

T = TypeVar("T")

#: Characters per token assumed where the endpoint has no ``/tokenize`` (conservative for English:
#: Gemma's tokenizer gave about 3.6 characters per token on Shakespeare here).
FALLBACK_CHARS_PER_TOKEN = 3.0


class EndpointUnavailableError(RuntimeError):
    """The configured LLM endpoint cannot be reached."""


@dataclass(frozen=True)
class Completion:
    """The outcome of one task.

    Attributes:
        text: the completion text (stripped); for an error, the raw output if any came back.
        status: ``ok`` or ``error``.
        error: ``ErrorClass: message`` when ``status`` is ``error``.
        prompt_tokens / completion_tokens / cached_tokens: from the endpoint's usage; 0 when no
            call was made (empty input, or a duplicate of another task in the batch).
        calls: LLM requests made for this task (0 or 1; retries inside the openai client not counted).
    """

    text: str | None
    status: str
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    calls: int = 0

    @classmethod
    def failed(cls, error: str, text: str | None = None, calls: int = 0) -> "Completion":
        return cls(text=text, status="error", error=error, calls=calls)


class LLMClient:
    """Sends :class:`Task` batches to the configured endpoint.

    Example::

        client = LLMClient(settings)
        [c] = client.complete([Task(template, "Two households ...", max_tokens=64)])
        c.status, c.text, c.prompt_tokens
    """

    def __init__(self, settings: Settings):
        if not settings.llm.base_url:
            raise ValueError("LLMClient needs spark.apwa.llm.baseUrl (start the embedded endpoint first)")
        self.settings = settings
        self.base_url = settings.llm.base_url.rstrip("/")

    # ---- public, synchronous (pandas UDFs, driver) -------------------------------------------
    def complete(self, tasks: Sequence[Task]) -> list[Completion]:
        """Run ``tasks`` with at most ``llm.concurrency`` in flight; one :class:`Completion` each, in order."""
        return run_sync(self.acomplete(tasks))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts of ``texts`` by the endpoint's own tokenizer (llama.cpp ``/tokenize``).

        Falls back to ``ceil(chars / 3.0)`` where the endpoint has no tokenizer route.
        """
        url = _server_root(self.base_url) + "/tokenize"
        counts = []
        with httpx.Client(timeout=self.settings.llm.timeout) as http:
            for text in texts:
                response = http.post(url, json={"content": text})
                if response.status_code == 404:
                    return [math.ceil(len(t) / FALLBACK_CHARS_PER_TOKEN) for t in texts]
                response.raise_for_status()
                counts.append(len(response.json()["tokens"]))
        return counts

    # ---- async core ------------------------------------------------------------------------------
    async def acomplete(self, tasks: Sequence[Task]) -> list[Completion]:
        style, model = self.settings.llm.prompt_style, self.settings.llm.model
        keys = [cache_key(task, style, model) for task in tasks]
        unique = {key: task for key, task in zip(keys, tasks)}
        semaphore = asyncio.Semaphore(self.settings.llm.concurrency)
        async with openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.settings.api_key(),
            timeout=self.settings.llm.timeout,
            max_retries=self.settings.llm.max_retries,
        ) as client:
            results = await asyncio.gather(*(self._one(client, semaphore, task) for task in unique.values()))
        by_key = dict(zip(unique, results))
        out, seen = [], set()
        for key in keys:
            result = by_key[key]
            out.append(result if key not in seen else _duplicate_of(result))
            seen.add(key)
        return out

    async def _one(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, task: Task) -> Completion:
        if task.input is None or not task.input.strip():
            return Completion.failed("EmptyInput: input text is empty or null; no LLM call made")
        async with semaphore:
            try:
                text, usage = await self._request(client, task)
            except openai.APIConnectionError as exc:
                return Completion.failed(f"{type(exc).__name__}: cannot reach {self.base_url}: {exc}", calls=1)
            except (openai.OpenAIError, ValueError) as exc:  # HTTP errors, malformed bodies
                return Completion.failed(f"{type(exc).__name__}: {_short(exc)}", calls=1)
        return _checked(task, text, usage)

    async def _request(self, client: openai.AsyncOpenAI, task: Task) -> tuple[str, Any]:
        llm = self.settings.llm
        params: dict[str, Any] = dict(
            model=llm.model,
            max_tokens=task.max_tokens,
            temperature=llm.temperature,
            frequency_penalty=llm.frequency_penalty,
        )
        if llm.seed is not None:
            params["seed"] = llm.seed
        if llm.prompt_style == "completion":
            prompt, stop = render_completion(task)
            extra = {"json_schema": task.json_schema} if task.json_schema else None
            stop = None if task.json_schema else stop  # the grammar ends the output; a stop could cut the JSON
            response = await client.completions.create(prompt=prompt, stop=stop, extra_body=extra, **params)
            choice_text = response.choices[0].text
            if isinstance(choice_text, str) and task.template.answer_prefix:
                choice_text = task.template.answer_prefix + choice_text
        else:
            if task.json_schema:
                params["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": task.json_schema, "strict": True},
                }
            response = await client.chat.completions.create(messages=render_chat(task), **params)
            choice_text = response.choices[0].message.content
        if not isinstance(choice_text, str):
            raise ValueError(f"endpoint returned no completion text (got {type(choice_text).__name__})")
        return choice_text, response.usage


def _checked(task: Task, text: str, usage: Any) -> Completion:
    tokens = dict(
        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        cached_tokens=_cached_tokens(usage),
        calls=1,
    )
    text = text.strip()
    if task.json_schema is not None:
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return Completion(text=text, status="error", error=f"InvalidJSON: {exc}", **tokens)
    if not text:
        return Completion(text=text, status="error", error="EmptyCompletion: the model returned no text", **tokens)
    return Completion(text=text, status="ok", **tokens)


def _cached_tokens(usage: Any) -> int:
    details = getattr(usage, "prompt_tokens_details", None)
    return int(getattr(details, "cached_tokens", 0) or 0) if details else 0


def _duplicate_of(result: Completion) -> Completion:
    return Completion(text=result.text, status=result.status, error=result.error)


def _short(exc: Exception, limit: int = 500) -> str:
    message = str(exc)
    return message if len(message) <= limit else message[:limit] + "…"


def _server_root(base_url: str) -> str:
    parts = urlsplit(base_url)
    path = parts.path[: -len("/v1")] if parts.path.endswith("/v1") else parts.path
    return f"{parts.scheme}://{parts.netloc}{path}"


def check_endpoint(settings: Settings, timeout: float = 5.0) -> None:
    """Fail fast when the configured endpoint is down.

    Raises:
        EndpointUnavailableError: naming the URL and how to start the embedded endpoint.
    """
    url = settings.llm.base_url
    try:
        response = httpx.get(f"{url.rstrip('/')}/models", timeout=timeout,
                             headers={"Authorization": f"Bearer {settings.api_key()}"})
        if response.status_code >= 500:
            raise httpx.HTTPStatusError(f"HTTP {response.status_code}", request=response.request, response=response)
    except httpx.HTTPError as exc:
        raise EndpointUnavailableError(
            f"LLM endpoint {url} is not reachable ({type(exc).__name__}: {exc}). Start it, or run the "
            "embedded one with `apwa-spark serve`, or unset spark.apwa.llm.baseUrl / APWA_LLM_BASE_URL "
            "so the job starts the embedded endpoint itself."
        ) from None


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion, also from inside a running event loop (notebook kernels)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
