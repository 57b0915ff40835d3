"""The compiler: plan ──► Spark DataFrame operations, through the step-kind registry.

Each step kind's module (:mod:`apwa_spark.steps`) holds its compile function: per-row LLM steps
(map, classify, extract, filter, redact) are pandas UDFs around an executor agent
(:mod:`apwa_spark.plan.udf`), ``chunk`` explodes, ``where``/``select`` are plain DataFrame
operations, and ``reduce`` materializes rounds of ``mapInPandas`` over partitions of whole groups,
each round a Delta table of the run's store. No step drops a row silently: ``filter`` keeps the
rows answered true *and* the rows whose check failed (``status='error'``). A row an earlier step
left ``unevaluated`` (the job's budget) stays ``unevaluated`` in the steps after it
(:func:`~apwa_spark.plan.udf.carry_unevaluated`).
"""

from __future__ import annotations

from pyspark.sql import DataFrame

from apwa_spark.plan.ir import Plan
from apwa_spark.plan.step import Cardinality, RunContext, StepConfig, step_kind
from apwa_spark.plan.udf import carry_unevaluated


def compile_step(df: DataFrame, name: str, step: StepConfig, run: RunContext) -> DataFrame:
    """One step ──► a DataFrame (lazy, except for steps that materialize into ``run.store``)."""
    return step_kind(step.kind).compile(df, name, step, run)


def compile_plan(df: DataFrame, plan: Plan, run: RunContext) -> DataFrame:
    """Every step of ``plan`` in order ──► the result DataFrame. A ``source`` step (``read_plays``)
    starts from its own input instead of ``df``; a step with ``materialize`` is written as the Delta
    table ``<name>`` of ``run.store`` and read back (:func:`apwa_spark.runs.write_table`). With
    ``run.increment`` (a plan ending in a reduce), the input rows get their key and hash and the rows
    the output's last run left as they are skip the row-level steps (:mod:`apwa_spark.incremental`).

    Raises:
        ValueError: the plan has a many-to-one or materialized step and ``run`` has no table store.
    """
    from apwa_spark.runs import write_table

    started = run.increment is None
    for name, step in plan.named_steps():
        if (step.cardinality is Cardinality.MANY_TO_ONE or step.materialize) and run.store is None:
            raise ValueError(f"step {name!r} ({step.kind}) materializes Delta tables; run the plan with "
                             "apwa_spark.plan.run.run_plan, which gives it a table store")
        if step.cardinality is Cardinality.SOURCE:
            run.writers.clear()
        elif not started:  # an incremental run: the input rows the last run left as they are go no further
            df, started = run.increment.start(df, run.store), True
        df = carry_unevaluated(compile_step(df, name, step, run), name)
        run.writers.update({c: name for c in step.writes()})
        if step.materialize:
            df = run.increment.write_rows(run, name, df) if run.increment else write_table(run.store, run.tables, name, df)
    return df
