"""The estimate of a plan's cost: calls, prompt and completion tokens and rows per step, for
``explain`` and every job's ``--dry-run``; it spends no LLM call unless ``sampleCalls`` allows some.

Each step kind's module holds its own estimate (its ``estimate``: the step's calls and tokens from
the rows and characters entering it). This module chains them, two ways:

* **static** (:func:`estimate`): from the input's row count and characters alone; each step hands
  the next its estimated rows and characters, and names its assumptions (characters per token,
  rows a filter keeps, group sizes);
* **measured** (:func:`measured_estimate`): the plan runs for real over a sample of the input
  (``spark.apwa.estimate.sampleRows`` rows, default 2,000; counts scaled to the whole input) under a
  budget of 0 calls (``spark.apwa.budget.maxCalls=0``, :mod:`apwa_spark.llm.budget`), so that

  - steps without LLM calls give exact rows: a source (``read_plays``), ``chunk`` (pieces cut by
    the endpoint's tokenizer), ``where``, ``select``;
  - an LLM step takes its answers from the response cache (free) and leaves every other row
    ``unevaluated``: its calls and tokens are the static figures for the rows left, and a filter's
    selectivity is the share the cache's answers kept (all rows assumed kept when none);
  - with ``spark.apwa.estimate.sampleCalls`` N, an LLM step may spend N real calls (their answers
    cached for the run), which give the tokens per call, failures and a filter's selectivity;
  - a ``reduce`` measures its group sizes on the rows that reach it (input not sampled), then runs
    its rounds under the same budget into ``<output>/_estimate``: the nodes its cache answers cost
    nothing, and a tree answered whole costs 0 calls.

  Only the endpoint's preflight and tokenizer are called, and, with ``sampleCalls``, that many
  completions per LLM step.
"""

from __future__ import annotations

import dataclasses
import io
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from typing import Iterator

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from apwa_spark.config import Settings
from apwa_spark.plan.compiler import compile_step
from apwa_spark.plan.ir import Plan
from apwa_spark.plan.step import Cardinality, Estimate, InputStats, RunContext, step_kind
from apwa_spark.plan.udf import carry_unevaluated

#: The estimate's run writes the probe tables of a reduce here, under the run's output.
PROBE_FOLDER = "_estimate"


def estimate(df: DataFrame, plan: Plan) -> list[dict]:
    """The static estimate: per step (``step``, ``kind``, ``llm_calls``, ``prompt_tokens``,
    ``completion_tokens``, ``rows_out``, ``cached_calls``, ``assumption``), each step kind's own
    estimate fed with the rows and characters the step before hands on; one Spark aggregate over ``df``."""
    stats = _input_stats(df)
    out = []
    for name, step in plan.named_steps():
        e = step_kind(step.kind).estimate(step, stats)
        out.append(_row(name, step.kind, e))
        stats = InputStats(rows=e.rows_out, chars=e.chars_out, groups=e.groups or stats.groups)
    return out


def measured_estimate(df: DataFrame, plan: Plan, run: RunContext) -> list[dict]:
    """The measured estimate (module docstring): :func:`estimate`'s rows, from the plan run over a
    sample of ``df`` under ``run`` (:func:`probe_run`: a budget of 0 calls; its store, when set,
    takes a reduce's probe tables, None: a reduce is not probed).

    Raises:
        PlanError: as compiling the plan does (unknown columns, a template naming a missing one).
    """
    sample_rows = run.job.settings.estimate.sample_rows
    frame, scale = _sample(df, sample_rows)
    stats, probed, survive, metas = _input_stats(frame, scale), frame, 1.0, []
    present = float(stats.rows)  # rows of the probe entering the step (scaled)
    out = []
    for name, step in plan.named_steps():
        kind = step_kind(step.kind)
        if probed is None:  # after a reduce: the static chain
            e = kind.estimate(step, stats)
        elif step.cardinality is Cardinality.MANY_TO_ONE:
            e = kind.estimate(step, dataclasses.replace(stats, frame=probed if scale == 1 else None))
            e = _probe_reduce(probed, name, step, run, e) if scale == 1 and run.store is not None else e
            probed = None
        else:
            static = kind.estimate(step, stats)
            if step.cardinality is Cardinality.SOURCE:
                probed, scale = _sample(compile_step(probed, name, step, run), sample_rows)
                measure = Measure.of(probed, None, metas, scale)
            else:
                with _sampling(run, static.llm_calls) as step_run:
                    probed = carry_unevaluated(compile_step(probed, name, step, step_run), name).localCheckpoint()
                    meta = f"{name}_meta" if f"{name}_meta" in probed.columns else None
                    measure = Measure.of(probed, meta, metas, scale)
            e, kept = _measured(static, measure, present, survive, scale, step.cardinality is Cardinality.SELECTION)
            present = measure.rows
            survive, metas = survive * kept, metas + [f"{name}_meta"] * (f"{name}_meta" in probed.columns)
            run.writers.update({c: name for c in step.writes()})
        out.append(_row(name, step.kind, e))
        stats = InputStats(rows=e.rows_out, chars=e.chars_out, groups=e.groups or stats.groups)
    return out


