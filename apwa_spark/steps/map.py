"""``map``: template ──► a new free-text column (one-to-one), one LLM call per row."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from pyspark.sql import DataFrame
from pyspark.sql.types import StringType

from apwa_spark.plan import agents
from apwa_spark.plan.step import (Cardinality, InputStats, PlannerSpec, PlanningContext, RunContext, StepKind,
                                  AgentStepConfig)
from apwa_spark.plan.udf import agent_prompts, apply_llm, per_row_estimate, template_hash


class MapStep(AgentStepConfig):
    """Template ──► a new free-text column (one-to-one)."""

    kind: Literal["map"] = "map"
    output: str = Field(..., description="new column")
    cardinality: ClassVar[Cardinality] = Cardinality.ONE_TO_ONE

    def writes(self) -> list[str]:
        return [self.output]

    def text_output(self) -> str | None:
        return self.output


def compile_map(df: DataFrame, name: str, step: MapStep, run: RunContext) -> DataFrame:
    """``map``: template ──► string column ``step.output`` and ``<name>_meta``."""
    call = lambda cols, job: agents.map_rows(agent_prompts(step, cols), step.max_tokens, job.settings, job.client())
    return apply_llm(df, name, step.output, StringType(), run.job, template_hash(step.template), step.reads(), call
                     ).drop(f"__{name}")


def estimate_map(step: MapStep, stats: InputStats):
    return per_row_estimate(step, stats, step.max_tokens)


def build_map(ctx: PlanningContext, fields: dict) -> dict:
    ctx.decide("template", "default:query-as-instruction")
    return {"kind": "map", "template": f"{ctx.query}\n\nText: {{{ctx.text_column}}}", "output": fields.get("output") or "result"}


KIND = StepKind(
    config=MapStep, compile=compile_map, estimate=estimate_map,
    planner=PlannerSpec(actions=("translate", "rewrite", "write", "describe", "shorten", "answer"),
                        examples=(("Translate each text to French.", "translate"),), build=build_map, rank=5,
                        description="write a new text column from each row"),
)
