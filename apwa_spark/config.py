"""Settings: the one place that reads ``spark.apwa.*`` Spark conf, ``APWA_*`` env vars and ``conf/``.

Every setting has a Spark conf key ``spark.apwa.<group>.<name>`` and an env var
``APWA_<GROUP>_<NAME>`` (camelCase split to upper snake case), e.g. ``spark.apwa.llm.baseUrl`` and
``APWA_LLM_BASE_URL``. Precedence, lowest first: code defaults, the properties file
(``conf/apwa-defaults.conf`` or ``$APWA_CONF_FILE``), env vars, the Spark session's conf,
explicit overrides (CLI flags).

The settings object is plain data (picklable): it travels inside pandas UDF closures to the
executors, so nothing on an executor reads the driver's env or conf.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator

CONF_PREFIX = "spark.apwa."
DEFAULT_CONF_FILE = Path(__file__).resolve().parent.parent / "conf" / "apwa-defaults.conf"
API_KEY, API_KEY_FILE = f"{CONF_PREFIX}llm.apiKey", f"{CONF_PREFIX}llm.apiKeyFile"
#: The executors' environment variable set through Spark conf; read on the driver as a key source too.
EXECUTOR_ENV_KEY = "spark.executorEnv.APWA_LLM_API_KEY"


class ConfigError(ValueError):
    """A setting has an invalid value; the message names the key and what was expected."""


class LLMSettings(BaseModel):
    """How executor agents reach the model (``spark.apwa.llm.*``)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    base_url: str | None = Field(None, alias="baseUrl", description="OpenAI-compatible base URL, e.g. http://host:8000/v1; unset: start the embedded endpoint")
    api_key: SecretStr | None = Field(None, alias="apiKey", description="API key; never logged or stored")
    api_key_file: str | None = Field(None, alias="apiKeyFile", description="file holding the API key (read once, on the driver)")
    model: str = Field("gemma-3-270m-q4_k_m", description="model name sent to the endpoint")
    kind: Literal["auto", "llamacpp", "vllm", "openai", "azure", "gateway"] = Field("auto", description="the endpoint's kind (token counting, structured output, default prompt style; apwa_spark.llm.endpoints); auto: detected by the preflight")
    prompt_style: Literal["auto", "completion", "chat"] = Field("auto", alias="promptStyle", description="completion: /v1/completions for base models; chat: /v1/chat/completions for instruct models; auto: the kind's default (completion for llama.cpp servers, chat otherwise)")
    concurrency: int = Field(4, ge=1, le=256, description="LLM calls in flight per Spark task")
    server_slots: int | None = Field(None, ge=1, alias="serverSlots", description="requests the endpoint serves at once; when set, each of a job's concurrent tasks keeps at most ceil(serverSlots / tasks) calls in flight, so no call waits in the server's queue against llm.timeout (set by the embedded endpoint to its embedded.parallel)")
    transport: Literal["aiohttp", "httpx"] = Field("aiohttp", description="HTTP transport of the openai client: aiohttp (the openai[aiohttp] extra, 1.6x the requests/s of httpx in benchmarks/results/throughput_*) or httpx")
    timeout: float = Field(120.0, gt=0, description="per-call timeout, seconds")
    max_retries: int = Field(3, ge=0, le=20, alias="maxRetries", description="retries of 429/5xx/connection errors/timeouts (openai client backoff, honours Retry-After)")
    temperature: float = Field(0.0, ge=0, le=2)
    seed: int | None = Field(0, description="sampling seed, where the endpoint supports one")
    frequency_penalty: float = Field(0.5, alias="frequencyPenalty", ge=-2, le=2, description="discourages the loops small base models fall into")
    rpm: float | None = Field(None, gt=0, description="requests per minute for the whole job (shared out across concurrent tasks)")
    tpm: float | None = Field(None, gt=0, description="tokens per minute for the whole job (prompt estimate + completion cap)")

    _key_source: str | None = PrivateAttr(None)

    @property
    def key_source(self) -> str | None:
        """Which setting gave the API key (``APWA_LLM_API_KEY``, ``spark.apwa.llm.apiKeyFile`` …); None: no key."""
        return self._key_source if self.api_key is not None else None