@contextmanager
def probe_run(spark: SparkSession, settings: Settings, output: str | None) -> Iterator[RunContext]:
    """The run context of a measured estimate: the job's endpoint (preflight only; an embedded one is
    started as for a run), a budget of 0 calls (answers from the response cache only), the response
    cache of ``output`` (``<output>/_llm_cache``, or ``spark.apwa.cache.path``), and a store at
    ``<output>/_estimate`` for a reduce's probe tables (None without ``output`` or without a cache
    table yet: a reduce is not probed, and nothing is written).

    Raises:
        EndpointUnavailableError: ``llm.baseUrl`` is set but fails the preflight.
    """
    from apwa_spark import storage
    from apwa_spark.delta import TableStore
    from apwa_spark.endpoint import job_endpoint
    from apwa_spark.llm.cache import ResponseCache
    from apwa_spark.runs import CACHE, JobContext, job_budget, new_run_id

    settings = settings.with_overrides(**{"spark.apwa.budget.maxCalls": "0"})
    if output and settings.cache.enabled and not settings.cache.path:
        settings = settings.with_overrides(**{"spark.apwa.cache.path": storage.join(storage.normalize(output), CACHE)})
    options = storage.storage_options(spark, settings.cache.path) if settings.cache.path else {}
    cached = bool(settings.cache.path) and ResponseCache(settings.cache.path, options).exists()
    store = (TableStore.create(spark, storage.join(storage.normalize(output), PROBE_FOLDER), settings.delta.engine)
             if output and cached else None)
    with job_endpoint(settings, spark.sparkContext.master) as settings, job_budget(spark, settings) as budget:
        yield RunContext(JobContext(settings, new_run_id(), spark.sparkContext.defaultParallelism, "estimate", options,
                                    budget_url=budget.url), store)


@contextmanager
def _sampling(run: RunContext, static_calls: int) -> Iterator[RunContext]:
    """``run``, or for an LLM step with ``spark.apwa.estimate.sampleCalls`` set and a response cache
    to keep the answers in, a copy whose budget grants that many real calls (a budget server of its
    own, for this step only)."""
    from apwa_spark.runs import job_budget

    settings = run.job.settings
    calls = settings.estimate.sample_calls
    if not (calls and static_calls and settings.cache.enabled and settings.cache.path):
        yield run
        return
    spark = SparkSession.getActiveSession()
    with job_budget(spark, settings.with_overrides(**{"spark.apwa.budget.maxCalls": str(calls)})) as budget:
        yield dataclasses.replace(run, job=dataclasses.replace(run.job, budget_url=budget.url))


