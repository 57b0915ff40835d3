"""Running a plan: check it, start or check the endpoint, compile, materialize to Delta.

``run_plan(df, plan, output)`` (and :func:`execute_plan`, which returns the whole run) validates the plan against ``df``'s columns and the capability
registry before anything runs, compiles the per-row steps lazily, and materializes at each
``reduce`` (rounds of ``groupBy().applyInPandas`` over Delta tables ``<output>/<step>_r<k>``) and at
the end (``<output>/result``). The LLM endpoint lives only for the run, so the result is returned
read back from its Delta table, not as a lazy plan over a stopped endpoint. ``output`` is a local path
or a URI (``s3a://bucket/runs/q1``); with ``output_schema`` the tables are managed Delta tables
``<schema>.result``, ``<schema>.<step>_r<k>`` instead (:class:`apwa_spark.delta.TableStore`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from apwa_spark import storage
from apwa_spark.config import Settings
from apwa_spark.delta import TableStore
from apwa_spark.incremental import Increment
from apwa_spark.plan.compiler import compile_plan
from apwa_spark.plan.ir import Plan
from apwa_spark.plan.step import Cardinality, PlanError, RunContext
from apwa_spark.runs import (CACHE, CommitQueue, JobContext, TableStats, close_plan_run, failure_columns, failure_keys,
                             job_budget, keyed_input, new_run_id, observed, plan_manifest, status_columns)
from apwa_spark.tools import registry


def spread(df: DataFrame, tasks: int) -> DataFrame:
    """``df`` in at least ``tasks`` partitions (``defaultParallelism``), so that every core runs a
    share of the LLM steps: a small file is often read as one partition, which keeps one task (and
    ``llm.concurrency`` calls) busy. Unchanged when it has that many already."""
    return df.repartition(tasks) if df.rdd.getNumPartitions() < tasks else df


@dataclass
class PlanRun:
    """A finished plan run: its id, output, the ``result`` (read back from Delta), every table it
    wrote along the way with its figures (:class:`~apwa_spark.runs.TableStats`; ``result`` not
    among them), the failed rows by error class, the wall time in seconds, and the store its
    tables are in (``output``: its root)."""

    run_id: str
    result: DataFrame
    tables: list[TableStats]
    errors: dict[str, int]
    seconds: float
    store: TableStore

    @property
    def output(self) -> str:
        return self.store.root


def run_plan(df: DataFrame, plan: Plan, output: str | Path, settings: Settings | None = None,
             output_schema: str | None = None, source: str | None = None, key: str | None = None,
             kind: str = "plan") -> DataFrame:
    """Execute ``plan`` over ``df``; every materialized step is a Delta table under ``output``.

    The run ends with its bookkeeping (:func:`apwa_spark.runs.close_plan_run`): error rows to
    ``<output>/_dead_letter``, the response cache compacted, the manifest in ``<output>/_runs`` and
    the run registry.

    Args:
        df: the input; for a plan that starts with a source step (``read_plays``) any DataFrame of
            the session (its rows are not used).
        output: folder (local path or URI) of the run's tables and response cache.
        output_schema: a catalog schema: tables become managed Delta tables ``<schema>.<name>``.
        source: where ``df`` was read from (:func:`apwa_spark.inputs.source_of`), recorded so that
            ``apwa-spark retry-failed`` can read it again; None: a DataFrame it cannot re-read.
        key: the row-key column (:func:`apwa_spark.runs.keyed_input`; default ``id``/``path``, else
            an added ``row_key``).
        kind: the job, for the manifest (``run``, ``redact``, ``extract``; ``plan`` from the API).

    Returns:
        the result, read back from ``<output>/result`` (or ``<schema>.result``).

    Raises:
        PlanError: the plan names unknown columns or tools, or cannot run over an empty input.
        EndpointUnavailableError: ``llm.baseUrl`` is set but down.
        ValueError: ``output_schema`` on a session without Delta Lake, or ``key`` not in ``df``.
    """
    return execute_plan(df.sparkSession, df, plan, output, settings, output_schema, source, key, kind).result


def execute_plan(spark: SparkSession, df: DataFrame | None, plan: Plan, output: str | Path, settings: Settings | None = None,
                 output_schema: str | None = None, source: str | None = None, key: str | None = None,
                 kind: str = "plan", manifest: dict | None = None) -> PlanRun:
    """:func:`run_plan`, returning the whole :class:`PlanRun`. ``df`` may be None when the plan starts
    with a source step; ``manifest``: more fields for the run's manifest (the summarize job's plays).

    Raises:
        PlanError: as :func:`run_plan`, and ``df`` None for a plan without a source step.
    """
    from apwa_spark.endpoint import job_endpoint

    settings = settings or Settings.load(spark)
    sourced = plan.steps[0].cardinality is Cardinality.SOURCE
    if df is None and not sourced:
        raise PlanError("this plan reads an input (its first step is not a source such as read_plays); give it one "
                        "(--input)")
    df = spark.range(0) if sourced else df
    plan.check([] if sourced else df.columns, set(registry()))
    if not sourced:
        df, key = keyed_input(df, key)
    started = time.monotonic()
    store = TableStore.create(spark, str(output), settings.delta.engine, output_schema)
    if settings.cache.enabled and not settings.cache.path:
        settings = settings.with_overrides(**{"spark.apwa.cache.path": store.path(CACHE)})
    manifest = {**plan_manifest(plan, kind, source, key, output_schema, settings), **(manifest or {})}
    with (job_endpoint(settings, spark.sparkContext.master, storage.local_file(store.root, "embedded-endpoint.log")) as settings,
          job_budget(spark, settings) as budget):
        options = storage.storage_options(spark, settings.cache.path) if settings.cache.path else {}
        job = JobContext(settings, new_run_id(), spark.sparkContext.defaultParallelism, plan.plan_id, options,
                         budget_url=budget.url if budget else None)
        print(f"[apwa] run {job.run_id}: plan {plan.plan_id} ──► {store.schema or store.root}", flush=True)
        with CommitQueue(spark) as commits:  # left when its last commit is made
            run = RunContext(job, store, increment=Increment.for_plan(plan, settings, None if sourced else key, source),
                             commits=commits)
            result = compile_plan(spread(df, job.tasks), plan, run)
            steps = [name for name, _ in plan.named_steps()]
            result, counted = observed(result, status_columns(result.columns, steps))
            result, seen_failures = observed(result, failure_columns(result, steps, failure_keys(plan, key)))
            if run.increment is None or any(t.committed for t in run.tables) or not store.exists("result"):
                store.write(result, "result", note=json.dumps({"run_id": job.run_id}))  # while the queue commits
        errors = close_plan_run(store, job, plan, manifest, time.monotonic() - started, budget, run.tables,
                                counted(), seen_failures())
        print(f"[apwa] run {job.run_id}: plan {plan.plan_id} ──► {store.location('result')}", flush=True)
    return PlanRun(job.run_id, store.read("result"), run.tables, errors, time.monotonic() - started, store)
