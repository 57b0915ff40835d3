"""``reduce``: group keys + template + token budget ──► one row per group, by multi-round
hierarchical reduce over Delta tables (many-to-one)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import pandas as pd
from pydantic import Field
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from apwa_spark.hierarchy import USABLE, Child, ReduceDidNotConverge, reduce_groups, run_rounds
from apwa_spark.llm.client import Completion
from apwa_spark.plan import agents
from apwa_spark.plan.step import (CHARS_PER_TOKEN, Cardinality, Estimate, InputStats, PlanError, PlannerSpec,
                                  PlanningContext, RunContext, StepKind, TemplateStepConfig, placeholders)
from apwa_spark.plan.udf import META_SCHEMA, meta, template_hash
from apwa_spark.runs import JobContext


class ReduceStep(TemplateStepConfig):
    """Group keys + template + token budget ──► one row per group, by multi-round hierarchical
    reduce over Delta tables (many-to-one). The template's placeholder names the text column."""

    kind: Literal["reduce"] = "reduce"
    group_by: list[str] = Field(default_factory=list, description="group keys; empty: the whole table")
    order_by: str | None = Field(None, description="document order of the children")
    token_budget: int = Field(1200, ge=64)
    output: str = "summary"
    cardinality: ClassVar[Cardinality] = Cardinality.MANY_TO_ONE

    def reads(self) -> list[str]:
        return placeholders(self.template) + self.group_by + ([self.order_by] if self.order_by else [])

    def writes(self) -> list[str]:
        return [self.output]

    def text_output(self) -> str | None:
        return self.output

    def columns_after(self, available: list[str]) -> list[str]:
        return self.group_by + self.writes()


def compile_reduce(df: DataFrame, name: str, step: ReduceStep, run: RunContext) -> DataFrame:
    """Multi-round hierarchical reduce through the engine of :mod:`apwa_spark.hierarchy`: one row per
    group, children in ``order_by`` order (NULLs first, as Spark's ascending sort), packed under
    ``token_budget`` tokens counted by the endpoint's tokenizer (``LLMClient.count_tokens``:
    llama.cpp ``/tokenize``; ``ceil(chars / 3)`` where the endpoint has none); each round is a Delta
    table ``<name>_r<k>`` of ``run.store``. Rows whose text is NULL or blank, and failed children, are
    left out of the summary and counted: the group's row is then ``partial`` (``ChildrenFailed``), or
    an ``error`` when nothing was left (the engine's failure policy).

    Raises:
        PlanError: the template names more than one text column, or the rounds do not converge.
    """
    job, store = run.job, run.store
    texts = _text_columns(step)
    if len(texts) != 1:
        raise PlanError(f"reduce step {name!r}: the template must name exactly one text column besides the "
                        f"group keys, got {texts}")
    keys = step.group_by or ["__group"]
    if not step.group_by:
        df = df.withColumn("__group", F.lit("all"))
    order = F.col(step.order_by) if step.order_by else F.monotonically_increasing_id()
    nodes = df.select(*keys, order.cast("long").alias("__order"), F.col(texts[0]).cast("string").alias(step.output),
                      F.lit(None).cast(META_SCHEMA).alias(f"{name}_meta"), F.lit(0).cast("long").alias("__failed"))
    store.write(nodes, f"{name}_r0")
    # every column nullable: a failed group's summary is NULL even where the input text column is NOT NULL
    schema = StructType([StructField(f.name, f.dataType, True) for f in nodes.schema])
    fn = _reduce_group_fn(name, step, keys, job)

    def write_round(round_no: int) -> str:
        current = store.read(f"{name}_r{round_no - 1}")
        store.write(current.groupBy(*keys).applyInPandas(fn, schema), f"{name}_r{round_no}")
        return f"{name}_r{round_no}"

    def groups_left(table: str) -> bool:
        return not store.read(table).groupBy(*keys).count().filter("count > 1").isEmpty()

    try:
        last = run_rounds(write_round, groups_left, f"reduce step {name!r}")[-1]
    except ReduceDidNotConverge as e:
        raise PlanError(str(e)) from None
    return store.read(last).drop("__order", "__failed", *(["__group"] if not step.group_by else []))


def _text_columns(step: ReduceStep) -> list[str]:
    return [c for c in placeholders(step.template) if c not in step.group_by and c != step.order_by]


