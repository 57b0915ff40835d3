"""Runs: identity, provenance, and the bookkeeping every job does when it ends.

Every job run (summarize, a plan: ``run``/``redact``/``extract`` or :func:`apwa_spark.run`, and
``sql --output``) gets a ``run_id`` and ends with :func:`finish_run`:

* its error rows are appended to the Delta table ``<output>/_dead_letter`` (run id, where, a row
  key, error class and message; never the row's text);
* the response cache (``<output>/_llm_cache``) is compacted;
* its manifest (what ran, over which input, with which non-secret settings, and how it ended) is
  written to ``<output>/_runs/<run_id>.json`` (any URI the session can write) and indexed in the run
  registry (``spark.apwa.run.registry``, default ``~/.apwa/runs``), so ``apwa-spark retry-failed
  RUN_ID`` finds it and can run the job again from it.

A plan run's **row key** (:func:`keyed_input`) is the input column the job names (``--key``), else
``id`` or ``path`` when the input has one, else a column ``row_key`` that the run adds: the first 16
hex digits of the sha256 of the row's input values as JSON (identical rows share it). It is in the
result, and the dead letter's ``row_key`` holds it (with a reduce step's group keys) as a JSON
object such as ``{"id": 7}``, so a dead-letter row can be found again in the input, the result and
a retry's result.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import pyarrow as pa
from pyspark import inheritable_thread_target
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, IntegerType, LongType, StringType, StructField, StructType

from apwa_spark import storage
from apwa_spark.config import Settings
from apwa_spark.delta import TableStore, commit_metadata
from apwa_spark.llm.budget import BudgetServer
from apwa_spark.llm.cache import ResponseCache
from apwa_spark.llm.client import Completion, LLMClient

DEAD_LETTER = "_dead_letter"
CACHE = "_llm_cache"


#: Per-row bookkeeping of one LLM call, the same in every table the project writes.
CALL_FIELDS = [
    StructField("status", StringType()),
    StructField("error_class", StringType()),
    StructField("error", StringType()),
    StructField("llm_calls", IntegerType()),
    StructField("prompt_tokens", LongType()),
    StructField("completion_tokens", LongType()),
    StructField("cached_tokens", LongType()),
    StructField("from_cache", BooleanType()),
]


#: Per-row provenance: which run, plan, step, model, endpoint and template produced the row.
PROVENANCE_FIELDS = [
    StructField(name, StringType()) for name in ("run_id", "plan_id", "step", "model", "endpoint_host", "template_hash")
]


def call_fields(c: Completion) -> dict:
    """A completion's :data:`CALL_FIELDS` values."""
    return {"status": c.status, "error_class": c.error_class, "error": c.error, "llm_calls": c.calls,
            "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "cached_tokens": c.cached_tokens, "from_cache": c.from_cache}


@dataclass
class TableStats:
    """One Delta table a run wrote, and what producing it cost.

    Attributes:
        table: its name in the run's store; ``path``: its location (a path, URI or catalog table).
        rows, llm_calls, prompt_tokens, completion_tokens, cached_tokens, cache_hits: sums over its
            rows' flat :data:`CALL_FIELDS` (0 for a table without them); errors / unevaluated: rows
            with status ``error`` / ``unevaluated``.
        seconds: wall time of its write (its lazy steps included), seconds; for a queued commit
            (:class:`CommitQueue`), until it was made, the wait for the commits before it included.
        input_files: the files of the table of the run's store it was computed from (a reduce
            round's level below), as committed; none for a table computed from no such table.
        columns: its column names.
        kept: rows an earlier run made, kept as they were (incremental runs; their calls are not counted).
        committed: False when the run left the table as it was (no new version).
        groups: the groups of the rows below that a reduce round reduced (the ``groups`` aggregate
            :func:`write_table` was given); None when it was given none.
    """

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
    unevaluated: int = 0
    columns: list[str] = field(default_factory=list)
    kept: int = 0
    committed: bool = True
    groups: int | None = None


def write_table(store: TableStore, tables: list[TableStats], name: str, df: DataFrame,
                source: str | None = None, how: str = "overwrite", run_id: str | None = None,
                note: str | None = None, groups: Column | None = None,
                commits: CommitQueue | None = None) -> DataFrame:
    """Write ``df`` as the Delta table ``name`` of ``store``, append its :class:`TableStats` to
    ``tables``, print a line of its figures (the run's progress), and return its rows: the rows
    it commits, computed once into a local checkpoint by the job that writes them, so the steps
    after it read them there, not from the Delta table (no snapshot of it to compute, no scan to
    plan). A step table the write creates has no per-column file statistics, only ``numRecords``
    (``column_stats=False`` of :meth:`TableStore.write`): its next step reads it whole; the run's
    result table keeps Delta's default statistics, for its readers' filters.

    Args:
        source: the table of ``store`` that ``df`` was computed from; its files, as committed
            (:meth:`TableStore.files`), become the table's ``input_files``.
        how: ``overwrite``: one commit replacing the table. ``merge`` (an incremental run's node
            tables, :mod:`apwa_spark.incremental`): ``df`` holds every node, some kept from earlier
            runs; one MERGE on ``node_id`` (:meth:`TableStore.merge`) inserts or updates the rows
            this run made and deletes the nodes ``df`` no longer has, and nothing is committed when
            there are none (an overwrite where the table is new or its columns differ). ``keep``:
            no write, ``df`` is not used: the table as an earlier run left it.
        run_id: this run; with it, the figures count only the calls of rows this run made, and
            ``kept`` the rows an earlier run made.
        note: the commit's ``userMetadata`` (native path), e.g. the input version an incremental run read.
        groups: an aggregate Column counting the groups a reduce round reduced (``TableStats.groups``).
        commits: where the table exists already (a re-run), its commit is queued there and made
            while the caller goes on: the figures are appended at once, and the line is printed
            once it has committed. Where it does not, the queue is waited for and the table
            written here.

    The figures are one Spark aggregate; with ``merge`` or a queued commit, it is the one that
    computes the rows (their LLM calls, once) and decides whether there is anything to commit. An
    overwrite observes them while its write job runs (:func:`observed`), with no job of their own.
    """
    queued = commits is not None
    started = time.monotonic()
    current = store.read(name) if how != "keep" and (how == "merge" or queued) and store.exists(name) else None
    if how == "merge" and (current is None or set(current.columns) != set(df.columns)):
        how = "overwrite"  # a new table, or one an older apwa-spark wrote
    staged = df.localCheckpoint(eager=False) if how == "merge" or (queued and current is not None) else None
    totals = _totals(staged, run_id, groups) if staged is not None else None
    if how == "merge" and totals["kept"] == totals["rows"] and current.count() == totals["kept"]:
        how = "keep"  # kept rows are the table's own: nothing new, and nothing gone when it holds no others

    def commit() -> None:
        if how == "merge":
            with commit_metadata(store.spark, note):  # a MERGE takes its userMetadata from the session only
                store.merge(staged, name, on="node_id", changed="s.run_id <> t.run_id")
        elif how == "overwrite":
            store.write(df if staged is None else staged, name, note=note, column_stats=False)

    def append_stats(columns: list[str], figures: dict) -> TableStats:
        stats = TableStats(table=name, path=store.location(name), seconds=0.0, columns=columns,
                           committed=how != "keep", **figures)
        tables.append(stats)
        return stats

    def report(stats: TableStats, seconds: float) -> None:
        stats.seconds = seconds
        kept = f" ({stats.kept} kept from earlier runs)" if stats.kept else ""
        print(f"[apwa] {name}: {stats.rows} rows{kept}, {stats.llm_calls} LLM calls, {stats.cache_hits} cached "
              f"answers, {stats.prompt_tokens} tokens in, {stats.completion_tokens} out, {stats.errors} errors, "
              f"{stats.seconds:.1f} s" + ("" if stats.committed else "; unchanged, no new version"), flush=True)

    if queued and current is not None and how != "keep":
        stats = append_stats(staged.columns, totals)

        def commit_and_report() -> None:
            commit()
            stats.input_files = store.files(source) if source else []  # its commit, queued earlier, is made
            report(stats, time.monotonic() - started)

        commits.submit(commit_and_report)
        return staged
    if queued and how != "keep":
        commits.wait()  # one commit at a time: a commit's userMetadata is a session conf
    if how == "keep":
        table = store.read(name)
        stats = append_stats(table.columns, totals or _totals(table, run_id, groups))
        if source and queued:  # the source's commit may still be queued: its files once it is made
            commits.submit(lambda: setattr(stats, "input_files", store.files(source)))
        elif source:
            stats.input_files = store.files(source)
        report(stats, time.monotonic() - started)
        return table
    rows, written = staged, lambda: None
    if staged is None:  # an overwrite: its write job computes the rows into the checkpoint and observes the figures
        rows = df.localCheckpoint(eager=False)
        df, written = observed(rows, _figure_columns(rows.columns, run_id, groups))
    commit()
    seconds = time.monotonic() - started
    seen = written()
    figures = totals or (_as_totals(seen) if seen is not None else _totals(rows, run_id, groups))
    stats = append_stats(rows.columns, figures)
    stats.input_files = store.files(source) if source else []  # the source's commit is made (the queue waited)
    report(stats, seconds)
    return rows


class CommitQueue:
    """Delta commits made one after another, in order, on one background thread, while the caller
    goes on: a re-run's next reduce level computes (its LLM calls) while the level below commits.

    A context manager: leaving it waits for every commit and raises the first that failed (as do
    :meth:`submit` and :meth:`wait` once one has). The commits queued after a failed one are not made.
    """

    def __init__(self, spark: SparkSession) -> None:
        self._inherit = inheritable_thread_target(spark)  # the caller's job tags and local properties
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="apwa-commit")
        self._pending: list[Future] = []
        self._failed = False

    def submit(self, commit: Callable[[], None]) -> None:
        """Queue ``commit``."""
        self._raise_failed()

        def guarded() -> None:
            if self._failed:
                return
            try:
                commit()
            except BaseException:
                self._failed = True
                raise

        self._pending.append(self._pool.submit(self._inherit(guarded)))

    def wait(self) -> None:
        """Return when every queued commit is done; raise the first that failed."""
        for future in self._pending:
            future.result()

    def _raise_failed(self) -> None:
        for future in self._pending:
            if future.done() and future.exception() is not None:
                raise future.exception()

    def __enter__(self) -> "CommitQueue":
        return self

    def __exit__(self, kind, *_) -> None:
        self._pool.shutdown(wait=True)
        if kind is None:
            self.wait()