class CacheSettings(BaseModel):
    """The response cache (``spark.apwa.cache.*``): a Delta table of ok completions."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    enabled: bool = Field(True, description="reuse answers already paid for; write new ones as they arrive")
    path: str | None = Field(None, description="cache Delta table; unset: <job output>/_llm_cache")
    max_uncommitted: int = Field(64, ge=0, alias="maxUncommitted", description="answers per task that may wait for their cache commit while their calls go on; a kill repeats at most this plus llm.concurrency calls per task (0: every call waits for its commit)")
    commit_seconds: float = Field(1.0, ge=0, alias="commitSeconds", description="least seconds between two cache commits of a task; answers arriving meanwhile share the next commit, which comes at once when maxUncommitted is passed or the batch ends (0: commit as soon as the previous commit ends)")


class EmbeddedSettings(BaseModel):
    """The bundled llama.cpp server (``spark.apwa.embedded.*``)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    port: int = Field(0, ge=0, le=65535, description="0: pick a free port")
    parallel: int = Field(4, ge=1, le=64, description="server slots (llama-server -np), continuous batching")
    ctx_size: int = Field(16384, alias="ctxSize", ge=512, description="total context in tokens, shared by the slots")
    threads: int = Field(2, ge=1, description="CPU threads for the server")
    startup_timeout: float = Field(120.0, alias="startupTimeout", gt=0, description="seconds to wait for /health")


class SummarizeSettings(BaseModel):
    """The hierarchical summarization job (``spark.apwa.summarize.*``)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    chunk_tokens: int = Field(1200, alias="chunkTokens", ge=32, description="max scene tokens per level-0 chunk (endpoint tokenizer)")
    reduce_tokens: int = Field(1200, alias="reduceTokens", ge=64, description="max child-summary tokens packed into one reduce call")
    max_tokens: int = Field(96, alias="maxTokens", ge=8, le=4096, description="completion cap per summary, tokens")


class RunSettings(BaseModel):
    """Run bookkeeping (``spark.apwa.run.*``)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    registry: str = Field("~/.apwa/runs", description="folder indexing run manifests for `apwa-spark retry-failed`")
    incremental: bool = Field(True, description="a re-run of a plan that ends in a reduce (the summarize job) into the "
                              "same output recomputes only the changed input rows and their ancestors, and commits "
                              "only the tables that changed (MERGE on node_id); false: recompute and rewrite everything "
                              "(answers still come from the response cache)")

    @field_validator("registry")
    @classmethod
    def _local(cls, value: str) -> str:
        """The registry is this machine's index of runs; manifests on object stores live under each output."""
        if urlsplit(value).scheme not in ("", "file"):
            raise ValueError(f"spark.apwa.run.registry must be a local folder (the index of runs on this machine), "
                             f"got {value!r}; each run's manifest is also written under its output (<output>/_runs)")
        return value


class SqlSettings(BaseModel):
    """The SQL functions (``spark.apwa.sql.*``), read when :func:`apwa_spark.sql.register` runs."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    fail_on_error: bool = Field(False, alias="failOnError", description="a failed row raises (fails the query) instead of returning NULL")
    max_tokens: int = Field(128, alias="maxTokens", ge=1, le=8192, description="completion cap of apwa_complete and apwa_extract, tokens")


class DeltaSettings(BaseModel):
    """How tables are written (``spark.apwa.delta.*``)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    engine: Literal["auto", "native", "deltars"] = Field("auto", description="auto: native delta-spark when the session has Delta Lake (its SQL extension, or Databricks), else the delta-rs fallback; native: require it; deltars: always the fallback (needs a shared filesystem or s3:// on a cluster)")


class PriceSettings(BaseModel):
    """Prices that turn estimated tokens into money (``spark.apwa.price.*``), per 1M tokens, in
    ``currency``; unset: estimates give tokens only. Take them from the provider's price list."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    input_per_1m: float | None = Field(None, alias="inputPer1M", ge=0, description="price of 1M prompt (input) tokens")
    output_per_1m: float | None = Field(None, alias="outputPer1M", ge=0, description="price of 1M completion (output) tokens")
    currency: str = Field("USD", min_length=1, max_length=8, description="the prices' currency, as printed")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Money for that many tokens, in :attr:`currency`; None when neither price is set (an unset
        one of the two counts as 0)."""
        if self.input_per_1m is None and self.output_per_1m is None:
            return None
        return (prompt_tokens * (self.input_per_1m or 0) + completion_tokens * (self.output_per_1m or 0)) / 1e6


