"""Running a plan: check it, start or check the endpoint, compile, materialize to Delta.

``run_plan(df, plan, output)`` validates the plan against ``df``'s columns and the capability
registry before anything runs, compiles the per-row steps lazily, and materializes at each
``reduce`` (rounds of ``groupBy().applyInPandas`` over Delta tables ``<output>/<step>_r<k>``) and at
the end (``<output>/result``). The LLM endpoint lives only for the run, so the result is returned
read back from its Delta table, not as a lazy plan over a stopped endpoint.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from apwa_spark.config import Settings
from apwa_spark.delta import read_delta, write_delta
from apwa_spark.llm.client import Completion
from apwa_spark.plan import agents
from apwa_spark.plan.compiler import META_SCHEMA, _hash, _meta, compile_step
from apwa_spark.plan.ir import Plan, PlanError, ReduceStep, placeholders
from apwa_spark.runs import CACHE, JobContext, new_run_id
from apwa_spark.summarize import pack_children
from apwa_spark.tools import registry


def run_plan(df: DataFrame, plan: Plan, output: str | Path, settings: Settings | None = None) -> DataFrame:
    """Execute ``plan`` over ``df``; every materialized step is a Delta table under ``output``.

    Returns:
        the result, read back from ``<output>/result``.

    Raises:
        PlanError: the plan names unknown columns or tools, or cannot run over an empty input.
        EndpointUnavailableError: ``llm.baseUrl`` is set but down.
    """
    from apwa_spark.endpoint import job_endpoint

    spark = df.sparkSession
    settings = settings or Settings.load(spark)
    plan.check(df.columns, set(registry()))
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    if settings.cache.enabled and not settings.cache.path:
        settings = settings.with_overrides(**{"spark.apwa.cache.path": str(output / CACHE)})
    with job_endpoint(settings, spark.sparkContext.master, output / "embedded-endpoint.log") as settings:
        job = JobContext(settings, new_run_id(), spark.sparkContext.defaultParallelism, plan.plan_id)
        for name, step in plan.named_steps():
            if isinstance(step, ReduceStep):
                df = reduce_step(df, name, step, job, output)
            else:
                df = compile_step(df, name, step, job)
        write_delta(df, output / "result")
        print(f"[apwa] run {job.run_id}: plan {plan.plan_id} ──► {output / 'result'}", flush=True)
    return read_delta(spark, output / "result")


def reduce_step(df: DataFrame, name: str, step: ReduceStep, job: JobContext, output: Path) -> DataFrame:
    """Multi-round hierarchical reduce: one row per group, children in ``order_by`` order, packed
    under ``token_budget`` tokens counted by the endpoint's tokenizer (``LLMClient.count_tokens``:
    llama.cpp ``/tokenize``; ``ceil(chars / 3)`` where the endpoint has none); each round is a Delta
    table ``<output>/<name>_r<k>``."""
    spark = df.sparkSession
    texts = [c for c in placeholders(step.template) if c not in step.group_by and c != step.order_by]
    if len(texts) != 1:
        raise PlanError(f"reduce step {name!r}: the template must name exactly one text column besides the "
                        f"group keys, got {texts}")
    keys = step.group_by or ["__group"]
    if not step.group_by:
        df = df.withColumn("__group", F.lit("all"))
    order = F.col(step.order_by) if step.order_by else F.monotonically_increasing_id()
    nodes = df.select(*keys, order.cast("long").alias("__order"), F.col(texts[0]).cast("string").alias(step.output),
                      F.lit(None).cast(META_SCHEMA).alias(f"{name}_meta"))
    write_delta(nodes, output / f"{name}_r0")
    for round_no in range(1, 21):
        current = read_delta(spark, output / f"{name}_r{round_no - 1}")
        fn = _reduce_group_fn(name, step, keys, job)
        write_delta(current.groupBy(*keys).applyInPandas(fn, nodes.schema), output / f"{name}_r{round_no}")
        done = read_delta(spark, output / f"{name}_r{round_no}")
        if done.groupBy(*keys).count().filter("count > 1").isEmpty():
            return done.drop("__order", *(["__group"] if not step.group_by else []))
    raise PlanError(f"reduce step {name!r} did not converge in 20 rounds")


def _reduce_group_fn(name: str, step: ReduceStep, keys: list[str], job: JobContext):
    text_col = [c for c in placeholders(step.template) if c not in step.group_by and c != step.order_by][0]
    template_hash = _hash(step.template)

    def reduce_group(group: pd.DataFrame) -> pd.DataFrame:
        group = group.sort_values("__order")
        texts = group[step.output].fillna("").tolist()
        client = job.client()
        # the endpoint's own tokenizer (llama.cpp /tokenize); ceil(chars / 3) only where it has none
        batches = pack_children(client.count_tokens(texts), step.token_budget)
        multi = [b for b in batches if len(b) > 1]
        prompts = [step.template.format_map({**{k: group[k].iloc[0] for k in step.group_by},
                                             text_col: "\n".join(f"{i}. {texts[j]}" for i, j in enumerate(b, 1))})
                   for b in multi]
        answers = iter(agents.map_rows(prompts, step.max_tokens, job.settings, client))
        rows = []
        for batch in batches:
            first = group.iloc[batch[0]]
            if len(batch) == 1:
                rows.append({**{k: first[k] for k in keys}, "__order": first["__order"], step.output: texts[batch[0]],
                             f"{name}_meta": first[f"{name}_meta"] or _meta(Completion("", "ok"), name, job, template_hash)})
                continue
            answer = next(answers)
            rows.append({**{k: first[k] for k in keys}, "__order": first["__order"], step.output: answer.value,
                         f"{name}_meta": _meta(answer.completion, name, job, template_hash)})
        return pd.DataFrame(rows, columns=list(group.columns))

    return reduce_group