def _figure_columns(columns: Sequence[str], run_id: str | None = None, groups: Column | None = None) -> list[Column]:
    """The :class:`TableStats` figures of a table with ``columns`` as aggregate Columns (``groups``:
    one more, the figure ``groups``); with ``run_id``, the call figures sum this run's rows only.

    Each is one SQL expression (``F.expr``): one Py4J call apiece instead of one per function,
    column and literal (about 90 calls, 30 ms of a reduce level's write here)."""
    groups = [groups.alias("groups")] if groups is not None else []
    if "status" not in columns:  # a table without flat call fields (input, or a step's <name>_meta)
        return [F.expr("count(1) AS `rows`"), *groups]
    mine = f"run_id = {_sql_string(run_id)}" if run_id and "run_id" in columns else "true"
    now = lambda c: f"coalesce(sum(CASE WHEN {mine} THEN {c} END), 0)"  # noqa: E731  (sums over this run's rows)
    return [F.expr(e) for e in (
        "count(1) AS `rows`",
        *[f"{now(c)} AS {c}" for c in ("llm_calls", "prompt_tokens", "completion_tokens", "cached_tokens")],
        "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors",
        f"{now('CAST(from_cache AS INT)')} AS cache_hits",
        "sum(CASE WHEN status = 'unevaluated' THEN 1 ELSE 0 END) AS unevaluated",
        f"sum(CASE WHEN {mine} THEN 0 ELSE 1 END) AS kept",
    )] + groups


