"""``extract``: template + JSON schema of an object ──► a typed struct column (one-to-one)."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator
from pyspark.sql import DataFrame

from apwa_spark.plan import agents
from apwa_spark.plan.schema import json_schema_to_spark
from apwa_spark.plan.step import (Cardinality, InputStats, PlannerSpec, PlanningContext, RunContext, StepKind,
                                  AgentStepConfig)
from apwa_spark.plan.udf import agent_prompts, apply_llm, per_row_estimate, template_hash


class ExtractStep(AgentStepConfig):
    """Template + JSON schema of an object ──► a typed struct column (one-to-one)."""

    kind: Literal["extract"] = "extract"
    output_schema: dict[str, Any] = Field(..., description="JSON schema of an object")
    output: str = "extracted"
    max_tokens: int = 256
    cardinality: ClassVar[Cardinality] = Cardinality.ONE_TO_ONE

    @field_validator("output_schema")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        json_schema_to_spark(value)  # raises SchemaError with the reason
        return value

    def writes(self) -> list[str]:
        return [self.output]


def compile_extract(df: DataFrame, name: str, step: ExtractStep, run: RunContext) -> DataFrame:
    """``extract``: template ──► struct column typed by ``step.output_schema``, and ``<name>_meta``."""
    struct = json_schema_to_spark(step.output_schema)
    call = lambda cols, job: agents.extract_rows(agent_prompts(step, cols), step.output_schema, step.max_tokens,
                                                 job.settings, job.client())
    return apply_llm(df, name, step.output, struct, run.job, template_hash(step.template), step.reads(), call
                     ).drop(f"__{name}")


def estimate_extract(step: ExtractStep, stats: InputStats):
    return per_row_estimate(step, stats, step.max_tokens)


def field_schema(ctx: PlanningContext) -> dict:
    word = {"type": "string", "minLength": 1, "maxLength": 40} if ctx.free or not ctx.words else {"type": "string", "enum": ctx.words}
    props = {"fields": {"type": "array", "items": word, "minItems": 1, "maxItems": 8}}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def build_extract(ctx: PlanningContext, fields: dict) -> dict:
    ctx.decide("template", "default:query-as-instruction")
    ctx.decide("field_types", "default:string")
    names = [re.sub(r"\W+", "_", str(f)).strip("_").lower() for f in fields.get("fields", [])]
    props = {n: {"type": "string", "maxLength": 200} for n in dict.fromkeys(n for n in names if n)}
    return {"kind": "extract", "template": f"{ctx.query}\n\nText: {{{ctx.text_column}}}",
            "output_schema": {"type": "object", "properties": props}, "output": fields.get("output") or "extracted",
            "max_tokens": 256}


KIND = StepKind(
    config=ExtractStep, compile=compile_extract, estimate=estimate_extract,
    planner=PlannerSpec(
        actions=("extract", "pull", "get", "give", "list"),
        examples=(("Extract the title and year of each document.", "extract"),),
        field_examples=(("Extract the title and year of each document.", {"fields": ["title", "year"]}),
                        ("Get the name, age and city of each person as JSON.", {"fields": ["name", "age", "city"]})),
        field_schema=field_schema, build=build_extract, rank=2,
        description="pull named fields out of each row's text as a struct"),
)
