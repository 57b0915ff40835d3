"""Per-row LLM steps as pandas UDFs: template expansion, the ``<step>_meta`` struct, and the UDF shell
around an executor agent, shared by every step kind of :mod:`apwa_spark.steps` that calls the LLM.

Every LLM step adds its value column(s) and ``<step>_meta``, a struct (:data:`META_SCHEMA`) with the
row's status, error class and message, LLM calls, tokens, cache hit and provenance (run id, plan id,
step, model, endpoint host, template hash).
"""

from __future__ import annotations

import hashlib
from typing import Callable

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import DataType, StructField, StructType

from apwa_spark.llm.client import Completion
from apwa_spark.plan.step import CHARS_PER_TOKEN, Estimate, InputStats, placeholders
from apwa_spark.runs import CALL_FIELDS, PROVENANCE_FIELDS, JobContext, call_fields
from apwa_spark.tools import tool_notes

META_SCHEMA = StructType([*CALL_FIELDS, *PROVENANCE_FIELDS])


def expand(template: str, columns: list[pd.Series]) -> list[str | None]:
    """Fill ``template``'s placeholders row by row (``columns`` in placeholder order): None where any
    of the row's values is NULL (a ``NullInput`` row); "" where every value is empty or whitespace,
    so that the template's own words are not sent alone (an ``EmptyInput`` row,
    :func:`apwa_spark.plan.agents.unsent`); else the expanded prompt."""
    names = placeholders(template)
    frame = pd.concat(columns, axis=1, keys=names) if columns else pd.DataFrame()
    out = []
    for row in frame.itertuples(index=False):
        if any(v is None or (isinstance(v, float) and pd.isna(v)) for v in row):
            out.append(None)
            continue
        values = {k: str(v) for k, v in zip(names, row)}
        out.append("" if names and not any(v.strip() for v in values.values()) else template.format_map(values))
    return out


def equip(prompts: list[str | None], tools: list[str]) -> list[str | None]:
    """Each prompt with what ``tools`` find in it appended (:func:`apwa_spark.tools.tool_notes`);
    unchanged without tools. NULL and empty prompts stay as they are."""
    if not tools:
        return prompts
    return [f"{p}\n\n{tool_notes(p, tools)}" if p else p for p in prompts]


def agent_prompts(step, columns: list[pd.Series]) -> list[str | None]:
    """An agent step's prompts: its template expanded over ``columns`` (:func:`expand`), equipped with
    its tools' findings (:func:`equip`)."""
    return equip(expand(step.template, columns), step.tools)


def template_hash(text: str) -> str:
    """sha256 of a template (16 hex digits): the ``template_hash`` of provenance."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def meta(c: Completion, name: str, job: JobContext, template_hash_: str) -> dict:
    """One row's ``<step>_meta`` values (:data:`META_SCHEMA`)."""
    return {**call_fields(c), "run_id": job.run_id, "plan_id": job.plan_id, "step": name, "model": job.settings.llm.model,
            "endpoint_host": job.endpoint_host, "template_hash": template_hash_}


def _llm_udf(name: str, value_type: DataType, job: JobContext, template_hash_: str,
             run: Callable[[list, JobContext], list]) -> Callable:
    """A non-deterministic pandas UDF (columns ──► struct<value, meta>) around an agent call."""
    schema = StructType([StructField("value", value_type), StructField("meta", META_SCHEMA)])

    @pandas_udf(schema)
    def step_udf(*columns: pd.Series) -> pd.DataFrame:
        results = run(list(columns), job)
        return pd.DataFrame({"value": [r.value for r in results],
                             "meta": [meta(r.completion, name, job, template_hash_) for r in results]})

    return step_udf.asNondeterministic()


def apply_llm(df: DataFrame, name: str, output: str | None, value_type: DataType, job: JobContext,
              template_hash_: str, inputs: list[str], run: Callable[[list, JobContext], list]) -> DataFrame:
    """``df`` with ``__<name>`` (struct<value, meta>), ``output`` (the value, unless None) and
    ``<name>_meta``; ``run(columns, job)`` is the executor agent, one ``StepResult`` per row.
    The caller drops ``__<name>``."""
    result = _llm_udf(name, value_type, job, template_hash_, run)(*[F.col(c) for c in inputs])
    df = df.withColumn(f"__{name}", result)
    if output:
        df = df.withColumn(output, F.col(f"__{name}.value"))
    return df.withColumn(f"{name}_meta", F.col(f"__{name}.meta"))


def carry_unevaluated(df: DataFrame, name: str) -> DataFrame:
    """Step ``name``'s ``NullInput`` error rows whose input is missing because an earlier step of the
    plan was left ``unevaluated`` by the job's budget become ``unevaluated`` too (error class
    ``BudgetExhausted``), so that a re-run with a larger budget finishes them instead of their
    staying errors; ``df`` unchanged when the step has no ``<name>_meta`` or no step before it has."""
    from apwa_spark.llm.budget import UNEVALUATED

    meta_col = f"{name}_meta"
    earlier = [c for c in df.columns if c.endswith("_meta") and c != meta_col]
    if meta_col not in df.columns or not earlier:
        return df
    upstream = F.lit(False)
    for column in earlier:
        upstream = upstream | F.coalesce(F.col(f"{column}.status") == UNEVALUATED, F.lit(False))
    missing = (F.col(f"{meta_col}.error_class") == "NullInput") & upstream
    carried = (F.col(meta_col).withField("status", F.lit(UNEVALUATED)).withField("error_class", F.lit("BudgetExhausted"))
               .withField("error", F.lit("BudgetExhausted: an earlier step of the plan was left unevaluated by the job's "
                                         "budget; no LLM call made. Re-run the job with a larger budget")))
    return df.withColumn(meta_col, F.when(missing, carried).otherwise(F.col(meta_col)))


def per_row_estimate(step, stats: InputStats, completion_tokens: int) -> Estimate:
    """The estimate of a one-call-per-row template step: ``stats.rows`` calls, the template and its
    columns' characters at :data:`~apwa_spark.plan.step.CHARS_PER_TOKEN` characters per token (an
    assumption; the run counts with the endpoint's tokenizer), ``completion_tokens`` per call at most."""
    chars = sum(stats.chars.get(c, 0) for c in step.reads()) + len(step.template) * stats.rows
    return Estimate(llm_calls=stats.rows, prompt_tokens=int(chars / CHARS_PER_TOKEN),
                    completion_tokens=stats.rows * completion_tokens, rows_out=stats.rows, chars_out=dict(stats.chars),
                    assumption=f"one call per row; {CHARS_PER_TOKEN:g} characters per token")