def _sql_string(value: str) -> str:
    """``value`` as a Spark SQL string expression that needs no quoting or escaping, whatever the
    characters and the session's ``spark.sql.parser.escapedStringLiterals``: its UTF-8 bytes in hex,
    decoded (a constant the optimizer folds)."""
    return f"decode(unhex('{value.encode().hex()}'), 'UTF-8')"


def _as_totals(figures: Mapping[str, Any]) -> dict:
    """``figures`` (the aggregate of :func:`_figure_columns`) as :class:`TableStats` keyword arguments."""
    zero = dict.fromkeys(("llm_calls", "prompt_tokens", "completion_tokens", "cached_tokens", "errors",
                          "cache_hits", "unevaluated", "kept"), 0)
    return {**zero, **{k: int(v or 0) for k, v in figures.items()}}


def _totals(table: DataFrame, run_id: str | None = None, groups: Column | None = None) -> dict:
    """:class:`TableStats` figures of ``table``'s rows, in one Spark aggregate (:func:`_figure_columns`)."""
    return _as_totals(table.agg(*_figure_columns(table.columns, run_id, groups)).first().asDict())


def observed(df: DataFrame, metrics: Sequence[Column]) -> tuple[DataFrame, Callable[[], dict | None]]:
    """``df`` with the aggregate Columns ``metrics`` observed while the job that writes it computes
    its rows (Spark's ``DataFrame.observe`` with an ``Observation``), so that no second job reads
    the table back for them; and a function giving ``{name: value}`` once that job has run. It
    gives None where the session delivered no metrics: Spark Connect, or a writer that runs the
    query as a command of its own (``saveAsTable`` of a Delta table completes the observation with
    an empty row), or with no ``metrics``; the caller aggregates the table instead. Delivery is
    checked without blocking, on the JVM ``Observation``'s future (Spark 4)."""
    from pyspark.sql import Observation
    from pyspark.sql.utils import is_remote

    if is_remote() or not metrics:
        return df, lambda: None
    observation = Observation()
    watched = df.observe(observation, *metrics)

    def values() -> dict | None:
        try:
            if not observation._jo.future().isCompleted():  # get would wait for ever when none came
                return None
            return observation.get or None
        except Exception:  # noqa: BLE001  (an empty row, or another Spark's Observation: aggregate instead)
            return None

    return watched, values