class BudgetSettings(BaseModel):
    """A hard budget per job (``spark.apwa.budget.*``), enforced by the driver across all executors
    (:mod:`apwa_spark.llm.budget`); unset: unlimited. Rows past it are ``unevaluated``."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    max_calls: int | None = Field(None, alias="maxCalls", ge=0, description="LLM requests per job, retries included "
                                                                      "(0: answers from the response cache only)")
    max_tokens: int | None = Field(None, alias="maxTokens", ge=1, description="prompt + completion tokens per job")
    max_cost: float | None = Field(None, alias="maxCost", gt=0, description="money per job at spark.apwa.price.* (which must be set)")

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in (self.max_calls, self.max_tokens, self.max_cost))


class EstimateSettings(BaseModel):
    """The measured estimate of ``explain`` and ``--dry-run`` (``spark.apwa.estimate.*``;
    :mod:`apwa_spark.plan.estimate`)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    sample_rows: int = Field(2000, alias="sampleRows", ge=1,
                             description="input rows the estimate runs the plan over (no LLM call; its counts are "
                                         "scaled to the whole input)")
    sample_calls: int = Field(0, alias="sampleCalls", ge=0,
                              description="real LLM calls the estimate may spend per LLM step, on the first rows the "
                                          "executors reach, to measure answer lengths, failures and a filter's "
                                          "selectivity; their answers go to the response cache, so a run pays for them "
                                          "once (needs --output or spark.apwa.cache.path); 0: spend nothing")


class PlannerSettings(BaseModel):
    """The planner agent (``spark.apwa.planner.*``)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    mode: Literal["auto", "staged", "whole"] = Field(
        "auto", description="staged: one narrow choice per call, clause by clause (base models); whole: one call with the "
                            "whole plan's JSON schema (instruct models), staged if that plan is rejected; auto: whole for "
                            "chat-style endpoints, staged otherwise")


class Settings(BaseModel):
    """All apwa-spark settings. Build with :meth:`load`; pass to jobs and UDFs as plain data."""

    model_config = ConfigDict(frozen=True)

    llm: LLMSettings = LLMSettings()
    embedded: EmbeddedSettings = EmbeddedSettings()
    summarize: SummarizeSettings = SummarizeSettings()
    cache: CacheSettings = CacheSettings()
    run: RunSettings = RunSettings()
    sql: SqlSettings = SqlSettings()
    delta: DeltaSettings = DeltaSettings()
    price: PriceSettings = PriceSettings()
    budget: BudgetSettings = BudgetSettings()
    estimate: EstimateSettings = EstimateSettings()
    planner: PlannerSettings = PlannerSettings()

    @classmethod
    def load(
        cls,
        spark: Any = None,
        overrides: Mapping[str, str] | None = None,
        conf_file: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> "Settings":
        """Merge defaults, conf file, env, Spark conf and overrides (keys ``spark.apwa.*``).

        Raises:
            ConfigError: an unknown ``spark.apwa.*`` key or an invalid value.
        """
        env = os.environ if env is None else env
        if spark is not None:
            from apwa_spark.session import protect_api_key

            protect_api_key(spark)  # a user's session: keep the key out of its Spark UI and event log
        spark_conf = dict(spark.conf.getAll.items()) if spark is not None else {}
        layers = [
            ("conf file", read_conf_file(conf_file or env.get("APWA_CONF_FILE") or DEFAULT_CONF_FILE)),
            ("env", _from_env(env)),
            ("Spark conf", {k: v for k, v in spark_conf.items() if k.startswith(CONF_PREFIX)}),
            ("--conf", dict(overrides or {})),
        ]
        merged: dict[str, str] = {}
        source = None
        for layer, keys in layers:  # apiKey and apiKeyFile are one setting: the last layer giving either wins
            if API_KEY in keys or API_KEY_FILE in keys:
                merged.pop(API_KEY, None), merged.pop(API_KEY_FILE, None)
                source = _key_source(layer, keys)
            merged.update(keys)
        if source is None and spark_conf.get(EXECUTOR_ENV_KEY):
            merged[API_KEY], source = spark_conf[EXECUTOR_ENV_KEY], EXECUTOR_ENV_KEY
        return cls._from_keys(merged, source)

    @classmethod
    def _from_keys(cls, keys: Mapping[str, str], key_source: str | None = None) -> "Settings":
        groups: dict[str, dict[str, str]] = {}
        known = known_keys()
        for key, value in keys.items():
            if key not in known:
                raise ConfigError(f"unknown setting {key!r}; known settings: {', '.join(sorted(known))}")
            group, name = key[len(CONF_PREFIX):].split(".", 1)
            groups.setdefault(group, {})[name] = value
        llm = groups.setdefault("llm", {})
        if "apiKeyFile" in llm and "apiKey" not in llm:
            llm["apiKey"] = _read_key_file(llm["apiKeyFile"])
        try:
            settings = cls(**groups)
        except ValidationError as exc:
            raise ConfigError(f"invalid apwa-spark setting: {exc}") from None
        if settings.budget.max_cost is not None and settings.price.cost(0, 0) is None:
            raise ConfigError("spark.apwa.budget.maxCost needs prices: set spark.apwa.price.inputPer1M and "
                              "spark.apwa.price.outputPer1M (money per 1M tokens)")
        settings.llm._key_source = key_source or (API_KEY_FILE if "apiKeyFile" in llm else API_KEY)
        return settings

    def api_key(self) -> str | None:
        """The API key (from ``apiKey``, ``apiKeyFile``, ``APWA_LLM_API_KEY`` or
        ``spark.executorEnv.APWA_LLM_API_KEY``, resolved on the driver); None: no key set."""
        return self.llm.api_key.get_secret_value() if self.llm.api_key is not None else None

    def with_overrides(self, **keys: str) -> "Settings":
        """A copy with some ``spark.apwa.*`` keys replaced: ``s.with_overrides(**{"spark.apwa.llm.concurrency": "8"})``.

        The API key and the setting it came from are kept unless ``keys`` gives ``apiKey`` or
        ``apiKeyFile``. ``llm.serverSlots`` describes the endpoint at ``llm.baseUrl``: a new
        ``baseUrl`` without a ``serverSlots`` of its own drops the old value.

        Raises:
            ConfigError: an unknown key or an invalid value.
        """
        current = self._keys(secret=True)
        url, slots = f"{CONF_PREFIX}llm.baseUrl", f"{CONF_PREFIX}llm.serverSlots"
        if url in keys and keys[url] != current.get(url) and slots not in keys:
            current.pop(slots, None)
        source = self.llm.key_source
        if API_KEY in keys or API_KEY_FILE in keys:
            current.pop(API_KEY, None), current.pop(API_KEY_FILE, None)
            source = None
        return self._from_keys({**current, **keys}, source)

    def as_keys(self) -> dict[str, str]:
        """Every non-secret setting as ``spark.apwa.*`` key ──► string value (for logs, manifests, Spark conf)."""
        return self._keys(secret=False)

    def _keys(self, secret: bool) -> dict[str, str]:
        out = {}
        for group in GROUPS:
            for name, value in getattr(self, group).model_dump(by_alias=True, exclude={"api_key"}).items():
                if value is not None:
                    out[f"{CONF_PREFIX}{group}.{name}"] = str(value)
        if secret and self.llm.api_key is not None:
            out[API_KEY] = self.llm.api_key.get_secret_value()
        url = f"{CONF_PREFIX}llm.baseUrl"
        if not secret and url in out:
            out[url] = _without_credentials(out[url])
        return out


def _without_credentials(url: str) -> str:
    """``https://user:password@host/v1`` ──► ``https://host/v1``: what logs and manifests may show."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _key_source(layer: str, keys: Mapping[str, str]) -> str:
    """The name of the setting that gave the key in a layer of :meth:`Settings.load`."""
    key = API_KEY if API_KEY in keys else API_KEY_FILE
    if layer == "env":
        return env_name(key)
    return key if layer == "Spark conf" else f"{key} ({layer})"


