"""``classify``: template + closed label set ──► a label column, always one of the labels (one-to-one)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator
from pyspark.sql import DataFrame
from pyspark.sql.types import StringType, StructField, StructType

from apwa_spark.plan import agents
from apwa_spark.plan.step import (Cardinality, Estimate, InputStats, PlannerSpec, PlanningContext, RunContext, StepKind,
                                  AgentStepConfig)
from apwa_spark.plan.udf import META_SCHEMA, agent_prompts, apply_llm, meta, per_row_estimate, template_hash


class ClassifyStep(AgentStepConfig):
    """Template + closed label set ──► a label column, always one of ``labels`` (one-to-one).

    ``batch_rows > 1`` compiles to ``mapInPandas``: one executor-agent call labels up to
    ``batch_rows`` rows of a partition at once: each row between ``<row N>`` and ``</row N>`` markers in,
    a JSON object from row number to label out, so labels are mapped by row number. The rows share
    one prompt, so text in one row can still influence another row's label.
    """

    kind: Literal["classify"] = "classify"
    labels: list[str] = Field(..., min_length=2, description="the allowed labels")
    output: str = "label"
    max_tokens: int = 16
    batch_rows: int = Field(1, ge=1, le=64, description="rows per LLM call; > 1 runs per partition (mapInPandas)")
    cardinality: ClassVar[Cardinality] = Cardinality.ONE_TO_ONE

    @field_validator("labels")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or any(not v.strip() for v in value):
            raise ValueError(f"labels must be distinct and non-empty, got {value}")
        return value

    def writes(self) -> list[str]:
        return [self.output]

    def key_outputs(self) -> dict[str, list[str]]:
        return {self.output: list(self.labels)}


def compile_classify(df: DataFrame, name: str, step: ClassifyStep, run: RunContext) -> DataFrame:
    """``classify``: template ──► ``step.output``, always one of ``step.labels`` (or NULL with an error status).

    With ``step.batch_rows > 1`` it is a per-partition step (:func:`compile_classify_batched`)."""
    if step.batch_rows > 1:
        return compile_classify_batched(df, name, step, run)
    call = lambda cols, job: agents.classify_rows(agent_prompts(step, cols), step.labels, job.settings, job.client())
    return apply_llm(df, name, step.output, StringType(), run.job, template_hash(step.template), step.reads(), call
                     ).drop(f"__{name}")


def compile_classify_batched(df: DataFrame, name: str, step: ClassifyStep, run: RunContext) -> DataFrame:
    """``classify`` per partition: ``mapInPandas`` hands the executor agent each Arrow batch of a
    partition; one LLM call labels up to ``step.batch_rows`` of its rows
    (:func:`apwa_spark.plan.agents.classify_batched`). Output: the input's columns, ``step.output``
    and ``<name>_meta``, one row per input row."""
    schema = StructType([*[f for f in df.schema.fields if f.name not in (step.output, f"{name}_meta")],
                         StructField(step.output, StringType()), StructField(f"{name}_meta", META_SCHEMA)])
    hashed = template_hash(step.template + f"|batch_rows={step.batch_rows}")
    inputs, job = step.reads(), run.job

    def per_partition(frames):
        for frame in frames:
            prompts = agent_prompts(step, [frame[c] for c in inputs])
            results = agents.classify_batched(prompts, step.labels, step.batch_rows, job.settings, job.client())
            frame = frame.drop(columns=[c for c in (step.output, f"{name}_meta") if c in frame.columns])
            frame[step.output] = [r.value for r in results]
            frame[f"{name}_meta"] = [meta(r.completion, name, job, hashed) for r in results]
            yield frame[schema.fieldNames()]

    return df.mapInPandas(per_partition, schema)


def estimate_classify(step: ClassifyStep, stats: InputStats) -> Estimate:
    """One call per row, or per ``batch_rows`` rows."""
    estimate = per_row_estimate(step, stats, step.max_tokens)
    if step.batch_rows == 1:
        return estimate
    calls = -(-stats.rows // step.batch_rows)
    return Estimate(llm_calls=calls, prompt_tokens=estimate.prompt_tokens, completion_tokens=calls * (8 + 12 * step.batch_rows),
                    rows_out=stats.rows, chars_out=dict(stats.chars), assumption=f"{step.batch_rows} rows per call")


def field_schema(ctx: PlanningContext) -> dict:
    word = {"type": "string", "minLength": 1, "maxLength": 40} if ctx.free or not ctx.words else {"type": "string", "enum": ctx.words}
    props = {"labels": {"type": "array", "items": word, "minItems": 2, "maxItems": 8}}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def build_classify(ctx: PlanningContext, fields: dict) -> dict:
    ctx.decide("template", "default:query-as-instruction")
    return {"kind": "classify", "template": f"{ctx.query}\n\nText: {{{ctx.text_column}}}",
            "labels": [str(label) for label in fields.get("labels", [])], "output": fields.get("output") or "label"}


KIND = StepKind(
    config=ClassifyStep, compile=compile_classify, estimate=estimate_classify,
    planner=PlannerSpec(
        actions=("classify", "label", "sort", "categorize", "tag"),
        examples=(("Is each email spam or not spam?", "classify"),),
        field_examples=(("Is each email spam or not spam?", {"labels": ["spam", "not spam"]}),
                        ("Sort the tickets into billing, bug or question.", {"labels": ["billing", "bug", "question"]})),
        field_schema=field_schema, build=build_classify, rank=0,
        description="label each row with one of a closed set of labels"),
)