class UnknownRunError(LookupError):
    """No manifest for the run id in the run registry."""


@dataclass(frozen=True)
class JobContext:
    """What every executor needs to know about the run; plain data, shipped inside UDF closures.

    Attributes:
        settings: the job's settings (endpoint, budgets, cache path).
        run_id: this run's id.
        tasks: Spark tasks that can run at once (``defaultParallelism``): the share of RPM/TPM.
        plan_id: identity of what runs (a plan's hash, or the summarize job's templates and budgets).
        storage_options: delta-rs options for an object-store response cache (secrets: out of ``repr``).
        budget_url: the job's budget server on the driver (:func:`job_budget`; a secret, out of
            ``repr``); None: no ``spark.apwa.budget.*`` set.
    """

    settings: Settings
    run_id: str
    tasks: int = 1
    plan_id: str = ""
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False)
    budget_url: str | None = field(default=None, repr=False)

    @property
    def endpoint_host(self) -> str:
        """host:port of the LLM endpoint: never ``user:password@``, the key, the path or the query."""
        return endpoint_host(self.settings.llm.base_url)

    def client(self) -> LLMClient:
        """One LLM client for one batch of rows (a pandas UDF call); all of them in one process share
        the run's rate limiter."""
        return LLMClient(self.settings, tasks=self.tasks, cache_options=self.storage_options, run_id=self.run_id,
                         budget_url=self.budget_url)


@contextmanager
def job_budget(spark, settings: Settings) -> Iterator[BudgetServer | None]:
    """The job's :class:`~apwa_spark.llm.budget.BudgetServer` while the block runs (on the driver's
    ``127.0.0.1`` under a local master, else on ``spark.driver.host``, where executors reach the
    driver); None when neither ``spark.apwa.budget.*`` nor ``spark.apwa.llm.rpm`` / ``tpm`` is set
    (the server also counts the processes sharing the rates)."""
    if not (settings.budget.enabled or settings.llm.rpm or settings.llm.tpm):
        yield None
        return
    master = spark.sparkContext.master
    host = "127.0.0.1" if master.startswith("local") else spark.conf.get("spark.driver.host", "127.0.0.1")
    with BudgetServer(settings.budget, settings.price, host) as budget:
        yield budget


def report_budget(run_id: str, budget: BudgetServer | None, unevaluated: int) -> None:
    """Print what the budget left undone: spent against the limits, rows left ``unevaluated``."""
    if budget is None or not budget.enabled:
        return
    undone = (f"{unevaluated} rows left unevaluated; re-run the job with a larger spark.apwa.budget.* to finish "
              "them (paid answers come from the response cache)") if unevaluated else "every row evaluated"
    print(f"[apwa] run {run_id}: budget spent {budget.left_undone()}; {undone}", flush=True)


def endpoint_host(base_url: str | None) -> str:
    """``host[:port]`` of a URL, without any ``user:password@`` (IPv6 hosts in brackets); "" for none."""
    parts = urlsplit(base_url or "")
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port}" if parts.port else host


#: the shape of a run id: ``YYYYmmdd-HHMMSS-xxxxxx``.
RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxxxx`` (UTC time and 6 random hex digits)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def check_run_id(run_id: str) -> str:
    """``run_id`` if it has the shape of a run id (:data:`RUN_ID`), so it is safe in a file name.

    Raises:
        ValueError: anything else (``../x``, a path, an empty string), naming the expected shape.
    """
    if not RUN_ID.fullmatch(run_id or ""):
        raise ValueError(f"{run_id!r} is not a run id; a run id looks like 20260101-120000-a1b2c3 "
                         "(the job prints it; see <output>/_runs/)")
    return run_id


