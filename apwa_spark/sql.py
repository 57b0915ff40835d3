"""SQL functions: executor agents callable from Spark SQL, named like Databricks AI Functions.

    from apwa_spark.sql import register
    register(spark)                      # once per session; starts the embedded endpoint if none is configured
    spark.sql("SELECT id, apwa_classify(text, array('positive', 'negative')) AS label FROM reviews")

Each scalar function is a temporary SQL function with typed parameters (so a wrong argument type is
an analysis-time error) around a hidden pandas UDF ``_apwa_<name>`` that runs the executor agent
over an Arrow batch of rows and returns ``struct<result, errorMessage>``:

* ``apwa_<name>(...)`` ──► the result; a failed row gives NULL and the query goes on, unless
  ``spark.apwa.sql.failOnError`` is true (or ``apwa_complete``'s option ``failOnError``), which
  fails the query with the row's error;
* ``apwa_<name>_or_error(...)`` ──► ``struct<result, errorMessage>``, never raises.

``apwa_summarize_texts`` (and its ``_or_error``) is registered as that pandas UDF itself, not as a
SQL function: its array argument is usually built with a lambda (``transform(…, x -> x.t)``), which
Spark refuses inside a SQL function's argument (``LAMBDA_FUNCTION_WITH_SQL_UDF``).

NULL input gives NULL output without an LLM call (SQL's NULL propagation); a blank string is an
error row (``EmptyInput``). ``apwa_summarize_agg`` is a grouped-aggregate pandas UDF: it skips NULL
texts, and a group with no text left gives NULL.

Settings (endpoint, budgets, ``spark.apwa.sql.*``) are read when :func:`register` runs and travel
to the executors inside the UDFs; call it again after changing ``spark.apwa.*`` conf.
"""

from __future__ import annotations

import atexit
import contextlib
import json
from dataclasses import dataclass
from typing import Callable

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import VariantVal

from apwa_spark import storage
from apwa_spark.agent import summarize_documents
from apwa_spark.config import Settings
from apwa_spark.hierarchy import USABLE
from apwa_spark.llm.budget import UNEVALUATED
from apwa_spark.llm.client import Completion
from apwa_spark.plan import agents
from apwa_spark.steps.redact import REDACT_TOOLS
from apwa_spark.plan.schema import coerce, json_schema_to_spark, schema_from_string
from apwa_spark.runs import JobContext, job_budget, new_run_id
from apwa_spark.tools import DEFAULT_ENTITIES

#: What one function gives per row: (value or None, the call's completion or None for NULL input).
Answer = tuple[object, Completion | None]
COMPLETE_OPTIONS = {"maxTokens", "failOnError"}


class SqlFunctionError(RuntimeError):
    """A row failed under ``failOnError``; the message names the function and the row's error."""


@dataclass(frozen=True)
class SqlFunction:
    """One scalar SQL function: its SQL signature and the agent call behind it."""

    name: str
    params: str          # SQL parameter list, with types and defaults
    args: str            # the parameter names passed on to the hidden UDF
    result_type: str     # SQL type of the result
    run: Callable[[list[pd.Series], JobContext], list[Answer]]
    doc: str
    #: registered as Python UDFs, not SQL functions: Spark refuses a SQL function whose argument
    #: holds a lambda (``UNSUPPORTED_FEATURE.LAMBDA_FUNCTION_WITH_SQL_UDF``), as ``transform(…)`` does
    direct: bool = False


# ---- the agent calls, one per function ------------------------------------------------------------------

def _live(*columns: pd.Series) -> list[int]:
    """Rows whose required inputs are all non-NULL."""
    return [i for i in range(len(columns[0])) if all(c.iloc[i] is not None and not _isna(c.iloc[i]) for c in columns)]


def _isna(value) -> bool:
    return isinstance(value, float) and pd.isna(value)


def _scatter(n: int, rows: list[int], answers: list[Answer]) -> list[Answer]:
    out: list[Answer] = [(None, None)] * n
    for i, answer in zip(rows, answers):
        out[i] = answer
    return out


def _by_key(rows: list[int], key: Callable[[int], object]) -> dict[object, list[int]]:
    groups: dict[object, list[int]] = {}
    for i in rows:
        groups.setdefault(key(i), []).append(i)
    return groups