def _reduce_group_fn(name: str, step: ReduceStep, keys: list[str], job: JobContext):
    text_col = _text_columns(step)[0]
    hashed = template_hash(step.template)

    def reduce_group(group: pd.DataFrame) -> pd.DataFrame:
        group = group.sort_values("__order", kind="stable", na_position="first")
        texts = [t if isinstance(t, str) else None for t in group[step.output]]
        metas = [m if isinstance(m, dict) else None for m in group[f"{name}_meta"]]
        client = job.client()
        tokens = client.count_tokens([t or "" for t in texts])  # the endpoint's own tokenizer where it has one
        children = [Child(t, m["status"] if m else "ok", n, int(f or 0), m["error"] if m else None)
                    for t, m, n, f in zip(texts, metas, tokens, group["__failed"])]
        fields = {k: group[k].iloc[0] for k in step.group_by}

        def call(batches: list[list[str]]) -> list[Completion]:
            prompts = [step.template.format_map({**fields, text_col: "\n".join(f"{i}. {t}" for i, t in enumerate(b, 1))})
                       for b in batches]
            return [dataclasses.replace(r.completion, text=r.value) for r in agents.map_rows(prompts, step.max_tokens, job.settings, client)]

        [parents] = reduce_groups([children], step.token_budget, call)
        rows = []
        for p in parents:
            first = group.iloc[p.children[0]]
            c = p.completion
            passed = c.calls == 0 and len(p.children) == 1 and metas[p.children[0]] is not None
            rows.append({**{k: first[k] for k in keys}, "__order": first["__order"],
                         step.output: c.text if c.status in USABLE else None,
                         f"{name}_meta": metas[p.children[0]] if passed else meta(c, name, job, hashed),
                         "__failed": p.failed_inputs})
        return pd.DataFrame(rows, columns=list(group.columns))

    return reduce_group


def estimate_reduce(step: ReduceStep, stats: InputStats) -> Estimate:
    """Calls: the text's tokens over the token budget, summed over the rounds (each round about
    halves the tokens); one row out per group (at most the rows in)."""
    chars = sum(stats.chars.get(c, 0) for c in placeholders(step.template))
    tokens, calls, prompt = chars / CHARS_PER_TOKEN, 0, 0
    while True:
        round_calls = max(1, int(tokens / step.token_budget) + (1 if tokens % step.token_budget else 0))
        calls, prompt = calls + round_calls, prompt + int(tokens)
        if round_calls == 1:
            break
        tokens = round_calls * step.max_tokens
    return Estimate(calls, prompt, calls * step.max_tokens, rows_out=min(stats.rows, max(1, calls)),
                    chars_out={step.output: int(calls * step.max_tokens * CHARS_PER_TOKEN)},
                    assumption=f"{CHARS_PER_TOKEN:g} characters per token; each round's answers at most max_tokens")


def named_keys(ctx: PlanningContext) -> list[str]:
    """The key columns the clause names (``… of each act``, ``… of each label``)."""
    return [c for c in ctx.named_columns() if c in ctx.key_columns and c != ctx.text_column]


def field_schema(ctx: PlanningContext) -> dict | None:
    """The group key, when the clause names none of the key columns; None: the named one decides."""
    if named_keys(ctx):
        return None
    keys = [k for k in ctx.key_columns if k != ctx.text_column]
    props = {"group_by": {"type": "string", "enum": keys + ["none"]}}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def build_reduce(ctx: PlanningContext, fields: dict) -> dict:
    ctx.decide("template", "default:query-as-instruction")
    named = named_keys(ctx)
    if named:
        ctx.decide("group_by", "rule:named-key-column")
    key = named[0] if named else fields.get("group_by", "none")
    return {"kind": "reduce", "template": f"{ctx.query}\n\nTexts:\n{{{ctx.text_column}}}",
            "group_by": [] if key in ("none", ctx.text_column) else [key], "output": fields.get("output") or "summary"}


KIND = StepKind(
    config=ReduceStep, compile=compile_reduce, estimate=estimate_reduce,
    planner=PlannerSpec(
        actions=("summarize all", "combine", "merge"),
        examples=(("Summarize all texts of each author into one summary.", "summarize all"),),
        field_examples=(("Summarize all texts of each author into one summary.", {"group_by": "author"}),
                        ("Summarize the whole table into one summary.", {"group_by": "none"})),
        field_schema=field_schema, build=build_reduce, rank=7,
        description="combine the texts of each group (or of the whole table) into one summary"),
)