def write_manifest(spark, output: str, run_id: str, manifest: dict, settings: Settings) -> str:
    """Write the run's manifest to ``<output>/_runs/<run_id>.json`` (``output``: local path or URI,
    written through :func:`apwa_spark.storage.write_text`) and index it in the local run registry.

    Returns:
        the manifest's location.
    """
    body = json.dumps({"run_id": run_id, "output": output, **manifest}, indent=2, default=str)
    path = storage.join(output, "_runs", f"{run_id}.json")
    storage.write_text(spark, path, body)
    registry = Path(storage.normalize(settings.run.registry))
    registry.mkdir(parents=True, exist_ok=True)
    (registry / f"{run_id}.json").write_text(body)
    return path


def load_manifest(run_id: str, settings: Settings) -> dict:
    """The manifest of ``run_id`` from the run registry.

    Raises:
        ValueError: ``run_id`` is not shaped like one (:func:`check_run_id`); nothing is read.
        UnknownRunError: no such run; the message lists the latest runs.
    """
    registry = Path(storage.normalize(settings.run.registry))
    path = registry / f"{check_run_id(run_id)}.json"
    if not path.is_file():
        known = sorted(p.stem for p in registry.glob("*.json"))[-5:]
        raise UnknownRunError(f"no run {run_id!r} in {registry}; latest runs: {', '.join(known) or 'none'}")
    return json.loads(path.read_text())


# ---- the end of every run ----------------------------------------------------------------------------

#: Failed rows up to which a dead-letter write counts its error classes itself, while it writes
#: them (their classes come to the driver as one list); past it, a groupBy of the rows counts them.
OBSERVED_CLASSES_MAX = 100_000


def append_dead_letter(store: TableStore, failed: DataFrame | None, known_rows: int | None = None) -> dict[str, int]:
    """Append ``failed`` (rows with an ``error_class`` column; no text columns) to the Delta table
    ``_dead_letter`` of ``store``; returns error class ──► rows ({} when there are none).

    ``known_rows``: the caller knows ``failed`` has rows, at most this many: no job checks that it
    is empty, and up to :data:`OBSERVED_CLASSES_MAX` the classes are counted by the write job
    (:func:`observed`), not by a second job over the rows."""
    if failed is None or (known_rows is None and failed.isEmpty()):
        return {}
    if known_rows is not None and known_rows <= OBSERVED_CLASSES_MAX:
        watched, values = observed(failed, [F.collect_list("error_class").alias("classes")])
        store.write(watched, DEAD_LETTER, mode="append")
        if (got := values()) is not None:
            return dict(Counter(got["classes"]))
    else:
        store.write(failed, DEAD_LETTER, mode="append")
    return {r["error_class"]: r["count"] for r in failed.groupBy("error_class").count().collect()}


def compact_cache(job: JobContext) -> None:
    """Merge the small files the tasks' appends left in the job's response cache (a no-op when
    caching is off or the cache was never written)."""
    if job.settings.cache.enabled and job.settings.cache.path:
        ResponseCache(job.settings.cache.path, job.storage_options).compact()


def finish_run(store: TableStore, job: JobContext, manifest: dict, failed: DataFrame | None, seconds: float,
               known_rows: int | None = None) -> dict[str, int]:
    """A job's last steps: ``failed`` rows to the dead letter (``known_rows``: see
    :func:`append_dead_letter`) while the response cache is compacted, the manifest (``manifest`` plus
    ``errors_by_class`` and ``seconds``) written under ``store.root`` and indexed in the run registry.

    Returns:
        error class ──► failed rows of this run.
    """
    if not (job.settings.cache.enabled and job.settings.cache.path):
        errors = append_dead_letter(store, failed, known_rows)
    else:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="apwa-compact") as pool:
            compacted = pool.submit(compact_cache, job)  # delta-rs, beside the dead letter's write
            try:
                errors = append_dead_letter(store, failed, known_rows)
            except BaseException as error:
                if (also := compacted.exception()) is not None:
                    error.add_note(f"compacting the response cache failed too: {also!r}")
                raise
            compacted.result()
    write_manifest(store.spark, store.root, job.run_id,
                   {**manifest, "errors_by_class": errors, "seconds": round(seconds, 1)}, job.settings)
    return errors


# ---- plan runs -----------------------------------------------------------------------------------------

#: Input columns a plan run takes as its row key when the job names none, the first one present.
KEY_COLUMNS = ("id", "path")
#: The row-key column a plan run adds when the input has no key column.
ROW_KEY = "row_key"