def _value(r: agents.StepResult) -> Answer:
    return (r.value if r.status == "ok" else None), r.completion


def run_complete(cols: list[pd.Series], job: JobContext) -> list[Answer]:
    prompts, options = cols
    answers: list[Answer] = [(None, None)] * len(prompts)
    rows = _live(prompts)
    for max_tokens, group in _by_key(rows, lambda i: _max_tokens(options.iloc[i], job.settings)).items():
        results = agents.map_rows([prompts.iloc[i] for i in group], max_tokens, job.settings, job.client())
        for i, r in zip(group, results):
            answers[i] = _value(r)
    return answers


def _max_tokens(options, settings: Settings) -> int:
    options = dict(options) if options is not None and not _isna(options) else {}
    unknown = set(options) - COMPLETE_OPTIONS
    if unknown:
        raise ValueError(f"apwa_complete: unknown option(s) {sorted(unknown)}; known: {sorted(COMPLETE_OPTIONS)}")
    return int(options.get("maxTokens") or settings.sql.max_tokens)


def run_extract(cols: list[pd.Series], job: JobContext) -> list[Answer]:
    texts, schemas = cols
    answers: list[Answer] = [(None, None)] * len(texts)
    for schema_text, group in _by_key(_live(texts, schemas), lambda i: schemas.iloc[i]).items():
        schema = schema_from_string(schema_text)  # SchemaError: the query fails, naming the bad part
        struct = json_schema_to_spark(schema)
        prompts = [f"Fields: {', '.join(struct.fieldNames())}\n\nText: {texts.iloc[i]}" for i in group]
        results = agents.extract_rows(prompts, schema, job.settings.sql.max_tokens, job.settings, job.client())
        for i, r in zip(group, results):
            value = VariantVal.parseJson(json.dumps(coerce(r.value, struct))) if r.status == "ok" else None
            answers[i] = value, r.completion
    return answers


def run_classify(cols: list[pd.Series], job: JobContext) -> list[Answer]:
    texts, labels = cols
    answers: list[Answer] = [(None, None)] * len(texts)
    for label_set, group in _by_key(_live(texts, labels), lambda i: tuple(labels.iloc[i])).items():
        if not label_set or any(not isinstance(x, str) or not x for x in label_set):
            raise ValueError(f"apwa_classify: labels must be a non-empty array of non-empty strings, got {list(label_set)}")
        results = agents.classify_rows([texts.iloc[i] for i in group], list(label_set), job.settings, job.client())
        for i, r in zip(group, results):
            answers[i] = _value(r)
    return answers


def run_filter(cols: list[pd.Series], job: JobContext) -> list[Answer]:
    texts, predicates = cols
    rows = _live(texts, predicates)
    prompts = [f"Question: {predicates.iloc[i]}\n\nText: {texts.iloc[i]}" for i in rows]
    return _scatter(len(texts), rows, [_value(r) for r in agents.filter_rows(prompts, job.settings, job.client())])


def run_redact(cols: list[pd.Series], job: JobContext) -> list[Answer]:
    """``apwa_redact``: rules first, then the model for names (:func:`apwa_spark.plan.agents.redact_rows`);
    ``entities`` NULL: every type the detectors know. An error row's message is its class only."""
    texts, entities = cols
    answers: list[Answer] = [(None, None)] * len(texts)
    key = lambda i: tuple(entities.iloc[i]) if entities.iloc[i] is not None else tuple(DEFAULT_ENTITIES)
    for entity_set, group in _by_key(_live(texts), key).items():
        results = agents.redact_rows([texts.iloc[i] for i in group], list(entity_set), list(REDACT_TOOLS), True,
                                     job.settings, job.client())
        for i, r in zip(group, results):
            answers[i] = _value(r)
    return answers


def run_summarize(cols: list[pd.Series], job: JobContext) -> list[Answer]:
    [texts] = cols
    rows = _live(texts)
    return _scatter(len(texts), rows, _summaries([[texts.iloc[i]] for i in rows], job))


def run_summarize_texts(cols: list[pd.Series], job: JobContext) -> list[Answer]:
    """``apwa_summarize_texts(array<string>)``: the array's texts, in array order, as one document;
    NULL elements are skipped, a NULL array gives NULL."""
    [arrays] = cols
    rows = _live(arrays)
    return _scatter(len(arrays), rows, _summaries([[t for t in arrays.iloc[i] if _text(t)] for i in rows], job))


