"""Running a plan: check it, start or check the endpoint, compile, materialize to Delta.

``run_plan(df, plan, output)`` validates the plan against ``df``'s columns and the capability
registry before anything runs, compiles the per-row steps lazily, and materializes at each
``reduce`` (rounds of ``groupBy().applyInPandas`` over Delta tables ``<output>/<step>_r<k>``) and at
the end (``<output>/result``). The LLM endpoint lives only for the run, so the result is returned
read back from its Delta table, not as a lazy plan over a stopped endpoint. ``output`` is a local path
or a URI (``s3a://bucket/runs/q1``); with ``output_schema`` the tables are managed Delta tables
``<schema>.result``, ``<schema>.<step>_r<k>`` instead (:class:`apwa_spark.delta.TableStore`).
"""

from __future__ import annotations

import time
from pathlib import Path

from pyspark.sql import DataFrame

from apwa_spark import storage
from apwa_spark.config import Settings
from apwa_spark.delta import TableStore
from apwa_spark.plan.compiler import compile_plan
from apwa_spark.plan.ir import Plan
from apwa_spark.plan.step import RunContext
from apwa_spark.runs import CACHE, JobContext, close_plan_run, job_budget, keyed_input, new_run_id, plan_manifest
from apwa_spark.tools import registry


def run_plan(df: DataFrame, plan: Plan, output: str | Path, settings: Settings | None = None,
             output_schema: str | None = None, source: str | None = None, key: str | None = None,
             kind: str = "plan") -> DataFrame:
    """Execute ``plan`` over ``df``; every materialized step is a Delta table under ``output``.

    The run ends with its bookkeeping (:func:`apwa_spark.runs.close_plan_run`): error rows to
    ``<output>/_dead_letter``, the response cache compacted, the manifest in ``<output>/_runs`` and
    the run registry.

    Args:
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
    from apwa_spark.endpoint import job_endpoint

    spark = df.sparkSession
    settings = settings or Settings.load(spark)
    plan.check(df.columns, set(registry()))
    df, key = keyed_input(df, key)
    started = time.monotonic()
    store = TableStore.create(spark, str(output), settings.delta.engine, output_schema)
    if settings.cache.enabled and not settings.cache.path:
        settings = settings.with_overrides(**{"spark.apwa.cache.path": store.path(CACHE)})
    manifest = plan_manifest(plan, kind, source, key, output_schema, settings)
    with (job_endpoint(settings, spark.sparkContext.master, storage.local_file(store.root, "embedded-endpoint.log")) as settings,
          job_budget(spark, settings) as budget):
        options = storage.storage_options(spark, settings.cache.path) if settings.cache.path else {}
        job = JobContext(settings, new_run_id(), spark.sparkContext.defaultParallelism, plan.plan_id, options,
                         budget_url=budget.url if budget else None)
        store.write(compile_plan(df, plan, RunContext(job, store)), "result")
        close_plan_run(store, job, plan, manifest, time.monotonic() - started, budget)
        print(f"[apwa] run {job.run_id}: plan {plan.plan_id} ──► {store.location('result')}", flush=True)
    return store.read("result")