@dataclass(frozen=True)
class Measure:
    """What one Spark aggregate over a probed step's rows shows, scaled to the whole input:
    ``rows``, characters and non-NULL values per column, and from ``<step>_meta``: rows answered
    from the cache, rows left ``unevaluated`` (each would call), of those the rows ``carried`` from
    an earlier step left unevaluated (their input is not known yet), error rows, and the rows the
    estimate's own sample calls answered or failed, with their tokens."""

    rows: float
    chars: dict[str, float]
    filled: dict[str, float]
    cached: float = 0
    unevaluated: float = 0
    carried: float = 0
    errors: float = 0
    sampled: float = 0  #: rows answered ``ok`` by a real call the estimate made (``sampleCalls``)
    failed: float = 0  #: rows whose real call failed (a run calls them again)
    sampled_prompt: float = 0  #: prompt tokens of the sample calls, answered or failed (the endpoint's counts)
    sampled_completion: float = 0  #: their completion tokens

    @classmethod
    def of(cls, df: DataFrame, meta: str | None, earlier: list[str], scale: float) -> "Measure":
        columns = df.columns
        aggs = [F.count(F.lit(1)).alias("__rows")]
        aggs += [F.coalesce(F.sum(F.length(F.col(c).cast("string"))), F.lit(0)).alias(f"__chars_{i}") for i, c in enumerate(columns)]
        aggs += [F.count(c).alias(f"__filled_{i}") for i, c in enumerate(columns)]
        if meta:
            left = F.col(f"{meta}.status") == "unevaluated"
            upstream = F.lit(False)
            for column in earlier:
                upstream = upstream | F.coalesce(F.col(f"{column}.status") == "unevaluated", F.lit(False))
            count = lambda condition: F.sum(F.when(condition, 1).otherwise(0))
            paid = (F.col(f"{meta}.llm_calls") > 0) & ~F.col(f"{meta}.from_cache")
            ok = paid & (F.col(f"{meta}.status") == "ok")
            aggs += [count(F.col(f"{meta}.from_cache")).alias("__cached"), count(left).alias("__unevaluated"),
                     count(left & upstream).alias("__carried"), count(F.col(f"{meta}.status") == "error").alias("__errors"),
                     count(ok).alias("__sampled"), count(paid & (F.col(f"{meta}.status") == "error")).alias("__failed"),
                     F.sum(F.when(paid, F.col(f"{meta}.prompt_tokens")).otherwise(0)).alias("__sampled_prompt"),
                     F.sum(F.when(paid, F.col(f"{meta}.completion_tokens")).otherwise(0)).alias("__sampled_completion")]
        row = df.agg(*aggs).first().asDict()
        scaled = lambda k: (row.get(k) or 0) * scale
        return cls(rows=scaled("__rows"), chars={c: scaled(f"__chars_{i}") for i, c in enumerate(columns)},
                   filled={c: scaled(f"__filled_{i}") for i, c in enumerate(columns)}, cached=scaled("__cached"),
                   unevaluated=scaled("__unevaluated"), carried=scaled("__carried"), errors=scaled("__errors"),
                   sampled=scaled("__sampled"), failed=scaled("__failed"), sampled_prompt=scaled("__sampled_prompt"),
                   sampled_completion=scaled("__sampled_completion"))


def _measured(e: Estimate, after: Measure, present: float, survive: float, scale: float,
              selection: bool) -> tuple[Estimate, float]:
    """A step's static estimate ``e`` corrected by what its probe measured, and the share of the
    rows it leaves unevaluated that the next step will see with a value.

    A step without calls: exact rows. An LLM step: calls (``e``'s per row) for the rows left
    ``unevaluated`` (those whose own input was there, and those carried from an earlier step, of
    which ``survive`` will reach it) and for the rows whose sample call failed (a run calls them
    again). With sample calls, tokens per call are their mean, failed calls included (the endpoint's
    counts), and the next step loses the share of rows that failed; else ``e``'s, per row. A filter keeps the share of the
    rows answered (cache or sample) that it kept; 1 (all kept) when none was. ``present``: the
    probe's rows entering the step (a filter's answered rows include those it dropped)."""
    sampled = f"; measured on 1/{scale:.3g} of the input, scaled" if scale > 1 else "; measured"
    if not e.llm_calls and not after.unevaluated:
        return dataclasses.replace(e, rows_out=round(after.rows), chars_out=_chars(after, e, after.rows),
                                   assumption=("no call" if not e.llm_calls else e.assumption) + sampled), 1.0
    done = after.rows - after.unevaluated  # rows answered and kept, and error rows
    pending = after.unevaluated - after.carried + after.carried * survive
    per_row = e.llm_calls / max(e.rows_out, 1)  # a row-level step's static rows out are its rows in
    answered = present - after.unevaluated - after.errors if selection else after.cached + after.sampled
    kept = max(0.0, min(1.0, (done - after.errors) / answered)) if selection and answered else 1.0
    failing = after.failed / (after.failed + after.sampled) if after.sampled + after.failed else 0.0
    calls = round((pending + after.failed) * per_row)
    if after.sampled + after.failed:
        paid = after.sampled + after.failed
        prompt, completion = (round(calls * t / paid) for t in (after.sampled_prompt, after.sampled_completion))
    else:
        share = calls / e.llm_calls if e.llm_calls else 0
        prompt, completion = round(e.prompt_tokens * share), round(e.completion_tokens * share)
    notes = [f"{after.cached:.0f} rows answered by the response cache"]
    if after.sampled or after.failed:
        notes.append(f"{after.sampled + after.failed:.0f} sample calls (answers cached for the run), "
                     f"{failing:.0%} failed; tokens per call from them")
    if selection:
        notes.append(f"kept {kept:.0%} of the rows answered" if answered else "all rows assumed kept")
    return dataclasses.replace(
        e, llm_calls=calls, prompt_tokens=prompt, completion_tokens=completion,
        rows_out=round(done + pending * kept), chars_out=_chars(after, e, done + pending * kept),
        cached_calls=round((answered if selection else after.cached + after.sampled) * per_row),
        assumption=f"{e.assumption.split(';')[0]}; {'; '.join(notes)}{sampled}"), kept * (1 - failing)