def keyed_input(df: DataFrame, key: str | None = None) -> tuple[DataFrame, str]:
    """``df`` and the name of its row-key column: ``key`` when given, else the first of
    :data:`KEY_COLUMNS` in ``df``, else :data:`ROW_KEY`, added as the first 16 hex digits of the
    sha256 of the row's values as JSON (``key=ROW_KEY`` asks for that column explicitly).
    Uniqueness is not checked.

    Raises:
        ValueError: ``key`` is not a column of ``df`` (the message lists the columns).
    """
    if key is None:
        key = next((c for c in KEY_COLUMNS if c in df.columns), ROW_KEY)
    if key in df.columns:
        return df, key
    if key != ROW_KEY:
        raise ValueError(f"key column {key!r} is not in the input; its columns: {df.columns}")
    values = F.to_json(F.struct(*[df[c] for c in df.columns]))
    return df.withColumn(ROW_KEY, F.substring(F.sha2(values, 256), 1, 16)), ROW_KEY


def plan_manifest(plan: Any, job: str, source: str | None, key: str, output_schema: str | None,
                  settings: Settings) -> dict:
    """The manifest fields a plan run knows before it starts (``plan``: a
    :class:`~apwa_spark.plan.ir.Plan`; ``source``: where the input was read from, None for a
    DataFrame without one; ``settings``: before the embedded endpoint starts, so ``embedded`` is
    known)."""
    return {"job": job, "plan": json.loads(plan.model_dump_json()), "plan_id": plan.plan_id, "input": source,
            "key": key, "output_schema": output_schema, "embedded": not settings.llm.base_url,
            "settings": settings.as_keys()}


def close_plan_run(store: TableStore, job: JobContext, plan: Any, manifest: dict, seconds: float,
                   budget: BudgetServer | None = None, tables: Sequence[TableStats] = (),
                   counted: Mapping[str, int] | None = None, seen_failures: Mapping[str, list] | None = None) -> dict[str, int]:
    """:func:`finish_run` for a plan run whose result table is written: counts per step and status,
    the error rows of every ``<step>_meta`` (:func:`plan_failures`) and of every node table a
    ``reduce`` step wrote (``tables`` with ``node_id``: :func:`node_failures`) to the dead letter;
    prints the outcome and, when rows failed, the ``retry-failed`` command; with a ``budget``, what
    it spent (``budget`` in the manifest) and the rows it left unevaluated (:func:`report_budget`).
    ``counted``: the result's :func:`status_columns` observed while this run wrote it (None: it is
    aggregated here); ``seen_failures``: its :func:`failure_columns` observed then, the error rows
    of each step when there were at most :data:`OBSERVED_FAILURES_MAX` (else, or None: the result
    table is read back for them).

    Returns:
        error class ──► failed rows.
    """
    nodes = [t for t in tables if "node_id" in t.columns]
    steps = [name for name, _ in plan.named_steps()]
    in_nodes = {name for name, step in plan.named_steps() if step.cardinality.value == "many-to-one"} if nodes else set()
    budgeted = bool(budget and budget.enabled)
    result = store.read("result") if counted is None else None
    counts = status_counts(result, steps, counted)
    failing = [s for s in steps if s not in in_nodes and counts.get(s, {}).get("error")]  # no scan for none
    failed_rows = observed_failures(store.spark, job.run_id, failing, counts, seen_failures) if failing else None
    if result is None and ((failing and failed_rows is None) or budgeted):
        result = store.read("result")
    if failing and failed_rows is None:
        failed_rows = plan_failures(result, job.run_id, failing, failure_keys(plan, manifest["key"]))
    failed = [f for f in (failed_rows, node_failures(store, nodes, job.run_id)) if f is not None]
    known_rows = sum(counts[s]["error"] for s in failing) + sum(t.errors for t in nodes) if failing else None
    spent = {"budget": {**budget.spent, "refused": budget.refused}} if budgeted else {}
    errors = finish_run(store, job, {**manifest, "rows": counts.pop("rows"), "status_counts": counts,
                                     "tables": [t.table for t in tables], **spent},
                        reduce(DataFrame.unionByName, failed) if failed else None, seconds, known_rows)
    if budgeted:
        metas = [result[f"{s}_meta"]["status"] == "unevaluated" for s in steps
                 if f"{s}_meta" in result.columns and s not in in_nodes]
        left = result.filter(reduce(lambda a, b: a | b, metas)).count() if metas else 0
        report_budget(job.run_id, budget, left + sum(t.unevaluated for t in nodes))
    if errors:
        print(f"[apwa] run {job.run_id}: {sum(errors.values())} failed rows ("
              + ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) + f") in {store.path(DEAD_LETTER)}; "
              f"re-drive them with: apwa-spark retry-failed {job.run_id}", flush=True)
    return errors