def _summaries(documents: list[list[str]], job: JobContext) -> list[Answer]:
    """Each document through the reduce engine; a ``partial`` summary keeps its text, and its
    ``ChildrenFailed`` message is the row's ``errorMessage``."""
    return [((c.text if c.status in USABLE else None), c) for c in summarize_documents(documents, job.settings, job.client())]


def _text(value) -> bool:
    return value is not None and not _isna(value)


FUNCTIONS = [
    SqlFunction("apwa_complete", "prompt STRING, options MAP<STRING, STRING> DEFAULT NULL", "prompt, options", "STRING",
                run_complete, "the model's answer to the prompt; options: maxTokens, failOnError"),
    SqlFunction("apwa_extract", "text STRING, schema STRING", "text, schema", "VARIANT", run_extract,
                "an object shaped to the schema (Spark DDL or JSON schema); cast with ::STRUCT<...> or read fields with :name"),
    SqlFunction("apwa_classify", "text STRING, labels ARRAY<STRING>", "text, labels", "STRING", run_classify,
                "one of the labels (grammar-constrained)"),
    SqlFunction("apwa_filter", "text STRING, predicate STRING", "text, predicate", "BOOLEAN", run_filter,
                "whether the predicate (a yes/no question) holds for the text"),
    SqlFunction("apwa_redact", "text STRING, entities ARRAY<STRING> DEFAULT NULL", "text, entities", "STRING",
                run_redact, "the text with [ENTITY] markers; rule detectors plus the model for names"),
    SqlFunction("apwa_summarize", "text STRING", "text", "STRING", run_summarize,
                "a summary; long text is chunked and reduced hierarchically"),
    SqlFunction("apwa_summarize_texts", "texts ARRAY<STRING>", "texts", "STRING", run_summarize_texts,
                "one summary of the array's texts in array order (compose with collect_list and array_sort)", direct=True),
]


# ---- registration ----------------------------------------------------------------------------------------

def register(spark: SparkSession, settings: Settings | None = None, budget_url: str | None = None) -> Settings:
    """Register every ``apwa_*`` function on ``spark`` (temporary, for this session).

    Args:
        spark: the session.
        settings: default ``Settings.load(spark)``. Without ``llm.baseUrl`` the embedded endpoint is
            started once for this driver process, and ``spark.apwa.llm.baseUrl`` is set on the
            session so jobs run later in it (``summarize_play``, ``apwa_spark.run``) reuse it.
        budget_url: the budget server of the job the functions run in (``apwa-spark sql``); None:
            with ``spark.apwa.budget.*`` (or ``llm.rpm`` / ``tpm``) set, the session gets its own,
            counted from this call (a later ``register`` starts a new one). Past it, a function's
            rows are NULL, with ``BudgetExhausted`` in the ``*_or_error`` variant's ``errorMessage``,
            and never fail the query.

    Returns:
        the settings the functions use (``llm.baseUrl`` set).

    Raises:
        EndpointUnavailableError: the configured endpoint does not answer.
        EmbeddedEndpointError: the embedded endpoint could not start.
    """
    from apwa_spark.endpoint import ensure_endpoint

    settings = settings or Settings.load(spark)
    started = not settings.llm.base_url
    settings = ensure_endpoint(settings, spark.sparkContext.master)
    if started:
        for key, value in (("baseUrl", settings.llm.base_url), ("model", settings.llm.model),
                           ("serverSlots", str(settings.llm.server_slots))):
            spark.conf.set(f"spark.apwa.llm.{key}", value)
    options = storage.storage_options(spark, settings.cache.path) if settings.cache.path else {}  # an object-store cache
    job = JobContext(settings, new_run_id(), spark.sparkContext.defaultParallelism, plan_id="sql", storage_options=options,
                     budget_url=budget_url or _session_budget(spark, settings))
    fail = "true" if settings.sql.fail_on_error else "false"
    for fn in FUNCTIONS:
        if fn.direct:
            spark.udf.register(fn.name, _scalar_udf(fn, job, fail=settings.sql.fail_on_error, field="result"))
            spark.udf.register(f"{fn.name}_or_error", _scalar_udf(fn, job, fail=False))
            continue
        spark.udf.register(f"_{fn.name}", _scalar_udf(fn, job))
        fail_expr = f"coalesce(try_cast(options['failOnError'] AS BOOLEAN), {fail})" if "options" in fn.args else fail
        spark.sql(f"CREATE OR REPLACE TEMPORARY FUNCTION {fn.name}({fn.params}) RETURNS {fn.result_type} "
                  f"RETURN _{fn.name}({fn.args}, {fail_expr}).result")
        spark.sql(f"CREATE OR REPLACE TEMPORARY FUNCTION {fn.name}_or_error({fn.params}) "
                  f"RETURNS STRUCT<result: {fn.result_type}, errorMessage: STRING> RETURN _{fn.name}({fn.args}, false)")
    spark.udf.register("apwa_summarize_agg", _summarize_agg_udf(job))
    return settings


