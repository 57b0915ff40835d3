"""``explain``: the plan, Spark's physical plan, and an estimate of LLM calls and tokens, spending nothing."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

from pyspark.sql import DataFrame

from apwa_spark.config import Settings
from apwa_spark.plan.compiler import compile_step
from apwa_spark.plan.estimate import estimate_table, measured_estimate, probe_run
from apwa_spark.plan.ir import Plan
from apwa_spark.plan.step import Cardinality, RunContext
from apwa_spark.runs import JobContext


def explain(df: DataFrame, plan: Plan, settings: Settings, output: str | None = None) -> str:
    """The plan (YAML), the physical plan of its steps up to the first reduce (whose rounds depend on
    the data), and the measured estimate (:func:`apwa_spark.plan.estimate.measured_estimate`: the plan
    run over a sample under a budget of 0 calls, answers of ``output``'s response cache counted free),
    as text: per step and in total, with money at ``spark.apwa.price.*`` when set. For a plan
    starting with a source step (``read_plays``), ``df`` is any DataFrame of the session.

    Raises:
        PlanError: the plan names columns ``df`` lacks.
        EndpointUnavailableError: ``llm.baseUrl`` is set but fails the preflight."""
    plan.check([] if plan.steps[0].cardinality is Cardinality.SOURCE else df.columns)
    run = RunContext(JobContext(settings, "explain"))
    compiled = df
    for name, step in plan.named_steps():
        if step.cardinality is Cardinality.MANY_TO_ONE:
            break  # reduce materializes rounds over Delta; its plan depends on the data
        compiled = compile_step(compiled, name, step, run)
    physical = io.StringIO()
    with redirect_stdout(physical):
        compiled.explain(mode="formatted")
    with probe_run(df.sparkSession, settings, output) as probe:
        rows = measured_estimate(df, plan, probe)
    return "\n".join(["# Plan", plan.to_yaml(), "# Spark physical plan", physical.getvalue(), "# Estimate",
                      *estimate_table(rows, settings)])