def _read_key_file(path: str) -> str:
    """The key held in ``path`` (surrounding whitespace stripped).

    Raises:
        ConfigError: the file cannot be read or is empty (the message names the path, never the key).
    """
    try:
        key = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise ConfigError(f"spark.apwa.llm.apiKeyFile: cannot read {path} ({exc.strerror}); "
                          "point it at a file holding the API key") from None
    if not key:
        raise ConfigError(f"spark.apwa.llm.apiKeyFile: {path} is empty; put the API key in it")
    return key


GROUPS: dict[str, type[BaseModel]] = {
    "llm": LLMSettings, "embedded": EmbeddedSettings, "summarize": SummarizeSettings, "cache": CacheSettings,
    "run": RunSettings, "sql": SqlSettings, "delta": DeltaSettings, "price": PriceSettings,
    "budget": BudgetSettings, "estimate": EstimateSettings, "planner": PlannerSettings,
}


def known_keys() -> set[str]:
    """All valid ``spark.apwa.*`` keys."""
    keys = set()
    for group, model in GROUPS.items():
        for name, field in model.model_fields.items():
            keys.add(f"{CONF_PREFIX}{group}.{field.alias or name}")
    return keys


def env_name(key: str) -> str:
    """``spark.apwa.llm.baseUrl`` ──► ``APWA_LLM_BASE_URL``."""
    dotted = key[len(CONF_PREFIX):]
    return "APWA_" + re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", dotted).replace(".", "_").upper()


def _from_env(env: Mapping[str, str]) -> dict[str, str]:
    return {key: env[env_name(key)] for key in known_keys() if env.get(env_name(key))}


def read_conf_file(path: str | Path) -> dict[str, str]:
    """Read ``spark.apwa.*`` entries of a spark-defaults style properties file (missing file: empty)."""
    path = Path(path)
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ") if " " in line else line.partition("=")
        if key.startswith(CONF_PREFIX):
            out[key.strip()] = value.strip()
    return out