_budget = contextlib.ExitStack()
atexit.register(_budget.close)


def _session_budget(spark: SparkSession, settings: Settings) -> str | None:
    """The URL of a budget server for the session's SQL functions, the one a previous call started
    stopped first; None when no budget or rate is set (:func:`apwa_spark.runs.job_budget`)."""
    _budget.close()
    budget = _budget.enter_context(job_budget(spark, settings))
    return budget.url if budget else None


def _scalar_udf(fn: SqlFunction, job: JobContext, fail: bool | None = None, field: str | None = None):
    """The pandas UDF behind ``fn``: its inputs, then (``fail`` None) a failOnError column ──►
    ``struct<result, errorMessage>``; with ``fail`` given, the inputs only, and with ``field``
    only that field of the struct."""

    def answer(columns: tuple[pd.Series, ...]) -> pd.DataFrame:
        inputs, fails = (list(columns[:-1]), columns[-1]) if fail is None else (list(columns), None)
        answers = fn.run(inputs, job)
        errors = [c.error if c is not None and c.status != "ok" else None for _, c in answers]
        for i, (error, (_, c)) in enumerate(zip(errors, answers)):
            if error and (fail if fails is None else bool(fails.iloc[i])) and c.status != UNEVALUATED:
                raise SqlFunctionError(f"{fn.name}: {error}")  # a spent budget is no failure
        return pd.DataFrame({"result": [v for v, _ in answers], "errorMessage": errors})

    if field:
        @pandas_udf(fn.result_type.lower())
        def one_field(*columns: pd.Series) -> pd.Series:
            return answer(columns)[field]

        return one_field.asNondeterministic()

    @pandas_udf(f"struct<result {fn.result_type.lower()}, errorMessage string>")
    def call(*columns: pd.Series) -> pd.DataFrame:
        return answer(columns)

    return call.asNondeterministic()


def ordered_texts(texts: pd.Series, order: pd.Series | None) -> list[str]:
    """A group's non-NULL texts in ``order``: NULL orders first and equal orders in arrival order,
    as Spark's ascending sort (stable); arrival order without ``order``."""
    texts = texts.reset_index(drop=True)
    if order is not None:
        texts = texts.iloc[order.reset_index(drop=True).sort_values(kind="stable", na_position="first").index]
    return [t for t in texts if _text(t)]


def _summarize_agg_udf(job: JobContext):
    """``apwa_summarize_agg(text [, order])``: one hierarchical summary per group, children in
    ``order`` (any sortable column; NULLs first and ties in arrival order, as Spark's stable ascending
    sort) when given, else in the order Spark hands them over. A ``partial`` summary (some chunk
    calls failed) is returned, and fails the query under ``spark.apwa.sql.failOnError``; its
    status and count are in ``apwa_summarize_texts_or_error``."""

    @pandas_udf("string")
    def apwa_summarize_agg(*columns: pd.Series) -> str:
        texts = ordered_texts(columns[0], columns[1] if len(columns) > 1 else None)
        [result] = summarize_documents([texts], job.settings, job.client())
        if result.status not in ("ok", UNEVALUATED) and result.error_class != "EmptyInput" and job.settings.sql.fail_on_error:
            raise SqlFunctionError(f"apwa_summarize_agg: {result.error}")
        return result.text if result.status in USABLE else None

    return apwa_summarize_agg.asNondeterministic()
