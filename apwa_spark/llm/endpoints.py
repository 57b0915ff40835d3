"""Endpoint kinds: the one place that knows how OpenAI-compatible servers differ.

apwa-spark talks to five kinds of endpoint (``spark.apwa.llm.kind``):

========== ======================== =================================== ================ =============
kind        token counting           structured output                   prompt style     detected by
========== ======================== =================================== ================ =============
llamacpp    ``POST /tokenize``       completions: ``json_schema``;        completion       ``GET /props``
            ``{"content": text}``    chat: ``response_format`` json_schema
vllm        ``POST /tokenize``       completions: ``structured_outputs``  chat             ``GET /version``
            ``{"prompt", "model"}``  ``{"json": ...}`` (vLLM >= 0.10.2);
                                     chat: ``response_format`` json_schema
openai      local estimate           chat: ``response_format`` strict     chat             host ``api.openai.com``
                                     json_schema (object root, closed
                                     objects; see :func:`strict_schema`)
azure       local estimate           as openai; ``api-key`` header too,   chat             host ``*.openai.azure.com``
                                     ``?api-version=`` kept from the URL
gateway     local estimate           as openai                            chat             anything else (LiteLLM proxy …)
========== ======================== =================================== ================ =============

The local estimate is ``ceil(chars / 3.0)`` (:data:`FALLBACK_CHARS_PER_TOKEN`), conservative for English
(Gemma's tokenizer gave 3.6 characters per token on Shakespeare). Completion-style structured output
on openai, azure and gateway endpoints is not constrained (those APIs have no schema field for
``/v1/completions``); the answer is still validated and repaired like any other.

:func:`preflight` runs once on the driver before any Spark work: one authenticated ``GET /models``
(the model must be listed when the endpoint lists models), then the kind's detection; it returns
settings with ``llm.kind`` and ``llm.promptStyle`` resolved, which travel to the executors.
:func:`request_headers` builds the headers of every request (the openai client's, ``/tokenize``,
``/props``, ``/models``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import parse_qsl, urlsplit

import httpx

from apwa_spark.llm.prompts import PromptStyle, clean_text

if TYPE_CHECKING:
    from apwa_spark.config import LLMSettings, Settings

log = logging.getLogger(__name__)

#: Characters per token assumed where the endpoint has no tokenizer route or counting failed.
FALLBACK_CHARS_PER_TOKEN = 3.0


class EndpointUnavailableError(RuntimeError):
    """The configured LLM endpoint failed its preflight: unreachable, the key rejected, or the model
    not served. The message is one line: what failed, the endpoint's host, where the key came from,
    what to do."""


@dataclass(frozen=True)
class EndpointKind:
    """What one kind of endpoint needs.

    Attributes:
        name: the ``spark.apwa.llm.kind`` value.
        tokenize_field: body field of ``POST <root>/tokenize`` holding the text; None: no route,
            count locally.
        completion_schema_field: extra body field carrying a JSON schema on ``/v1/completions``;
            None: not constrained there.
        strict: chat structured output must be OpenAI's strict subset (:func:`strict_schema`).
        prompt_style: the default ``llm.promptStyle``.
    """

    name: str
    tokenize_field: str | None
    completion_schema_field: str | None
    strict: bool
    prompt_style: PromptStyle


KINDS: dict[str, EndpointKind] = {k.name: k for k in (
    EndpointKind("llamacpp", "content", "json_schema", False, "completion"),
    EndpointKind("vllm", "prompt", "structured_outputs", False, "chat"),
    EndpointKind("openai", None, None, True, "chat"),
    EndpointKind("azure", None, None, True, "chat"),
    EndpointKind("gateway", None, None, True, "chat"),
)}


def kind_of(llm: "LLMSettings") -> EndpointKind:
    """The endpoint's kind: ``llm.kind`` when set (preflight sets it), else guessed from the host
    alone (openai, azure), else ``llamacpp`` (the embedded endpoint's kind)."""
    if llm.kind != "auto":
        return KINDS[llm.kind]
    return KINDS[_kind_from_host(llm.base_url or "") or "llamacpp"]


def prompt_style(llm: "LLMSettings") -> PromptStyle:
    """``llm.promptStyle``, or the kind's default when it is ``auto``."""
    return kind_of(llm).prompt_style if llm.prompt_style == "auto" else llm.prompt_style


def _kind_from_host(base_url: str) -> str | None:
    host = (urlsplit(base_url).hostname or "").lower()
    if host == "api.openai.com":
        return "openai"
    if host.endswith(".openai.azure.com"):
        return "azure"
    return None


def request_headers(settings: "Settings") -> dict[str, str]:
    """Headers of every request to the endpoint: ``Authorization: Bearer <key>`` when a key is set,
    plus Azure's ``api-key`` header for azure endpoints. Never logged."""
    key = settings.api_key()
    if not key:
        return {}
    headers = {"Authorization": f"Bearer {key}"}
    if kind_of(settings.llm).name == "azure":
        headers["api-key"] = key
    return headers


def client_options(settings: "Settings") -> dict[str, Any]:
    """Keyword arguments for ``openai.AsyncOpenAI``/``OpenAI``: base URL without its query, key,
    :func:`request_headers`, and the URL's query (Azure's ``api-version``) as default query."""
    url = settings.llm.base_url or ""
    parts = urlsplit(url)
    return dict(base_url=parts._replace(query="").geturl().rstrip("/"), api_key=settings.api_key() or "not-needed",
                default_headers=request_headers(settings), default_query=dict(parse_qsl(parts.query)) or None)


def server_root(base_url: str) -> str:
    """``http://host:8080/v1?x=y`` ──► ``http://host:8080`` (where ``/tokenize``, ``/props`` live)."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    path = path[: -len("/v1")] if path.endswith("/v1") else path
    return f"{parts.scheme}://{parts.netloc}{path}"


def host_of(settings: "Settings") -> str:
    """The endpoint as ``scheme://host[:port]/path``: no user info, no query, never the key."""
    parts = urlsplit(settings.llm.base_url or "")
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path.rstrip('/')}"


