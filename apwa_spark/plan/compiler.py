"""The compiler: plan ──► Spark DataFrame operations, one function per step kind.

Per-row LLM steps (map, classify, extract, filter, redact) are pandas UDFs (Series ──► struct)
whose body is an executor agent from :mod:`apwa_spark.plan.agents`; the UDF gets the template's
columns as Arrow-backed Series and expands the template in pandas. ``chunk`` is a pandas UDF to an
array plus ``posexplode``; ``classify`` with ``batch_rows > 1`` is a per-partition step
(``mapInPandas``: one agent call labels several rows); ``reduce`` runs rounds of ``groupBy().applyInPandas`` over Delta tables
(:func:`apwa_spark.plan.run.run_plan` materializes them).

Every LLM step adds its value column(s) and ``<step>_meta``, a struct with the row's status, error
class and message, LLM calls, tokens, cache hit and provenance (run id, step, model, endpoint host,
template hash). No step drops a row silently: ``filter`` keeps the rows answered true *and* the rows
whose check failed (``status='error'``).
"""

from __future__ import annotations

from typing import Callable

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, BooleanType, DataType, IntegerType, StringType, StructField, StructType

from apwa_spark.llm.client import Completion
from apwa_spark.plan import agents
from apwa_spark.plan.ir import (ChunkStep, ClassifyStep, ExtractStep, FilterStep, MapStep, Plan, RedactStep,
                                ReduceStep, placeholders)
from apwa_spark.plan.schema import json_schema_to_spark
from apwa_spark.runs import CALL_FIELDS, PROVENANCE_FIELDS, JobContext, call_fields
from apwa_spark.tools import split_text

META_SCHEMA = StructType([*CALL_FIELDS, *PROVENANCE_FIELDS])
SPAN_SCHEMA = ArrayType(StructType([
    StructField("start", IntegerType()), StructField("end", IntegerType()),
    StructField("entity", StringType()), StructField("text", StringType()),
]))


def expand(template: str, columns: list[pd.Series]) -> list[str | None]:
    """Fill ``template``'s placeholders row by row; None where any of the row's values is NULL."""
    names = placeholders(template)
    frame = pd.concat(columns, axis=1, keys=names) if columns else pd.DataFrame()
    out = []
    for row in frame.itertuples(index=False):
        values = dict(zip(names, row))
        out.append(None if any(v is None or (isinstance(v, float) and pd.isna(v)) for v in values.values())
                   else template.format_map({k: str(v) for k, v in values.items()}))
    return out


def _meta(c: Completion, name: str, job: JobContext, template_hash: str) -> dict:
    return {
        **call_fields(c), "run_id": job.run_id, "plan_id": job.plan_id, "step": name, "model": job.settings.llm.model, "endpoint_host": job.endpoint_host,
        "template_hash": template_hash,
    }


def _llm_udf(name: str, value_type: DataType, job: JobContext, template_hash: str,
             run: Callable[[list, JobContext], list]) -> Callable:
    """A non-deterministic pandas UDF (columns ──► struct<value, meta>) around an agent call."""
    schema = StructType([StructField("value", value_type), StructField("meta", META_SCHEMA)])

    @pandas_udf(schema)
    def step_udf(*columns: pd.Series) -> pd.DataFrame:
        results = run(list(columns), job)
        return pd.DataFrame({"value": [r.value for r in results],
                             "meta": [_meta(r.completion, name, job, template_hash) for r in results]})

    return step_udf.asNondeterministic()


def _apply_llm(df: DataFrame, name: str, output: str | None, value_type: DataType, job: JobContext,
               template_hash: str, inputs: list[str], run) -> DataFrame:
    result = _llm_udf(name, value_type, job, template_hash, run)(*[F.col(c) for c in inputs])
    df = df.withColumn(f"__{name}", result)
    if output:
        df = df.withColumn(output, F.col(f"__{name}.value"))
    return df.withColumn(f"{name}_meta", F.col(f"__{name}.meta"))


def _hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- one compile function per step kind ------------------------------------------------------------------

def compile_map(df: DataFrame, name: str, step: MapStep, job: JobContext) -> DataFrame:
    """``map``: template ──► string column ``step.output``."""
    run = lambda cols, job: agents.map_rows(expand(step.template, cols), step.max_tokens, job.settings, job.client())
    return _apply_llm(df, name, step.output, StringType(), job, _hash(step.template), step.reads(), run).drop(f"__{name}")


def compile_classify(df: DataFrame, name: str, step: ClassifyStep, job: JobContext) -> DataFrame:
    """``classify``: template ──► ``step.output``, always one of ``step.labels`` (or NULL with an error status).

    With ``step.batch_rows > 1`` it is a per-partition step (:func:`compile_classify_batched`)."""
    if step.batch_rows > 1:
        return compile_classify_batched(df, name, step, job)
    run = lambda cols, job: agents.classify_rows(expand(step.template, cols), step.labels, job.settings, job.client())
    return _apply_llm(df, name, step.output, StringType(), job, _hash(step.template), step.reads(), run).drop(f"__{name}")


