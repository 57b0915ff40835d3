"""``explain``: the plan, Spark's physical plan, and an estimate of LLM calls and tokens, spending nothing."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from apwa_spark.config import Settings
from apwa_spark.plan.compiler import COMPILERS
from apwa_spark.plan.ir import ChunkStep, Plan, ReduceStep
from apwa_spark.runs import JobContext

CHARS_PER_TOKEN = 3.0  # estimate only; the run counts with the endpoint's tokenizer


def estimate(df: DataFrame, plan: Plan) -> list[dict]:
    """Per step: LLM calls (upper bound: every input row) and prompt/completion tokens, estimated
    from the input's text lengths at ``CHARS_PER_TOKEN`` characters per token."""
    totals = df.agg(F.count(F.lit(1)).alias("__rows"),
                    *[F.sum(F.length(F.col(c).cast("string"))).alias(c) for c in df.columns]).first().asDict()
    rows = totals.pop("__rows")
    lengths = {c: n or 0 for c, n in totals.items()}
    out = []
    for name, step in plan.named_steps():
        if isinstance(step, ChunkStep):
            out.append({"step": name, "kind": step.kind, "llm_calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
            continue
        chars = sum(lengths.get(c, 0) for c in step.reads())
        calls = rows if not isinstance(step, ReduceStep) else max(1, int(chars / CHARS_PER_TOKEN / step.token_budget) + 1)
        template = len(getattr(step, "template", ""))
        out.append({"step": name, "kind": step.kind, "llm_calls": calls,
                    "prompt_tokens": int((chars + template * rows) / CHARS_PER_TOKEN),
                    "completion_tokens": calls * getattr(step, "max_tokens", 128)})
    return out


def explain(df: DataFrame, plan: Plan, settings: Settings) -> str:
    """The plan (YAML), the physical plan of its per-row steps, and the estimate, as text."""
    plan.check(df.columns)
    job = JobContext(settings, "explain")
    compiled = df
    for name, step in plan.named_steps():
        if isinstance(step, ReduceStep):
            break  # reduce materializes rounds over Delta; its plan depends on the data
        compiled = COMPILERS[step.kind](compiled, name, step, job)
    physical = io.StringIO()
    with redirect_stdout(physical):
        compiled.explain(mode="formatted")
    rows = estimate(df, plan)
    table = ["| step | kind | LLM calls (at most) | prompt tokens (est.) | completion tokens (at most) |", "|---|---|---:|---:|---:|"]
    table += [f"| {r['step']} | {r['kind']} | {r['llm_calls']} | {r['prompt_tokens']} | {r['completion_tokens']} |" for r in rows]
    return "\n".join(["# Plan", plan.to_yaml(), "# Spark physical plan", physical.getvalue(), "# Estimate", *table])