# ---- token counting ------------------------------------------------------------------------------------

_warned: set[str] = set()


def estimate_tokens(text: str) -> int:
    """The conservative local count: ``ceil(chars / 3.0)``."""
    return math.ceil(len(text) / FALLBACK_CHARS_PER_TOKEN)


async def count_tokens(settings: "Settings", texts: Sequence[str], concurrency: int = 8) -> list[int]:
    """Token counts of ``texts`` by the endpoint's own tokenizer where its kind has a route
    (llama.cpp, vLLM ``/tokenize``), ``concurrency`` requests at a time; identical texts are counted once.

    A counting failure (an HTTP error, a missing route, a malformed body) never raises: the batch
    falls back to :func:`estimate_tokens`, and a warning is logged once per endpoint and process.
    """
    kind = kind_of(settings.llm)
    if kind.tokenize_field is None or not texts:
        return [estimate_tokens(t) for t in texts]
    url = server_root(settings.llm.base_url) + "/tokenize"
    semaphore = asyncio.Semaphore(concurrency)

    async def one(http: httpx.AsyncClient, text: str) -> int:
        body = {kind.tokenize_field: clean_text(text)}
        if kind.name == "vllm":
            body["model"] = settings.llm.model
        async with semaphore:
            response = await http.post(url, json=body)
        response.raise_for_status()
        return len(response.json()["tokens"])

    unique = list(dict.fromkeys(texts))
    try:
        async with httpx.AsyncClient(timeout=settings.llm.timeout, headers=request_headers(settings)) as http:
            counts = dict(zip(unique, await asyncio.gather(*(one(http, t) for t in unique))))
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        if url not in _warned:
            _warned.add(url)
            log.warning("token counting at %s failed (%s); counting ceil(chars / %.1f) instead", host_of(settings),
                        _status_of(exc), FALLBACK_CHARS_PER_TOKEN)
        return [estimate_tokens(t) for t in texts]
    return [counts[t] for t in texts]


