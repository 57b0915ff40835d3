"""The Python API: plan and run queries over DataFrames, or call one step kind directly.

    import apwa_spark
    plan = apwa_spark.plan(df, "classify each review as positive or negative")
    result = apwa_spark.run(df, plan, output="/tmp/reviews")          # a DataFrame read back from Delta
    labels = apwa_spark.classify(df, "Review: {text}", ["positive", "negative"], output="sentiment")

Each step function builds a one-step :class:`~apwa_spark.plan.ir.Plan` and runs it; ``path`` is
where its Delta tables go (default: a new temporary directory).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame

from apwa_spark.config import Settings
from apwa_spark.plan.ir import Plan
from apwa_spark.steps.chunk import ChunkStep
from apwa_spark.steps.classify import ClassifyStep
from apwa_spark.steps.extract import ExtractStep
from apwa_spark.steps.filter import FilterStep
from apwa_spark.steps.map import MapStep
from apwa_spark.steps.redact import RedactStep
from apwa_spark.steps.reduce import ReduceStep
from apwa_spark.plan.metadata import table_metadata
from apwa_spark.plan.planner import plan_query
from apwa_spark.plan.run import run_plan
from apwa_spark.plan.schema import json_schema_of


def plan(df: DataFrame, query: str, settings: Settings | None = None) -> Plan:
    """Plan ``query`` over ``df`` with the planner agent (it sees table metadata only).

    Raises:
        PlanError: the query could not be mapped to a valid plan (the message shows what was seen).
    """
    from apwa_spark.endpoint import job_endpoint

    settings = settings or Settings.load(df.sparkSession)
    metadata = table_metadata(df)
    with job_endpoint(settings, df.sparkSession.sparkContext.master) as settings:
        return plan_query(query, metadata, settings)


def run(df: DataFrame, query_or_plan: str | Plan, output: str | Path | None = None,
        settings: Settings | None = None, output_schema: str | None = None) -> DataFrame:
    """Run a plan (or plan a query first) over ``df``; returns the result read back from Delta.

    ``output``: folder (path or URI) of the run's tables; ``output_schema``: a catalog schema where
    the tables become managed Delta tables (:func:`apwa_spark.plan.run.run_plan`).
    """
    the_plan = plan(df, query_or_plan, settings) if isinstance(query_or_plan, str) else query_or_plan
    return run_plan(df, the_plan, output or tempfile.mkdtemp(prefix="apwa-"), settings, output_schema)


def _one(df: DataFrame, step, path, settings) -> DataFrame:
    return run(df, Plan(steps=[step]), path, settings)


def map_text(df: DataFrame, template: str, output: str, path=None, settings=None, max_tokens: int = 128) -> DataFrame:
    """``map``: ``template`` (``{column}`` placeholders) ──► string column ``output``."""
    return _one(df, MapStep(template=template, output=output, max_tokens=max_tokens), path, settings)


def filter_rows(df: DataFrame, predicate: str, path=None, settings=None) -> DataFrame:
    """``filter``: keep rows the model answers yes to ``predicate`` for (and rows whose check failed)."""
    return _one(df, FilterStep(template=predicate), path, settings)


def classify(df: DataFrame, template: str, labels: list[str], output: str = "label", path=None, settings=None) -> DataFrame:
    """``classify``: ``template`` ──► ``output``, one of ``labels``."""
    return _one(df, ClassifyStep(template=template, labels=labels, output=output), path, settings)


def extract(df: DataFrame, template: str, schema: Any, output: str = "extracted", path=None, settings=None) -> DataFrame:
    """``extract``: ``template`` ──► struct column ``output`` typed by ``schema`` (JSON schema or pydantic model)."""
    return _one(df, ExtractStep(template=template, output_schema=json_schema_of(schema), output=output), path, settings)


def redact(df: DataFrame, column: str = "text", entities: list[str] | None = None, output: str = "redacted",
           path=None, settings=None, keep_source: bool = False) -> DataFrame:
    """``redact``: ``output`` (text with ``[ENTITY]`` markers) and ``<output>_spans`` (``start``, ``end``,
    ``entity``); ``column`` is dropped unless ``keep_source`` (which warns). ``entities``: default every
    type the detectors know, and ``person``."""
    step = RedactStep(column=column, output=output, keep_source=keep_source, **({"entities": entities} if entities else {}))
    return _one(df, step, path, settings)


def chunk(df: DataFrame, column: str = "text", max_chars: int = 4000, by_headings: bool = False,
          output: str = "chunk", path=None, settings=None) -> DataFrame:
    """``chunk``: one row per piece of ``column``, with ``<output>_index``."""
    return _one(df, ChunkStep(column=column, max_chars=max_chars, by_headings=by_headings, output=output), path, settings)


def reduce_groups(df: DataFrame, template: str, group_by: list[str], output: str = "summary", order_by: str | None = None,
                  token_budget: int = 1200, path=None, settings=None) -> DataFrame:
    """``reduce``: one row per group, by multi-round hierarchical reduce over Delta tables."""
    step = ReduceStep(template=template, group_by=group_by, output=output, order_by=order_by, token_budget=token_budget)
    return _one(df, step, path, settings)