def compile_classify_batched(df: DataFrame, name: str, step: ClassifyStep, job: JobContext) -> DataFrame:
    """``classify`` per partition: ``mapInPandas`` hands the executor agent each Arrow batch of a
    partition; one LLM call labels up to ``step.batch_rows`` of its rows
    (:func:`apwa_spark.plan.agents.classify_batched`). Output: the input's columns, ``step.output``
    and ``<name>_meta``, one row per input row."""
    schema = StructType([*[f for f in df.schema.fields if f.name not in (step.output, f"{name}_meta")],
                         StructField(step.output, StringType()), StructField(f"{name}_meta", META_SCHEMA)])
    template_hash = _hash(step.template + f"|batch_rows={step.batch_rows}")
    inputs = step.reads()

    def per_partition(frames):
        for frame in frames:
            prompts = expand(step.template, [frame[c] for c in inputs])
            results = agents.classify_batched(prompts, step.labels, step.batch_rows, job.settings, job.client())
            frame = frame.drop(columns=[c for c in (step.output, f"{name}_meta") if c in frame.columns])
            frame[step.output] = [r.value for r in results]
            frame[f"{name}_meta"] = [_meta(r.completion, name, job, template_hash) for r in results]
            yield frame[schema.fieldNames()]

    return df.mapInPandas(per_partition, schema)


def compile_extract(df: DataFrame, name: str, step: ExtractStep, job: JobContext) -> DataFrame:
    """``extract``: template ──► struct column typed by ``step.output_schema``."""
    struct = json_schema_to_spark(step.output_schema)
    run = lambda cols, job: agents.extract_rows(expand(step.template, cols), step.output_schema, step.max_tokens,
                                                job.settings, job.client())
    return _apply_llm(df, name, step.output, struct, job, _hash(step.template), step.reads(), run).drop(f"__{name}")


def compile_filter(df: DataFrame, name: str, step: FilterStep, job: JobContext) -> DataFrame:
    """``filter``: keep rows answered yes, and rows whose check failed (``<step>_meta.status='error'``)."""
    run = lambda cols, job: agents.filter_rows(expand(step.template, cols), job.settings, job.client())
    df = _apply_llm(df, name, None, BooleanType(), job, _hash(step.template), step.reads(), run)
    keep = F.col(f"__{name}.value") | (F.col(f"{name}_meta.status") == "error")
    return df.filter(keep).drop(f"__{name}")


def compile_redact(df: DataFrame, name: str, step: RedactStep, job: JobContext) -> DataFrame:
    """``redact``: ``step.output`` (text with ``[ENTITY]`` markers) and ``<output>_spans``."""
    value = StructType([StructField("text", StringType()), StructField("spans", SPAN_SCHEMA)])

    def run(cols, job):
        results = agents.redact_rows(cols[0].tolist(), step.entities, step.tools, step.use_model, job.settings, job.client())
        return [agents.StepResult({"text": r.value, "spans": [vars(s) for s in r.extra]}, r.completion) for r in results]

    df = _apply_llm(df, name, None, value, job, _hash(step.model_dump_json()), [step.column], run)
    return (df.withColumn(step.output, F.col(f"__{name}.value.text"))
              .withColumn(f"{step.output}_spans", F.col(f"__{name}.value.spans")).drop(f"__{name}"))


def compile_chunk(df: DataFrame, name: str, step: ChunkStep, job: JobContext) -> DataFrame:
    """``chunk``: one row per piece (``posexplode``), ``<output>_index`` in document order; no LLM."""
    @pandas_udf(ArrayType(StringType()))
    def pieces(texts: pd.Series) -> pd.Series:
        return pd.Series([split_text(t, step.max_chars, step.by_headings) for t in texts])

    exploded = F.posexplode(pieces(F.col(step.column))).alias(f"{step.output}_index", step.output)
    return df.select("*", exploded).withColumn(f"{step.output}_index", F.col(f"{step.output}_index").cast("int"))


COMPILERS: dict[str, Callable[[DataFrame, str, object, JobContext], DataFrame]] = {
    "map": compile_map, "classify": compile_classify, "extract": compile_extract, "filter": compile_filter,
    "redact": compile_redact, "chunk": compile_chunk,
}


def compile_step(df: DataFrame, name: str, step, job: JobContext) -> DataFrame:
    """One non-reduce step ──► a lazy DataFrame (the step kind's compile function)."""
    return COMPILERS[step.kind](df, name, step, job)


def compile_steps(df: DataFrame, plan: Plan, job: JobContext) -> DataFrame:
    """All steps of a plan that has no ``reduce`` ──► one lazy DataFrame (``run_plan`` handles reduce)."""
    for name, step in plan.named_steps():
        if isinstance(step, ReduceStep):
            raise ValueError("compile_steps cannot run a reduce step; use apwa_spark.plan.run.run_plan")
        df = COMPILERS[step.kind](df, name, step, job)
    return df

