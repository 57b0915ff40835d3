"""``redact``: entity types ──► redacted text plus the spans found (one-to-one); rules first, the model for names."""

from __future__ import annotations

import logging
import sys
from typing import ClassVar, Literal

from pydantic import Field
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, IntegerType, StringType, StructField, StructType

from apwa_spark.plan import agents
from apwa_spark.plan.step import (CHARS_PER_TOKEN, Cardinality, Estimate, InputStats, PlannerSpec, PlanningContext,
                                  RunContext, StepConfig, StepKind)
from apwa_spark.plan.udf import apply_llm, template_hash
from apwa_spark.tools import DEFAULT_ENTITIES, ENTITY_ALIASES

log = logging.getLogger(__name__)
#: the redact step's tools unless a plan names others: rule detectors, and name candidates for the model.
REDACT_TOOLS = ("pii_rules", "name_candidates")
#: a redact step's spans: offsets into the source text and the entity type, never the matched text.
SPAN_SCHEMA = ArrayType(StructType([
    StructField("start", IntegerType()), StructField("end", IntegerType()), StructField("entity", StringType()),
]))


class RedactStep(StepConfig):
    """Entity types ──► redacted text plus the spans found (one-to-one). Detector tools from the
    capability registry find structured entities; the model, when ``use_model``, finds names,
    choosing among the strings of a ``candidates`` tool (``name_candidates``) when one is listed.

    The output holds no PII by default: ``entities`` defaults to every type the detectors know
    (:data:`apwa_spark.tools.DEFAULT_ENTITIES`), the source ``column`` is dropped (the redacted text
    ``output`` takes its place; ``output == column`` replaces it in place), and spans carry offsets
    and the entity type, never the matched text. ``keep_source`` keeps the source column, with a
    warning: the result then holds the PII it was meant to remove.
    """

    kind: Literal["redact"] = "redact"
    column: str = "text"
    entities: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTITIES),
                                description="entity types; default: every type the detectors know, and person")
    tools: list[str] = Field(default_factory=lambda: list(REDACT_TOOLS))
    use_model: bool = True
    output: str = "redacted"
    keep_source: bool = Field(False, description="keep the source column next to the redacted text (it holds the PII)")
    cardinality: ClassVar[Cardinality] = Cardinality.ONE_TO_ONE

    def reads(self) -> list[str]:
        return [self.column]

    def writes(self) -> list[str]:
        return [self.output, f"{self.output}_spans"]

    def drops(self) -> list[str]:
        return [] if self.keep_source or self.column == self.output else [self.column]

    def text_output(self) -> str | None:
        return self.output


def compile_redact(df: DataFrame, name: str, step: RedactStep, run: RunContext) -> DataFrame:
    """``redact``: ``step.output`` (text with ``[ENTITY]`` markers) and ``<output>_spans`` (``start``,
    ``end``, ``entity``; no text). The source column is dropped unless ``step.keep_source``, which
    logs a warning and prints it on stderr; an error row's ``output`` is NULL and its ``error``
    names the class only (:func:`apwa_spark.plan.agents.redact_rows`)."""
    value = StructType([StructField("text", StringType()), StructField("spans", SPAN_SCHEMA)])
    if step.keep_source and step.column != step.output:
        warn_kept_source(name, step.column)

    def call(cols, job):
        results = agents.redact_rows(cols[0].tolist(), step.entities, step.tools, step.use_model, job.settings, job.client())
        return [agents.StepResult({"text": r.value, "spans": [{"start": s.start, "end": s.end, "entity": s.entity}
                                                              for s in r.extra]}, r.completion) for r in results]

    df = apply_llm(df, name, None, value, run.job, template_hash(step.model_dump_json()), [step.column], call)
    df = (df.withColumn(step.output, F.col(f"__{name}.value.text"))
            .withColumn(f"{step.output}_spans", F.col(f"__{name}.value.spans")).drop(f"__{name}"))
    return df.drop(*step.drops())


def warn_kept_source(step: str, column: str) -> None:
    """The one warning of ``keep_source``: logged, and printed on stderr (it must not go unseen)."""
    message = (f"redact step {step!r} keeps the source column {column!r} (keep_source): the result holds the "
               f"unredacted text and every PII value in it; drop keep_source before sharing the output")
    log.warning(message)
    print(f"[apwa] warning: {message}", file=sys.stderr, flush=True)


def estimate_redact(step: RedactStep, stats: InputStats) -> Estimate:
    """Rules cost nothing; with the model and ``person``, up to :data:`apwa_spark.plan.agents.MAX_NAMES`
    name calls per row, each reading the row's text."""
    calls = stats.rows * agents.MAX_NAMES if step.use_model and "person" in step.entities else 0
    chars = stats.chars.get(step.column, 0) * (agents.MAX_NAMES if calls else 0)
    chars_out = {k: v for k, v in stats.chars.items() if k not in step.drops()}
    return Estimate(calls, int(chars / CHARS_PER_TOKEN), calls * 24, rows_out=stats.rows,
                    chars_out={**chars_out, step.output: stats.chars.get(step.column, 0)},
                    assumption=f"at most {agents.MAX_NAMES} name calls per row" if calls else "rules only, no call")


def field_schema(ctx: PlanningContext) -> dict:
    props = {"entities": {"type": "array", "items": {"type": "string", "enum": sorted(ENTITY_ALIASES)},
                          "minItems": 1, "maxItems": 8}}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def build_redact(ctx: PlanningContext, fields: dict) -> dict:
    ctx.decide("column", "default:longest-text-column")
    return {"kind": "redact", "column": ctx.text_column, "entities": fields.get("entities") or sorted(ENTITY_ALIASES),
            "output": fields.get("output") or "redacted"}


KIND = StepKind(
    config=RedactStep, compile=compile_redact, estimate=estimate_redact,
    planner=PlannerSpec(
        actions=("redact", "mask", "anonymize", "hide", "remove personal"),
        examples=(("Hide names, e-mails and phone numbers.", "hide"),),
        field_examples=(("Hide names, e-mails and phone numbers.", {"entities": ["person", "email", "phone"]}),
                        ("Mask the IP addresses and card numbers.", {"entities": ["ip_address", "card_number"]})),
        field_schema=field_schema, build=build_redact, rank=3,
        description="replace personal data (names, e-mails, phones, ids) in a text column with [ENTITY] markers"),
)