def node_failures(store: TableStore, tables: Sequence[TableStats], run_id: str) -> DataFrame | None:
    """Dead-letter rows of a reduce's node tables (leaves and rounds): one per ``error`` node that
    run ``run_id`` made (not one an incremental run kept), with ``run_id``, ``step`` (the table),
    ``row_key`` (``{"node_id": ...}``), ``error_class`` and ``error``; None when no table has an
    ``error`` row (``TableStats.errors``)."""
    parts = [store.read(t.table).filter(F.col("status") == "error").filter(F.col("run_id") == run_id).select(
                 "run_id", F.lit(t.table).alias("step"), F.to_json(F.struct("node_id")).alias("row_key"),
                 "error_class", "error") for t in tables if t.errors]
    return reduce(DataFrame.unionByName, parts) if parts else None


#: The statuses :func:`status_counts` counts per step.
STATUSES = ("ok", "partial", "error", "unevaluated")


def status_columns(columns: Sequence[str], steps: Sequence[str]) -> list[Column]:
    """The aggregate Columns of :func:`status_counts` over a result with ``columns``: ``rows``,
    then ``<step>.<status>`` for each step with a ``<step>_meta`` column."""
    return [F.count(F.lit(1)).alias("rows"),
            *[F.count_if(F.col(f"{s}_meta.status") == status).alias(f"{s}.{status}")
              for s in steps if f"{s}_meta" in columns for status in STATUSES]]


def status_counts(result: DataFrame | None, steps: Sequence[str], counted: Mapping[str, int] | None = None) -> dict:
    """``{"rows": n, step: {"ok": n, "partial": n, "error": n, "unevaluated": n}}`` over the
    ``<step>_meta`` columns of ``result`` (``unevaluated``: left by a spent budget); from
    ``counted`` (:func:`status_columns` observed while ``result`` was written) where given
    (``result`` may then be None), else one aggregate of ``result``."""
    row = counted if counted is not None else result.agg(*status_columns(result.columns, steps)).first().asDict()
    counts: dict = {"rows": row["rows"]}
    for name, n in row.items():
        if name != "rows":
            step, status = name.rsplit(".", 1)
            counts.setdefault(step, {})[status] = n
    return counts


def failure_keys(plan: Any, key: str) -> list[str]:
    """The columns a plan run's dead-letter ``row_key`` holds: the run's row key, then the group
    keys of its ``reduce`` steps (those in the result)."""
    return [key, *(k for _, step in plan.named_steps() for k in getattr(step, "group_by", []))]


def plan_failures(result: DataFrame, run_id: str, steps: Sequence[str], key_columns: Sequence[str]) -> DataFrame | None:
    """Dead-letter rows of a plan's result: one per row and step whose ``<step>_meta.status`` is
    ``error``, with ``run_id``, ``step``, ``row_key`` (JSON of the ``key_columns`` present in
    ``result``), ``error_class`` and ``error``. None when ``result`` has no ``<step>_meta``."""
    parts = [result.filter(result[f"{s}_meta"]["status"] == "error").select(
                 F.lit(run_id).alias("run_id"), F.lit(s).alias("step"), *_failure_fields(result, s, key_columns))
             for s in steps if f"{s}_meta" in result.columns]
    return reduce(DataFrame.unionByName, parts) if parts else None


#: Error rows per step up to which a plan run's dead letter comes from what the result's write job
#: observed (:func:`failure_columns`), not from reading the result table back (a new table's
#: snapshot and a scan: about 0.4 s of the dead letter's 0.9 s for 74 rows in a job timeline of
#: ``benchmarks/throughput.py`` (b) on a 2-core machine); past it the result is read back. Each
#: observed row is a key, an error class and a message, no text. Like the status counts observed
#: beside them, the rows come through accumulators: a write that re-ran a finished shuffle stage
#: holding the observation (none does in a plan run's result write) would count them twice.
OBSERVED_FAILURES_MAX = 1_000
#: The dead letter's columns, all strings.
DEAD_LETTER_SCHEMA = StructType([StructField(c, StringType()) for c in ("run_id", "step", "row_key", "error_class", "error")])


