"""``chunk``: split long text into ordered pieces, by size (characters, or tokens counted by the
endpoint's tokenizer) or at Markdown headings (one-to-many, explode)."""

from __future__ import annotations

from typing import ClassVar, Literal

import pandas as pd
from pydantic import Field
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, StringType

from apwa_spark.plan.step import (CHARS_PER_TOKEN, Cardinality, Estimate, InputStats, PlannerSpec, PlanningContext,
                                  RunContext, StepConfig, StepKind)
from apwa_spark.tools import chunk_texts, count_chars


class ChunkStep(StepConfig):
    """Split long text into ordered pieces (one-to-many, explode): at most ``max_chars`` characters
    each, or, with ``max_tokens``, at most that many tokens of the endpoint's own tokenizer."""

    kind: Literal["chunk"] = "chunk"
    column: str = "text"
    max_chars: int = Field(4000, ge=16)
    max_tokens: int | None = Field(None, ge=8, description="pieces of at most this many tokens (the endpoint's "
                                                           "tokenizer) instead of max_chars characters")
    by_headings: bool = False
    output: str = "chunk"
    cardinality: ClassVar[Cardinality] = Cardinality.ONE_TO_MANY

    def reads(self) -> list[str]:
        return [self.column]

    def writes(self) -> list[str]:
        return [self.output, f"{self.output}_index"]

    def text_output(self) -> str | None:
        return self.output


def compile_chunk(df: DataFrame, name: str, step: ChunkStep, run: RunContext) -> DataFrame:
    """``chunk``: one row per piece (``posexplode``), ``<output>_index`` (int) in document order; no
    LLM call (counting tokens asks the endpoint's ``/tokenize`` where it has one). NULL or empty text
    gives one empty piece, which an LLM step after it marks as an error row instead of dropping it."""
    job = run.job

    @pandas_udf(ArrayType(StringType()))
    def pieces(texts: pd.Series) -> pd.Series:
        count = job.client().count_tokens if step.max_tokens else count_chars
        chunked = chunk_texts([t if isinstance(t, str) else "" for t in texts], step.max_tokens or step.max_chars,
                              count, step.by_headings)
        return pd.Series([[piece for piece, _ in doc] for doc in chunked])

    exploded = F.posexplode(pieces(F.col(step.column))).alias(f"{step.output}_index", step.output)
    return df.select("*", exploded).withColumn(f"{step.output}_index", F.col(f"{step.output}_index").cast("int"))


def estimate_chunk(step: ChunkStep, stats: InputStats) -> Estimate:
    """No call; about ``chars / max_chars`` pieces (``max_tokens`` at :data:`CHARS_PER_TOKEN`
    characters a token) plus half a piece per row (each row's last piece half full on average), at
    least one per row."""
    chars = stats.chars.get(step.column, 0)
    size = int(step.max_tokens * CHARS_PER_TOKEN) if step.max_tokens else step.max_chars
    rows = max(stats.rows, round(chars / size + stats.rows / 2))
    unit = f"{step.max_tokens} tokens ({CHARS_PER_TOKEN:g} characters a token)" if step.max_tokens else f"{step.max_chars} characters"
    return Estimate(0, 0, 0, rows_out=rows, chars_out={**stats.chars, step.output: chars},
                    assumption=f"pieces of up to {unit}, each row's last one half full")


def field_schema(ctx: PlanningContext) -> dict:
    size = ({"type": "integer", "enum": ctx.numbers} if ctx.numbers and not ctx.free
            else {"type": "integer", "minimum": 16, "maximum": 100000})
    props = {"max_chars": size, "by_headings": {"type": "boolean"}}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def build_chunk(ctx: PlanningContext, fields: dict) -> dict:
    ctx.decide("column", "default:longest-text-column")
    return {"kind": "chunk", "column": ctx.text_column, "max_chars": fields.get("max_chars", 4000),
            "by_headings": bool(fields.get("by_headings")), "output": fields.get("output") or "chunk"}


KIND = StepKind(
    config=ChunkStep, compile=compile_chunk, estimate=estimate_chunk,
    planner=PlannerSpec(
        actions=("split", "cut", "break"),
        examples=(("Split the documents into pieces of 2000 characters.", "split"),),
        field_examples=(("Split the documents into pieces of 2000 characters.", {"max_chars": 2000, "by_headings": False}),
                        ("Cut each book into chapters at its headings.", {"max_chars": 4000, "by_headings": True})),
        field_schema=field_schema, build=build_chunk, rank=6,
        description="split each row's text into ordered pieces, one row each"),
)
