"""``select``: keep only the named columns, in that order (one-to-one); no LLM call."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field
from pyspark.sql import DataFrame

from apwa_spark.incremental import INPUT_HASH, INPUT_KEY
from apwa_spark.plan.step import (Cardinality, Estimate, InputStats, PlannerSpec, PlanningContext, RunContext, StepConfig,
                                  StepKind)


class SelectStep(StepConfig):
    """The columns to keep (each must exist at that point of the plan)."""

    kind: Literal["select"] = "select"
    columns: list[str] = Field(..., min_length=1, description="columns to keep, in order")
    cardinality: ClassVar[Cardinality] = Cardinality.ONE_TO_ONE

    def reads(self) -> list[str]:
        return list(self.columns)

    def columns_after(self, available: list[str]) -> list[str]:
        return [c for c in self.columns if c in available]


def compile_select(df: DataFrame, name: str, step: SelectStep, run: RunContext) -> DataFrame:
    """``df.select(*columns)``, keeping any ``<step>_meta`` columns of earlier LLM steps (provenance)
    and an incremental run's ``input_key``/``input_hash`` (:mod:`apwa_spark.incremental`)."""
    kept = [c for c in df.columns if (c.endswith("_meta") or c in (INPUT_KEY, INPUT_HASH)) and c not in step.columns]
    return df.select(*step.columns, *kept)


def estimate_select(step: SelectStep, stats: InputStats) -> Estimate:
    return Estimate(0, 0, 0, rows_out=stats.rows, chars_out={c: stats.chars.get(c, 0) for c in step.columns},
                    assumption="no call")


def route_select(ctx: PlanningContext, chosen: str) -> bool:
    """A clause that speaks of columns (``keep only the name and label columns``) and names some."""
    return bool(re.search(r"\bcolumns?\b", ctx.query, re.I)) and bool(ctx.named_columns())


def build_select(ctx: PlanningContext, fields: dict) -> dict:
    ctx.decide("columns", "rule:named-columns")
    return {"kind": "select", "columns": ctx.named_columns()}


KIND = StepKind(
    config=SelectStep, compile=compile_select, estimate=estimate_select,
    planner=PlannerSpec(actions=(), examples=(), route=route_select, build=build_select, rank=8,
                        description="keep only the named columns (no LLM call)"),
)
