"""``map``: template ──► a new free-text column (one-to-one), one LLM call per row."""

from __future__ import annotations

import dataclasses
from functools import reduce
from typing import ClassVar, Literal

from pydantic import Field
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import MapType, StringType

from apwa_spark.plan import agents
from apwa_spark.plan.step import (CHARS_PER_TOKEN, AgentStepConfig, Cardinality, InputStats, PlannerSpec, PlanningContext, PromptConfig,
                                  RunContext, StepKind)
from apwa_spark.plan.udf import agent_prompts, apply_llm, per_row_estimate, template_hash


class MapStep(AgentStepConfig):
    """Template ──► a new free-text column (one-to-one).

    ``prompt`` replaces the default instruction (``Do what the request below asks``) when the
    template is only the row's input, e.g. the summarize job's level 0::

        - kind: map
          template: "{chunk}"
          prompt: {instruction: "Here is a part of a play.", cue: "Summary of the part above: In this part,",
                   answer_prefix: "In this part,", tidy: true}
          output: summary
          distinct: true
    """

    kind: Literal["map"] = "map"
    output: str = Field(..., description="new column")
    prompt: PromptConfig | None = Field(None, description="the shared instruction and cue; default: do what the template asks")
    distinct: bool = Field(False, description="send each distinct input once: rows with the same template columns "
                                              "share one answer, its call counted on one of them")
    cardinality: ClassVar[Cardinality] = Cardinality.ONE_TO_ONE

    def writes(self) -> list[str]:
        return [self.output]

    def text_output(self) -> str | None:
        return self.output


def compile_map(df: DataFrame, name: str, step: MapStep, run: RunContext) -> DataFrame:
    """``map``: template ──► string column ``step.output`` and ``<name>_meta``.

    With ``distinct`` (prompt dedup), the pandas UDF runs over the distinct values of the template's
    columns (``defaultParallelism`` partitions) and every row joins its values' answer (NULL-safe, so
    no row is lost); the call's counts stay on the first row of each set (ordered by the other
    columns) and the others show 0 calls, so sums over rows stay exact, whichever partitions the
    duplicates were in.
    """
    template = step.prompt.template() if step.prompt else agents.MAP_TEMPLATE
    tidy = bool(step.prompt and step.prompt.tidy)
    call = lambda cols, job: agents.map_rows(agent_prompts(step, cols), step.max_tokens, job.settings, job.client(),
                                             template, tidy)
    hashed = template_hash(step.template + (step.prompt.model_dump_json() if step.prompt else ""))
    if not step.distinct:
        return apply_llm(df, name, step.output, StringType(), run.job, hashed, step.reads(), call).drop(f"__{name}")
    inputs = step.reads()
    values = df.select(*inputs).distinct().repartition(max(1, run.job.tasks))
    answers = apply_llm(values, name, step.output, StringType(), run.job, hashed, inputs, call).drop(f"__{name}")
    answers = answers.select(*[F.col(c).alias(f"__{name}_{c}") for c in inputs], step.output, f"{name}_meta")
    joined = df.join(answers, reduce(lambda a, b: a & b, [df[c].eqNullSafe(answers[f"__{name}_{c}"]) for c in inputs]))
    others = [F.col(f.name) for f in df.schema.fields if f.name not in inputs and not isinstance(f.dataType, MapType)]
    first = F.row_number().over(Window.partitionBy(*inputs).orderBy(*others or [F.lit(0)])) == 1
    meta = F.col(f"{name}_meta")
    shared = meta.withField("llm_calls", F.lit(0)).withField("prompt_tokens", F.lit(0).cast("long")) \
        .withField("completion_tokens", F.lit(0).cast("long")).withField("cached_tokens", F.lit(0).cast("long"))
    return joined.withColumn(f"{name}_meta", F.when(first, meta).otherwise(shared)).drop(*[f"__{name}_{c}" for c in inputs])


def estimate_map(step: MapStep, stats: InputStats):
    """One call per row; the output column at most ``max_tokens`` a row (for the steps after it)."""
    e = per_row_estimate(step, stats, step.max_tokens)
    return dataclasses.replace(e, chars_out={**e.chars_out, step.output: int(stats.rows * step.max_tokens * CHARS_PER_TOKEN)})


def build_map(ctx: PlanningContext, fields: dict) -> dict:
    ctx.decide("template", "default:query-as-instruction")
    return {"kind": "map", "template": f"{ctx.query}\n\nText: {{{ctx.text_column}}}", "output": fields.get("output") or "result"}


KIND = StepKind(
    config=MapStep, compile=compile_map, estimate=estimate_map,
    planner=PlannerSpec(actions=("translate", "rewrite", "write", "describe", "shorten", "answer"),
                        examples=(("Translate each text to French.", "translate"),), build=build_map, rank=5,
                        description="write a new text column from each row"),
)
