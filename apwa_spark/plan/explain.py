"""``explain``: the plan, Spark's physical plan, and an estimate of LLM calls and tokens, spending nothing."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from apwa_spark.config import Settings
from apwa_spark.plan.compiler import compile_step
from apwa_spark.plan.ir import Plan
from apwa_spark.plan.step import Cardinality, InputStats, RunContext, step_kind
from apwa_spark.runs import JobContext


def estimate(df: DataFrame, plan: Plan) -> list[dict]:
    """Per step (``step``, ``kind``, ``llm_calls``, ``prompt_tokens``, ``completion_tokens``,
    ``rows_out``, ``assumption``), each step kind's own estimate (its module's ``estimate``) fed
    with the rows and characters the step before hands on; one Spark aggregate over ``df``."""
    totals = df.agg(F.count(F.lit(1)).alias("__rows"),
                    *[F.sum(F.length(F.col(c).cast("string"))).alias(c) for c in df.columns]).first().asDict()
    stats = InputStats(rows=totals.pop("__rows"), chars={c: n or 0 for c, n in totals.items()})
    out = []
    for name, step in plan.named_steps():
        e = step_kind(step.kind).estimate(step, stats)
        out.append({"step": name, "kind": step.kind, "llm_calls": e.llm_calls, "prompt_tokens": e.prompt_tokens,
                    "completion_tokens": e.completion_tokens, "rows_out": e.rows_out, "assumption": e.assumption})
        stats = InputStats(rows=e.rows_out, chars=e.chars_out, groups=e.groups or stats.groups)
    return out


def explain(df: DataFrame, plan: Plan, settings: Settings) -> str:
    """The plan (YAML), the physical plan of its steps up to the first reduce (whose rounds depend on
    the data), and the estimate, as text: per step and in total, with money at
    ``spark.apwa.price.*`` when set. For a plan starting with a source step (``read_plays``), ``df``
    is any DataFrame of the session."""
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
    return "\n".join(["# Plan", plan.to_yaml(), "# Spark physical plan", physical.getvalue(), "# Estimate",
                      *estimate_table(estimate(df, plan), settings)])


def estimate_table(rows: list[dict], settings: Settings) -> list[str]:
    """:func:`estimate`'s rows as a Markdown table with a total row; the cost column is money at
    ``spark.apwa.price.*`` (``n/a`` without prices). Answers already in the response cache are
    counted as calls: the figures are upper bounds."""
    price = settings.price
    money = lambda p, c: "n/a" if (v := price.cost(p, c)) is None else f"{v:.4f} {price.currency}"
    table = ["| step | kind | LLM calls (at most) | prompt tokens (est.) | completion tokens (at most) | rows out | assumption | cost |",
             "|---|---|---:|---:|---:|---:|---|---:|"]
    table += [f"| {r['step']} | {r['kind']} | {r['llm_calls']} | {r['prompt_tokens']} | {r['completion_tokens']} | "
              f"{r['rows_out']} | {r['assumption']} | {money(r['prompt_tokens'], r['completion_tokens'])} |" for r in rows]
    calls, prompt, completion = (sum(r[k] for r in rows) for k in ("llm_calls", "prompt_tokens", "completion_tokens"))
    basis = (f"prices per 1M tokens: {price.input_per_1m or 0:g} in, {price.output_per_1m or 0:g} out"
             if price.cost(0, 0) is not None else "set spark.apwa.price.inputPer1M / outputPer1M for a money figure")
    table.append(f"| total | | {calls} | {prompt} | {completion} | | {basis} | {money(prompt, completion)} |")
    return table