def _chars(after: Measure, e: Estimate, rows: float) -> dict[str, int]:
    """Characters per column handed on: measured, and for a column some of whose values are NULL
    (left ``unevaluated``), the average of its values over ``rows`` (the static figure when none
    is known)."""
    out = dict(e.chars_out)
    for column, chars in after.chars.items():
        filled = after.filled[column]
        out[column] = round(chars if filled >= rows or not filled else chars / filled * rows) if filled else out.get(column, 0)
    return out


def _probe_reduce(frame: DataFrame, name: str, step, run: RunContext, e: Estimate) -> Estimate:
    """``e`` less the reduce calls the response cache already answers: the step's rounds run under
    the probe's budget into the store (``<output>/_estimate``), their printed progress discarded."""
    done = len(run.tables)
    with redirect_stdout(io.StringIO()):
        compile_step(frame, name, step, run)
    tables = run.tables[done:]
    cached, left = sum(t.cache_hits for t in tables), sum(t.unevaluated for t in tables[1:])
    if not cached:
        return e
    calls = 0 if not left else max(0, e.llm_calls - cached)
    share = calls / e.llm_calls if e.llm_calls else 0
    return dataclasses.replace(e, llm_calls=calls, prompt_tokens=round(e.prompt_tokens * share),
                               completion_tokens=round(e.completion_tokens * share), cached_calls=cached,
                               assumption=e.assumption + f"; {cached} calls answered by the response cache (free)")


def _sample(df: DataFrame, rows: int) -> tuple[DataFrame, float]:
    """``df`` itself, or its first ``rows`` rows when it has more, and the scale back to all rows."""
    total = df.count()
    return (df, 1.0) if total <= rows else (df.limit(rows).localCheckpoint(), total / rows)


def _input_stats(df: DataFrame, scale: float = 1.0) -> InputStats:
    totals = df.agg(F.count(F.lit(1)).alias("__rows"),
                    *[F.sum(F.length(F.col(c).cast("string"))).alias(c) for c in df.columns]).first().asDict()
    return InputStats(rows=round(totals.pop("__rows") * scale), chars={c: round((n or 0) * scale) for c, n in totals.items()})


def _row(name: str, kind: str, e: Estimate) -> dict:
    return {"step": name, "kind": kind, "llm_calls": e.llm_calls, "prompt_tokens": e.prompt_tokens,
            "completion_tokens": e.completion_tokens, "rows_out": e.rows_out, "cached_calls": e.cached_calls,
            "assumption": e.assumption}


def estimate_table(rows: list[dict], settings: Settings) -> list[str]:
    """Estimate rows as a Markdown table with a total row; the cost column is money at
    ``spark.apwa.price.*`` (``n/a`` without prices). Calls answered by the response cache are
    counted apart (``cached``: free)."""
    price = settings.price
    money = lambda p, c: "n/a" if (v := price.cost(p, c)) is None else f"{v:.4f} {price.currency}"
    table = ["| step | kind | LLM calls | cached (free) | prompt tokens (est.) | completion tokens (at most) | rows out | assumption | cost |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    table += [f"| {r['step']} | {r['kind']} | {r['llm_calls']} | {r['cached_calls']} | {r['prompt_tokens']} | "
              f"{r['completion_tokens']} | {r['rows_out']} | {r['assumption']} | {money(r['prompt_tokens'], r['completion_tokens'])} |"
              for r in rows]
    calls, cached, prompt, completion = (sum(r[k] for r in rows) for k in ("llm_calls", "cached_calls", "prompt_tokens", "completion_tokens"))
    basis = (f"prices per 1M tokens: {price.input_per_1m or 0:g} in, {price.output_per_1m or 0:g} out"
             if price.cost(0, 0) is not None else "set spark.apwa.price.inputPer1M / outputPer1M for a money figure")
    table.append(f"| total | | {calls} | {cached} | {prompt} | {completion} | | {basis} | {money(prompt, completion)} |")
    return table
