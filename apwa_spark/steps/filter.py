"""``filter``: predicate template ──► keep the rows the executor agent answers yes for (selection)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType

from apwa_spark.plan import agents
from apwa_spark.plan.step import (Cardinality, InputStats, PlannerSpec, PlanningContext, RunContext, StepKind,
                                  AgentStepConfig)
from apwa_spark.plan.udf import agent_prompts, apply_llm, per_row_estimate, template_hash


class FilterStep(AgentStepConfig):
    """Predicate template ──► keep the rows the executor agent answers true for (selection)."""

    kind: Literal["filter"] = "filter"
    max_tokens: int = 4
    cardinality: ClassVar[Cardinality] = Cardinality.SELECTION


def compile_filter(df: DataFrame, name: str, step: FilterStep, run: RunContext) -> DataFrame:
    """``filter``: keep rows answered yes, and rows whose check failed (``<name>_meta.status='error'``):
    no row is dropped silently."""
    call = lambda cols, job: agents.filter_rows(agent_prompts(step, cols), job.settings, job.client())
    df = apply_llm(df, name, None, BooleanType(), run.job, template_hash(step.template), step.reads(), call)
    keep = F.col(f"__{name}.value") | (F.col(f"{name}_meta.status") != "ok")  # error and unevaluated rows stay
    return df.filter(keep).drop(f"__{name}")


def estimate_filter(step: FilterStep, stats: InputStats):
    """One call per row; every row is assumed kept (an upper bound for the steps after it)."""
    estimate = per_row_estimate(step, stats, step.max_tokens)
    return dataclasses.replace(estimate, assumption=estimate.assumption + "; all rows assumed kept")


def build_filter(ctx: PlanningContext, fields: dict) -> dict:
    ctx.decide("template", "default:query-as-instruction")
    return {"kind": "filter", "template": f"Request: {ctx.query}\nShould this text be kept?\n\nText: {{{ctx.text_column}}}"}


KIND = StepKind(
    config=FilterStep, compile=compile_filter, estimate=estimate_filter,
    planner=PlannerSpec(actions=("keep", "drop", "only"),
                        examples=(("Keep only the messages that mention a refund.", "keep"),), build=build_filter, rank=1,
                        description="keep the rows for which a yes/no question about the text holds"),
)