def failure_columns(result: DataFrame, steps: Sequence[str], key_columns: Sequence[str]) -> list[Column]:
    """Aggregate Columns to observe while the result is written (:func:`observed`): per step with
    a ``<step>_meta`` column, ``failed.<step>``, up to :data:`OBSERVED_FAILURES_MAX` of its error
    rows as structs of :func:`plan_failures`'s ``row_key``, ``error_class`` and ``error``, or NULL
    when none. Spark's top-k ``max_by`` (Spark 4.2) keeps each task's list that short, whatever the
    number of errors; [] on an older Spark, or on Spark Connect (whose client may predate it)."""
    from pyspark.sql.utils import is_remote

    version = re.match(r"(\d+)\.(\d+)", result.sparkSession.version)
    if is_remote() or not version or (int(version[1]), int(version[2])) < (4, 2):
        return []
    return [F.max_by(F.struct(*_failure_fields(result, s, key_columns)),
                     F.when(result[f"{s}_meta"]["status"] == "error", F.lit(1)), OBSERVED_FAILURES_MAX).alias(f"failed.{s}")
            for s in steps if f"{s}_meta" in result.columns]


def observed_failures(spark: SparkSession, run_id: str, steps: Sequence[str], counts: Mapping[str, dict],
                      seen: Mapping[str, list] | None) -> DataFrame | None:
    """The dead-letter rows of ``steps`` (as :func:`plan_failures`) from the values of
    :func:`failure_columns` observed while the result was written (``seen``), as a local DataFrame
    of one partition; None unless ``seen`` holds every error row that ``counts``
    (:func:`status_counts`) gives each step.

    The rows go to Spark as an Arrow table, which the JVM reads itself: a list of tuples is
    unpickled by Python workers in the write's tasks, and two partitions make two files, together
    about 75 ms more of a 75-row dead letter's write here (2-core machine, Spark 4.2)."""
    if seen is None:
        return None
    rows = []
    for s in steps:
        got = seen.get(f"failed.{s}") or []
        if len(got) != counts[s]["error"]:
            return None
        rows += [{"run_id": run_id, "step": s, "row_key": r["row_key"], "error_class": r["error_class"], "error": r["error"]}
                 for r in got]
    table = pa.Table.from_pylist(rows, schema=pa.schema([(name, pa.string()) for name in DEAD_LETTER_SCHEMA.fieldNames()]))
    return spark.createDataFrame(table, DEAD_LETTER_SCHEMA).coalesce(1)


def _failure_fields(result: DataFrame, step: str, key_columns: Sequence[str]) -> list[Column]:
    meta = result[f"{step}_meta"]
    key = row_key(result, [c for c in dict.fromkeys(key_columns) if c in result.columns])
    return [key.alias("row_key"), meta["error_class"].alias("error_class"), meta["error"].alias("error")]


def row_key(df: DataFrame, columns: Sequence[str]):
    """A string Column: the JSON object of ``columns``' values (``{"id":7}``); ``{}`` for none."""
    return F.to_json(F.struct(*[df[c] for c in columns])) if columns else F.lit("{}")


# ---- SQL runs ------------------------------------------------------------------------------------------

def sql_failures(result: DataFrame, run_id: str) -> DataFrame | None:
    """Dead-letter rows of a SQL job's result: one per row and ``*_or_error`` column
    (``struct<result, errorMessage>``) whose ``errorMessage`` is set, with ``run_id``, ``step`` (the
    column), ``row_key``, ``error_class`` (the message up to its first ``:``) and ``error``. A row a
    spent budget left unanswered (``BudgetExhausted``) is no failure and stays out.

    ``row_key`` is the JSON of the first of :data:`KEY_COLUMNS` in ``result``, else of the sha256 (16
    hex digits) of the row's other columns. None when ``result`` has no such column. The plain
    ``apwa_*`` functions give NULL for a failed row, which cannot be told from a NULL answer, so
    their rows are not dead-lettered.
    """
    errors = [f.name for f in result.schema.fields
              if isinstance(f.dataType, StructType) and f.dataType.fieldNames() == ["result", "errorMessage"]]
    if not errors:
        return None
    keys = [c for c in KEY_COLUMNS if c in result.columns][:1]
    if keys:
        key = row_key(result, keys)
    else:
        others = [result[c] for c in result.columns if c not in errors]
        digest = F.substring(F.sha2(F.to_json(F.struct(*others)), 256), 1, 16) if others else F.lit(None)
        key = F.to_json(F.struct(digest.alias(ROW_KEY)))
    failed = lambda c: result[c]["errorMessage"].isNotNull() & ~result[c]["errorMessage"].startswith("BudgetExhausted")
    parts = [result.filter(failed(c)).select(
                 F.lit(run_id).alias("run_id"), F.lit(c).alias("step"), key.alias("row_key"),
                 F.substring_index(result[c]["errorMessage"], ":", 1).alias("error_class"),
                 result[c]["errorMessage"].alias("error"))
             for c in errors]
    return reduce(DataFrame.unionByName, parts)