def _status_of(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


# ---- structured output ---------------------------------------------------------------------------------

def structured_params(llm: "LLMSettings", style: PromptStyle, schema: dict[str, Any]) -> dict[str, Any]:
    """Request keyword arguments asking ``llm``'s endpoint for JSON matching ``schema``.

    Completion style: ``extra_body`` with the kind's schema field (none on openai-like kinds).
    Chat style: ``response_format`` json_schema, made strict-compatible (:func:`strict_schema`) for
    openai, azure and gateway endpoints; read such answers back with :func:`from_strict`.
    """
    kind = kind_of(llm)
    if style == "completion":
        if kind.completion_schema_field == "structured_outputs":
            return {"extra_body": {"structured_outputs": {"json": schema}}}
        return {"extra_body": {kind.completion_schema_field: schema}} if kind.completion_schema_field else {}
    sent = strict_schema(schema) if kind.strict else schema
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": sent, "strict": True}}}


def uses_strict(llm: "LLMSettings", style: PromptStyle) -> bool:
    """Whether answers to a structured chat request come in :func:`strict_schema`'s shape."""
    return style == "chat" and kind_of(llm).strict


#: Completion tokens the ``{"value": …}`` wrapper of :func:`strict_schema` may take (braces, key,
#: the newlines and indentation a model writes), and each optional property's ``"name": null``.
WRAPPER_TOKENS, NULL_PROPERTY_TOKENS = 16, 8


def strict_overhead(schema: dict[str, Any]) -> int:
    """Extra completion tokens an answer under :func:`strict_schema` ``(schema)`` needs, so a cap
    sized for ``schema`` still fits (a filter's 4-token ``"yes"`` became ``{"value": "yes"}``)."""
    if schema.get("type") != "object":
        return WRAPPER_TOKENS
    optional = set(schema.get("properties") or {}) - set(schema.get("required") or [])
    return NULL_PROPERTY_TOKENS * len(optional)


#: The property a non-object schema is wrapped in by :func:`strict_schema`.
WRAPPED = "value"


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` in the subset OpenAI's strict structured output accepts: an object at the root
    (any other root is wrapped as ``{"value": <schema>}``), and every object closed
    (``additionalProperties: false``) with all its properties required, a property that was
    optional becoming nullable (``anyOf [<schema>, null]``).

    The rules are OpenAI's (platform docs, "Structured Outputs", supported schemas). An answer goes
    back to ``schema``'s shape with :func:`from_strict`.
    """
    schema = copy.deepcopy(schema)
    if schema.get("type") != "object":
        schema = {"type": "object", "properties": {WRAPPED: schema}, "required": [WRAPPED]}
    return _closed(schema)


def _closed(node: Any) -> Any:
    if isinstance(node, list):
        return [_closed(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _closed(v) for k, v in node.items()}
    if node.get("type") == "object" and isinstance(node.get("properties"), dict):
        required = set(node.get("required", []))
        node["properties"] = {name: (sub if name in required else {"anyOf": [sub, {"type": "null"}]})
                              for name, sub in node["properties"].items()}
        node["required"] = list(node["properties"])
        node["additionalProperties"] = False
    return node


def from_strict(text: str, schema: dict[str, Any]) -> str:
    """An answer to :func:`strict_schema` ``(schema)`` back in ``schema``'s shape (JSON text): the
    ``value`` wrapper removed, and nulls of properties that ``schema`` has optional dropped.
    Text that is not JSON is returned as it is (validation reports it)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    if schema.get("type") != "object":
        if not isinstance(value, dict) or WRAPPED not in value:
            return text
        value = value[WRAPPED]
    return json.dumps(_without_optional_nulls(value, schema))


def _without_optional_nulls(value: Any, schema: Any) -> Any:
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        required = set(schema.get("required", []))
        return {k: _without_optional_nulls(v, schema["properties"].get(k)) for k, v in value.items()
                if v is not None or k in required}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_without_optional_nulls(v, schema["items"]) for v in value]
    return value


# ---- preflight -----------------------------------------------------------------------------------------

_WRONG_KEY = "set the right key (spark.apwa.llm.apiKey, spark.apwa.llm.apiKeyFile or APWA_LLM_API_KEY)"
_UNREACHABLE = ("start it (the embedded one: `apwa-spark serve`), fix spark.apwa.llm.baseUrl, "
                "or unset it so the job starts the embedded model")

#: (base URL, key, model, kind, style) ──► (kind, style) of endpoints that passed preflight in this process.
_passed: dict[tuple, tuple[str, str]] = {}


def preflight(settings: "Settings", timeout: float = 10.0) -> "Settings":
    """Check the configured endpoint with one cheap authenticated request before any Spark work,
    and resolve its kind and prompt style.

    ``GET <baseUrl>/models`` with the key: a 4xx but 404/405 means the key was refused
    (:func:`_models_refused`); a model list that
    does not name ``llm.model`` means the model is not served; no answer means unreachable. Then,
    when ``llm.kind`` is ``auto``, the kind is detected (:func:`detect_kind`); llama.cpp servers
    list models without checking the key, so there ``GET /props`` checks it. An endpoint that
    passed is not asked again in this process.

    Returns:
        ``settings`` with ``llm.kind`` and ``llm.promptStyle`` set (they travel to the executors).

    Raises:
        EndpointUnavailableError: one line naming what failed, the host, the key's source and what to do.
    """
    import openai

    llm = settings.llm
    memo = (llm.base_url, settings.api_key(), llm.model, llm.kind, llm.prompt_style)
    if memo not in _passed:
        try:
            with openai.OpenAI(**client_options(settings), timeout=timeout, max_retries=1) as client:
                served = [m.id for m in client.models.list()]
        except openai.APIConnectionError as exc:
            raise _failure(settings, f"the endpoint is unreachable ({_cause(exc)})", _UNREACHABLE) from None
        except openai.APIStatusError as exc:
            served = _models_refused(settings, exc.status_code)
        if served and llm.model not in served:
            raise _failure(settings, f"model {llm.model!r} is not served (served: {', '.join(served[:8])})",
                           "set spark.apwa.llm.model to one of those")
        kind = llm.kind if llm.kind != "auto" else detect_kind(settings, timeout)
        if kind == "llamacpp" and llm.kind != "auto":  # llama.cpp lists models without a key; /props checks it
            with httpx.Client(timeout=timeout, headers=request_headers(settings)) as http:
                _probe(settings, http, server_root(llm.base_url) + "/props")
        style = llm.prompt_style if llm.prompt_style != "auto" else KINDS[kind].prompt_style
        _passed[memo] = (kind, style)
    kind, style = _passed[memo]
    log.info("endpoint %s: kind %s, prompt style %s", host_of(settings), kind, style)
    return settings.with_overrides(**{"spark.apwa.llm.kind": kind, "spark.apwa.llm.promptStyle": style})


def _models_refused(settings: "Settings", status: int) -> list[str]:
    """What a refused ``GET /models`` means: 404/405, no model list (an empty list: the first call
    will tell); 401/403, the key was rejected; another 4xx, the request with this key was refused
    (LiteLLM's proxy answers an unknown key with 400); 5xx, the server is unwell.

    Raises:
        EndpointUnavailableError: for every status but 404 and 405.
    """
    if status in (404, 405):
        return []
    if status in (401, 403):
        raise _failure(settings, f"the endpoint rejected the API key (HTTP {status})", _WRONG_KEY)
    if status < 500:
        raise _failure(settings, f"the endpoint refused GET /models with this API key (HTTP {status})", _WRONG_KEY)
    raise _failure(settings, f"the endpoint answered HTTP {status} to GET /models", "check the server's health and logs")


def detect_kind(settings: "Settings", timeout: float = 10.0) -> str:
    """The endpoint's kind, where it says what it is: the OpenAI and Azure hosts; llama.cpp's
    ``GET /props`` (its slots and generation settings); vLLM's ``GET /version``; otherwise
    ``gateway`` (a generic OpenAI-compatible endpoint: no tokenizer route assumed)."""
    by_host = _kind_from_host(settings.llm.base_url or "")
    if by_host:
        return by_host
    root = server_root(settings.llm.base_url)
    with httpx.Client(timeout=timeout, headers=request_headers(settings)) as http:
        props = _probe(settings, http, root + "/props")
        if isinstance(props, dict) and ("default_generation_settings" in props or "total_slots" in props):
            return "llamacpp"
        version = _probe(settings, http, root + "/version")
        if isinstance(version, dict) and set(version) == {"version"}:
            return "vllm"
    return "gateway"


def _probe(settings: "Settings", http: httpx.Client, url: str) -> Any:
    """The JSON body of ``GET url``, or None (no such route, not JSON, no answer).

    Raises:
        EndpointUnavailableError: it answered 401 or 403: the key was rejected.
    """
    try:
        response = http.get(url)
    except httpx.HTTPError:
        return None
    if response.status_code in (401, 403):
        raise _failure(settings, f"the endpoint rejected the API key (HTTP {response.status_code})", _WRONG_KEY)
    try:
        return response.json() if response.status_code == 200 else None
    except ValueError:
        return None


def _cause(exc: Exception) -> str:
    inner = exc.__cause__ or exc.__context__
    return type(inner).__name__ if inner else type(exc).__name__


def _failure(settings: "Settings", what: str, todo: str) -> EndpointUnavailableError:
    source = f"key from {settings.llm.key_source}" if settings.llm.key_source else "no API key set"
    return EndpointUnavailableError(f"LLM endpoint check failed: {what} at {host_of(settings)} ({source}); {todo}")
