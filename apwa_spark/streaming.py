"""Streaming enrichment: a plan's row-level steps over a Structured Streaming source, into Delta exactly once.

``stream(spark, plan, source, output)`` reads a Delta table (``readStream.format("delta")``) or a
folder of files (JSON lines, CSV, Parquet, text/Markdown; the schema taken from the files already
there) as a stream, and runs each micro-batch through the plan's compiled steps inside
``foreachBatch``:

* the batch's result is computed once (persisted: the LLM calls happen here, answers go to the
  response cache ``<output>/_llm_cache`` as they arrive), then appended to the Delta table
  ``<output>/result`` with Delta's idempotent-write options ``txnAppId`` (fixed per sink) and
  ``txnVersion`` (the batch id): a batch that Spark runs again after a crash (its offsets were
  logged but its commit was not) finds its version already written and appends nothing, or, if
  the crash came before the append, computes it again from the response cache;
* its error rows go to ``<output>/_dead_letter`` the same way; errors stay data, as in batch jobs;
* the checkpoint (``<output>/_checkpoint`` by default) holds the source offsets.

Triggers: ``availableNow`` (process what is there, then stop) and ``processingTime=<interval>``
(run until ``timeout`` seconds or until stopped). Native Delta Lake (delta-spark) only: the
delta-rs fallback has no streaming sink.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from apwa_spark import storage
from apwa_spark.config import Settings
from apwa_spark.delta import TableStore
from apwa_spark.inputs import TEXT_SUFFIXES, text_files
from apwa_spark.plan.compiler import compile_plan
from apwa_spark.plan.ir import Plan
from apwa_spark.plan.step import Cardinality, PlanError, RunContext
from apwa_spark.runs import (CACHE, DEAD_LETTER, JobContext, compact_cache, keyed_input, new_run_id, plan_failures,
                             plan_manifest, write_manifest)

#: Test-only fault injection: the process exits (no cleanup, as a kill) after computing this batch
#: id's result and before committing it. Unset in normal runs.
CRASH_BEFORE_COMMIT = "APWA_STREAM_CRASH_BEFORE_COMMIT"


@dataclass
class StreamResult:
    """A finished (or stopped) stream: its run id, sink, the micro-batches it committed in this run
    and the rows they appended (seconds: wall time)."""

    run_id: str
    sink: str
    batches: list[int]
    rows: int
    seconds: float


def stream(spark: SparkSession, plan: Plan, source: str, output: str, settings: Settings | None = None,
           trigger: str = "availableNow", checkpoint: str | None = None, key: str | None = None,
           max_files_per_trigger: int | None = None, timeout: float | None = None) -> StreamResult:
    """Run ``plan``'s row-level steps over the stream read from ``source`` into ``<output>/result``.

    Args:
        plan: steps that keep rows row by row (``map``, ``classify``, ``extract``, ``filter``,
            ``redact``, ``chunk``, ``where``, ``select``); no ``reduce``, source or materialized step.
        source: a Delta table or a folder of files (path or URI); new files or commits are new rows.
        output: folder (path or URI) of the sink ``result``, the response cache, the dead letter.
        trigger: ``availableNow`` or ``processingTime=<interval>`` (``processingTime=10 seconds``).
        checkpoint: the stream's checkpoint location (default ``<output>/_checkpoint``); keep it to resume.
        key: the row-key column (:func:`apwa_spark.runs.keyed_input`).
        max_files_per_trigger: files per micro-batch for a folder source (Spark's ``maxFilesPerTrigger``).
        timeout: seconds to run a ``processingTime`` stream before stopping it (None: until stopped).

    Returns:
        :class:`StreamResult`.

    Raises:
        PlanError: a step that is not row-level, or an unknown trigger.
        ValueError: the session has no native Delta Lake.
    """
    from apwa_spark.endpoint import job_endpoint

    _check_row_level(plan)
    settings = settings or Settings.load(spark)
    store = TableStore.create(spark, output, settings.delta.engine)
    if store.engine != "native" or store.schema:
        raise ValueError("streaming writes need native Delta Lake (delta-spark) and a folder output; "
                         "set spark.apwa.delta.engine=native and give --output a path or URI")
    if settings.cache.enabled and not settings.cache.path:
        settings = settings.with_overrides(**{"spark.apwa.cache.path": store.path(CACHE)})
    stream_df = read_stream(spark, source, max_files_per_trigger)
    plan.check(stream_df.columns)
    sink, app_id = store.location("result"), "apwa-spark-" + hashlib.sha256(store.location("result").encode()).hexdigest()[:16]
    started, done = time.monotonic(), []
    with job_endpoint(settings, spark.sparkContext.master, storage.local_file(store.root, "embedded-endpoint.log")) as settings:
        job = JobContext(settings, new_run_id(), spark.sparkContext.defaultParallelism, plan.plan_id,
                         storage.storage_options(spark, settings.cache.path) if settings.cache.path else {})

        def each_batch(batch: DataFrame, batch_id: int) -> None:
            done.append((batch_id, _enrich_batch(batch, batch_id, plan, job, key, sink, store, app_id)))

        writer = stream_df.writeStream.foreachBatch(each_batch).option(
            "checkpointLocation", checkpoint or storage.join(store.root, "_checkpoint"))
        query = _with_trigger(writer, trigger).start()
        print(f"[apwa] stream {job.run_id}: {source} ──► {sink} ({trigger})", flush=True)
        if query.awaitTermination(timeout) is False:
            query.stop()
        compact_cache(job)
        manifest = {**plan_manifest(plan, "stream", storage.normalize(source), key or "", None, settings),
                    "trigger": trigger, "batches": [b for b, _ in done], "rows": sum(n for _, n in done)}
        write_manifest(spark, store.root, job.run_id, manifest, settings)
    return StreamResult(job.run_id, sink, [b for b, _ in done], sum(n for _, n in done), time.monotonic() - started)


def _check_row_level(plan: Plan) -> None:
    for name, step in plan.named_steps():
        if step.cardinality in (Cardinality.MANY_TO_ONE, Cardinality.SOURCE) or step.materialize:
            raise PlanError(f"step {name!r} ({step.kind}) is not row-level; a stream runs steps that keep rows row by "
                            "row (map, classify, extract, filter, redact, chunk, where, select)")


def _enrich_batch(batch: DataFrame, batch_id: int, plan: Plan, job: JobContext, key: str | None, sink: str,
                  store: TableStore, app_id: str) -> int:
    """One micro-batch: the plan's steps, computed once (persisted), then appended with ``txnAppId`` /
    ``txnVersion``, its error rows to the dead letter the same way; returns the rows appended."""
    keyed, key_column = keyed_input(batch, key)
    result = compile_plan(keyed, plan, RunContext(job)).persist()
    rows = result.count()  # the LLM calls happen here, once
    if os.environ.get(CRASH_BEFORE_COMMIT) == str(batch_id):
        os._exit(137)
    _append_once(result, sink, app_id, batch_id)
    failed = plan_failures(result, job.run_id, [n for n, _ in plan.named_steps()], [key_column])
    if failed is not None and not failed.isEmpty():
        _append_once(failed, store.location(DEAD_LETTER), app_id + "-dead-letter", batch_id)
    result.unpersist()
    print(f"[apwa] batch {batch_id}: {rows} rows ──► {sink}", flush=True)
    return rows


def _append_once(df: DataFrame, path: str, app_id: str, version: int) -> None:
    """Append ``df`` to the Delta table at ``path`` unless that app id has written that version already."""
    (df.write.format("delta").mode("append").option("txnAppId", app_id).option("txnVersion", version)
     .option("delta.enableChangeDataFeed", "true").save(path))


def read_stream(spark: SparkSession, source: str, max_files_per_trigger: int | None = None) -> DataFrame:
    """``source`` as a streaming DataFrame: a Delta table, or a folder of ``.jsonl``/``.json``,
    ``.csv``, ``.parquet`` or text/Markdown files (columns ``path`` and ``text``), with the schema
    of the files already there.

    Raises:
        FileNotFoundError: nothing at ``source``; ValueError: a folder whose format it cannot tell.
    """
    uri = storage.normalize(source)
    if not storage.is_folder(spark, uri):  # FileNotFoundError when nothing is there
        raise ValueError(f"a stream reads a folder (a Delta table or a folder of files), got the file {source}")
    if storage.has_children(spark, uri, "_delta_log"):
        return spark.readStream.format("delta").load(uri)
    reader = spark.readStream.option("maxFilesPerTrigger", max_files_per_trigger) if max_files_per_trigger else spark.readStream
    fmt = _folder_format(spark, uri)
    if fmt == "text":
        return text_files(reader, uri)
    options = {"header": True, "multiLine": True, "escape": '"'} if fmt == "csv" else {}
    schema = spark.read.options(**options).format(fmt).load(uri).schema  # the files already there
    return reader.schema(schema).options(**options).format(fmt).load(uri)


def _folder_format(spark: SparkSession, uri: str) -> str:
    for fmt, patterns in (("parquet", ("*.parquet",)), ("json", ("*.jsonl", "*.json")), ("csv", ("*.csv",)),
                          ("text", tuple(f"*{s}" for s in TEXT_SUFFIXES))):
        if storage.has_children(spark, uri, *patterns):
            return fmt
    raise ValueError(f"cannot tell the format of the files in {uri}: a stream reads a Delta table or a folder of "
                     ".jsonl, .csv, .parquet or .txt/.md files")


def _with_trigger(writer, trigger: str):
    if trigger == "availableNow":
        return writer.trigger(availableNow=True)
    if trigger.startswith("processingTime="):
        return writer.trigger(processingTime=trigger.split("=", 1)[1])
    raise PlanError(f"unknown trigger {trigger!r}: use availableNow or processingTime=<interval> (processingTime=10 seconds)")
