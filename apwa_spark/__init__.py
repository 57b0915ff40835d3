"""apwa-spark: LLM executor agents over Spark DataFrames (the APWA pattern on Spark).

The path through the package: query ──► :mod:`~apwa_spark.plan.planner` ──► :class:`~apwa_spark.plan.ir.Plan`
──► :mod:`~apwa_spark.plan.compiler` (pandas UDFs) ──► :mod:`~apwa_spark.plan.agents` /
:mod:`~apwa_spark.agent` ──► :mod:`~apwa_spark.llm.client` ──► :mod:`~apwa_spark.delta`.
"""

from apwa_spark.api import chunk, classify, extract, filter_rows, map_text, plan, redact, reduce_groups, run
from apwa_spark.plan.ir import Plan, PlanError
from apwa_spark.streaming import stream
from apwa_spark.summarize import summarize_play, summarize_plays

__all__ = ["chunk", "classify", "extract", "filter_rows", "map_text", "plan", "redact", "reduce_groups", "run",
           "stream", "Plan", "PlanError", "summarize_play", "summarize_plays"]
