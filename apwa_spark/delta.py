"""Delta tables from Spark: native delta-spark by default, delta-rs as the fallback.

Two paths write the same plain Delta tables (``deltalake.DeltaTable(uri)`` and any Delta reader open
them); ``spark.apwa.delta.engine`` chooses (:func:`resolve_engine`):

* **native** (the default wherever the session has Delta Lake: the sessions apwa-spark creates,
  Databricks, a cluster with delta-spark): ``df.write.format("delta")``, one commit per write, with
  Change Data Feed on (``delta.enableChangeDataFeed=true``). Paths are any URI Spark's file systems
  take (``s3a://``, ``abfss://``, ``gs://``, ``dbfs:/``, ``/Volumes/...``); a catalog schema makes
  managed tables (:class:`TableStore`).
* **deltars** (sessions without the Delta jars): a Spark 4 Python Data Source. Each task writes one
  Parquet file named after the write (``part-<write id>-…``) into the table folder, and the driver
  commits every task's file as **one** delta-rs transaction carrying a ``txn`` action (app id
  ``apwa-spark-<write id>``), so a retried commit is a no-op. After the commit, files of the write
  that the commit does not hold (failed or losing speculative attempts) are deleted; ``abort``
  deletes the write's files only when the log holds no commit of it. Reads go through delta-rs: its
  dataset, one Spark partition per file (partition columns from the log), or its query engine in
  one partition for tables with deletion vectors or column mapping.
  The tasks write with their own file system, so on a cluster the table must be on a shared
  filesystem or on S3 (``s3://``/``s3a://``, credentials through ``storage_options``); other object
  stores need the native path.

Usage::

    write_delta(df, "s3a://bucket/out/level0", mode="overwrite")
    df = read_delta(spark, "s3a://bucket/out/level0")
"""

from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.datasource import (DataSource, DataSourceArrowWriter, DataSourceReader, InputPartition,
                                    WriterCommitMessage)
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import StructType

from apwa_spark import storage

FORMAT_NAME = "apwa_delta"
ENGINES = ("auto", "native", "deltars")
#: The table property that turns on Change Data Feed (native path).
CDF = "delta.enableChangeDataFeed"
#: The table property naming how many leading columns get file statistics (min, max, null count).
INDEXED_COLUMNS = "delta.dataSkippingNumIndexedCols"
T = TypeVar("T")


def has_native_delta(spark: SparkSession) -> bool:
    """True when the session can read and write ``format("delta")`` itself (jars or Databricks)."""
    if "DeltaSparkSessionExtension" in (spark.conf.get("spark.sql.extensions", "") or ""):
        return True
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def resolve_engine(spark: SparkSession, engine: str | None = None) -> str:
    """``native`` or ``deltars`` for ``engine`` (``auto``/``native``/``deltars``; default: the session's
    ``spark.apwa.delta.engine``, else ``auto``).

    Raises:
        ValueError: an unknown engine, or ``native`` on a session without Delta Lake.
    """
    if engine is None:
        from apwa_spark.config import Settings

        engine = Settings.load(spark).delta.engine
    if engine not in ENGINES:
        raise ValueError(f"spark.apwa.delta.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    native = has_native_delta(spark)
    if engine == "native" and not native:
        raise ValueError("spark.apwa.delta.engine is 'native' but this session has no Delta Lake: start it with "
                         "apwa_spark.session.get_session() (or delta-spark's configure_spark_with_delta_pip), or set "
                         "spark.apwa.delta.engine=auto to use the delta-rs fallback")
    return "native" if engine == "native" or (engine == "auto" and native) else "deltars"


def _native_writer(df: DataFrame, mode: str, note: str | None = None, column_stats: bool = True):
    """A delta-spark writer with CDF on; an overwrite replaces the schema too (a re-run of a newer
    apwa-spark over an older run's tables, whose columns differ, replaces them). ``note``: the
    commit's ``userMetadata``, as a writer option (it wins over the session conf that
    :func:`commit_metadata` sets for a commit made meanwhile on another thread).

    ``column_stats=False``: a table the write creates gets ``delta.dataSkippingNumIndexedCols=0``,
    so its files carry ``numRecords`` but no per-column statistics; a table that exists keeps its
    properties (delta-spark takes ``delta.*`` writer options when it creates a table). delta-spark
    collects such statistics for the first 32 columns by default, which costs every write time in
    its task, its planning and its commit (the effect on a summarize job's levels:
    ``benchmarks/results/floor_*``); they only serve to skip files on a filter, which a table read
    whole, or of a file or two, never does."""
    writer = df.write.format("delta").mode(mode).option(CDF, "true")
    writer = writer.option("userMetadata", note) if note is not None else writer
    writer = writer if column_stats else writer.option(INDEXED_COLUMNS, "0")
    return writer.option("overwriteSchema", "true") if mode == "overwrite" else writer


def _new_table_mode(spark: SparkSession, uri: str, mode: str) -> str:
    """``errorifexists`` for an overwrite of a table that does not exist yet, else ``mode``.

    delta-spark's overwrite first lists the files of the table it replaces, to remove them; where
    there is no table yet, that is a state reconstruction of an empty snapshot: one Spark job more,
    and the planning of its queries, on the commit's path (delta-spark 4.4). Most tables of a run
    are new (its levels, its result); the effect on a summarize job's levels is in
    ``benchmarks/results/floor_*``. A writer that creates the table between the check and the write
    makes this write fail (``DELTA_PATH_EXISTS``) instead of replacing that writer's rows."""
    from delta.tables import DeltaTable

    return "errorifexists" if mode == "overwrite" and not DeltaTable.isDeltaTable(spark, uri) else mode


def write_delta(df: DataFrame, path: str, mode: str = "overwrite", engine: str | None = None,
                storage_options: Mapping[str, str] | None = None, note: str | None = None,
                column_stats: bool = True) -> None:
    """Write ``df`` as a Delta table at ``path`` in one commit.

    Args:
        df: any DataFrame; its rows are computed once, by the write job.
        path: the table's location: a local path or a URI (``s3a://bucket/t``); never resolved unless local.
        mode: ``overwrite`` (replace the table's rows) or ``append``.
        engine: ``auto``/``native``/``deltars`` (:func:`resolve_engine`).
        storage_options: delta-rs options for an object-store ``path`` (fallback only; default
            :func:`apwa_spark.storage.storage_options` of the session).
        note: the commit's ``userMetadata`` (native path only).
        column_stats: False: a new table's files get no per-column statistics, only
            ``numRecords`` (native path, :func:`_native_writer`; the fallback's files never have them).

    Raises:
        ValueError: an unsupported mode or engine, or a URI the fallback cannot write.
    """
    _check_mode(mode)
    spark = df.sparkSession
    uri = storage.normalize(path)
    if resolve_engine(spark, engine) == "native":
        _native_writer(df, _new_table_mode(spark, uri, mode), note, column_stats).save(uri)
        return
    options = dict(storage.storage_options(spark, uri) if storage_options is None else storage_options)
    spark.dataSource.register(DeltaRsDataSource)
    df.write.format(FORMAT_NAME).mode(mode).options(**options).save(uri)


def read_delta(spark: SparkSession, path: str, engine: str | None = None,
               storage_options: Mapping[str, str] | None = None) -> DataFrame:
    """Read the current version of the Delta table at ``path`` (local path or URI).

    Raises:
        FileNotFoundError: no Delta table at ``path`` (fallback path; the native one raises Spark's error).
    """
    uri = storage.normalize(path)
    if resolve_engine(spark, engine) == "native":
        return spark.read.format("delta").load(uri)
    options = dict(storage.storage_options(spark, uri) if storage_options is None else storage_options)
    table = _open(uri, options)
    spark.dataSource.register(DeltaRsDataSource)
    return (spark.read.format(FORMAT_NAME).schema(_spark_schema(table)).options(**options)
            .option("version", str(table.version())).load(uri))


def _check_mode(mode: str) -> None:
    if mode not in ("overwrite", "append"):
        raise ValueError(f"mode must be 'overwrite' or 'append', got {mode!r}")


def _open(uri: str, options: Mapping[str, str], version: int | None = None):
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(uri, version=version, storage_options=dict(options) or None)
    except TableNotFoundError:
        raise FileNotFoundError(f"no Delta table at {uri}") from None


def _spark_schema(table) -> StructType:
    return from_arrow_schema(pa.schema(table.schema().to_arrow()))


# ---- where a job's tables go ------------------------------------------------------------------------

@dataclass(frozen=True)
class TableStore:
    """Where one job writes its tables, and how: a folder URI, or managed tables in a catalog schema.

    Attributes:
        root: the job's folder (local path or URI); its tables are ``<root>/<name>`` unless ``schema``
            is set. The response cache and manifests always live here.
        schema: a catalog schema (``main.apwa_runs``): each table is the managed Delta table
            ``<schema>.<name>`` (native path only).
        engine: ``native`` or ``deltars`` (resolved, :func:`resolve_engine`).
        storage_options: delta-rs options for ``root`` (secrets: never printed, ``repr`` hides them).

    Usage::

        store = TableStore.create(spark, "s3a://bucket/run", settings.delta.engine)
        store.write(df, "chunk"); store.read("chunk")
    """

    spark: SparkSession = field(repr=False, compare=False)
    root: str
    schema: str | None = None
    engine: str = "native"
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, spark: SparkSession, root: str, engine: str | None = None, schema: str | None = None) -> "TableStore":
        """A store at ``root`` (normalized; a local folder is created).

        Raises:
            ValueError: ``schema`` on the delta-rs fallback, or a bad engine.
        """
        resolved = resolve_engine(spark, engine)
        if schema and resolved != "native":
            raise ValueError(f"catalog output (schema {schema!r}) needs native Delta Lake; this session has "
                             "none: start it with apwa_spark.session.get_session(), or give an output path")
        uri = storage.normalize(root)
        storage.make_dirs(uri)
        if schema:
            spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        return cls(spark, uri, schema, resolved, storage.storage_options(spark, uri))

    def location(self, name: str) -> str:
        """The table ``name``: ``<schema>.<name>`` (catalog) or ``<root>/<name>``."""
        return f"{self.schema}.`{name}`" if self.schema else storage.join(self.root, name)

    def path(self, name: str) -> str:
        """A file location under ``root`` (response cache, manifests), whatever ``schema`` says."""
        return storage.join(self.root, name)

    def write(self, df: DataFrame, name: str, mode: str = "overwrite", note: str | None = None,
              column_stats: bool = True) -> None:
        """Write ``df`` as the table ``name`` in one commit (CDF on, native path); ``note``: the
        commit's ``userMetadata`` (native path); ``column_stats=False``: a new table's files get
        ``numRecords`` only, no per-column statistics (:func:`write_delta`)."""
        if not self.schema:
            write_delta(df, self.location(name), mode, self.engine, self.storage_options, note, column_stats)
            return
        _check_mode(mode)
        _native_writer(df, mode, note, column_stats).saveAsTable(self.location(name))

    def read(self, name: str) -> DataFrame:
        """The current version of the table ``name``."""
        if self.schema:
            return self.spark.table(self.location(name))
        return read_delta(self.spark, self.location(name), self.engine, self.storage_options)

    def files(self, name: str) -> list[str]:
        """The data files of the table ``name``'s current version (a table's lineage): from its
        Delta log through delta-rs, in the driver's process and without a Spark job, where the
        table has a path; from a Spark scan (``DataFrame.inputFiles``) otherwise
        (:meth:`_by_deltars`).

        Raises:
            FileNotFoundError: no Delta table there.
        """
        return self._by_deltars(name, lambda table: table.file_uris(), lambda df: df.inputFiles())

    def head(self, name: str, n: int = 1) -> list[dict]:
        """The first ``n`` rows of the table ``name``'s current version, as dicts of Python values:
        for a small table the run just wrote (a summarize job's root). Read from its Delta log and
        files through delta-rs, in the driver's process and without a Spark job, where the table has
        a path (delta-spark's first read of a new table plans a scan and rebuilds the snapshot's
        state: about 1.9 s at the end of a summarize job in a new session on this project's
        machine); otherwise (:meth:`_by_deltars`), and for a table delta-rs cannot read as Spark
        would (deletion vectors, column mapping), Spark's ``limit(n)`` and
        ``Row.asDict(recursive=True)``. The two agree on strings, numbers, booleans, dates,
        decimals, arrays, structs and NULLs; pyarrow gives maps as lists of pairs and timestamps in
        UTC, which no table of a run holds.

        Raises:
            FileNotFoundError: no Delta table there (delta-rs fallback; native Delta raises Spark's error).
        """
        return self._by_deltars(
            name, lambda table: None if _needs_query_engine(table) else table.to_pyarrow_dataset().head(n).to_pylist(),
            lambda df: [row.asDict(recursive=True) for row in df.limit(n).collect()])

    def _by_deltars(self, name: str, read: Callable[[Any], T | None], spark_read: Callable[[DataFrame], T]) -> T:
        """``read`` of the table ``name`` opened with delta-rs, where it has a path; ``spark_read``
        of Spark's DataFrame of it for a catalog table or a native ``dbfs:`` path (delta-rs would
        name its files by their ``/dbfs`` mount), where ``read`` gives None, and on native Delta
        where delta-rs fails (a table feature it lacks, credentials from a Hadoop provider chain, a
        path Spark resolves on its default file system). On the fallback delta-rs's error is raised."""
        location = self.location(name)
        if not (self.schema or (self.engine == "native" and urlsplit(location).scheme == "dbfs")):
            try:
                value = read(_open(storage.deltars_uri(location), self.storage_options))
                if value is not None:
                    return value
            except Exception:  # noqa: BLE001
                if self.engine != "native":
                    raise
        return spark_read(self.read(name))

    def exists(self, name: str) -> bool:
        """True when the table ``name`` is a Delta table (an earlier run wrote it)."""
        if self.schema:
            return self.spark.catalog.tableExists(self.location(name))
        if self.engine == "native":
            from delta.tables import DeltaTable

            return DeltaTable.isDeltaTable(self.spark, self.location(name))
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.location(name), storage_options=dict(self.storage_options) or None)

    def commit_metadata(self, name: str) -> str | None:
        """The ``userMetadata`` of the table's latest commit (native path; None on the fallback)."""
        if self.engine != "native" or not self.exists(name):
            return None
        return _history(self.spark, self.location(name))["userMetadata"]

    def merge(self, df: DataFrame, name: str, on: str, changed: str) -> None:
        """Make the table ``name`` hold exactly ``df``'s rows, in one MERGE commit on the unique key
        column ``on``: a row of ``df`` whose key the table lacks is inserted, a matched row is
        updated where the SQL condition ``changed`` holds (aliases ``t``, the table, and ``s``,
        ``df``), and a table row whose key ``df`` lacks is deleted. The table's history then shows
        what changed (Change Data Feed on the native path). The fallback merges with delta-rs from
        ``df`` collected to Arrow on the driver.
        """
        condition = f"t.`{on}` = s.`{on}`"
        if self.engine == "native":
            (_native_table(self.spark, self.location(name)).alias("t").merge(df.alias("s"), condition).whenMatchedUpdateAll(changed)
             .whenNotMatchedInsertAll().whenNotMatchedBySourceDelete().execute())
            return
        (_open(self.location(name), self.storage_options)
         .merge(df.toArrow(), condition, source_alias="s", target_alias="t")
         .when_matched_update_all(changed).when_not_matched_insert_all().when_not_matched_by_source_delete().execute())


def _is_path(location: str) -> bool:
    """A path or URI (``/data/t``, ``s3a://b/t``), not a catalog table name (``main.s.t``)."""
    return "/" in location or ":" in location


def _native_table(spark: SparkSession, location: str):
    """delta-spark's ``DeltaTable`` of a path/URI or a catalog table name."""
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, location) if _is_path(location) else DeltaTable.forName(spark, location)


def _history(spark: SparkSession, location: str):
    """The latest commit's row of ``DESCRIBE HISTORY`` (native path)."""
    return _native_table(spark, location).history(1).first()


@contextmanager
def commit_metadata(spark: SparkSession, text: str | None):
    """Delta commits made inside carry ``text`` as their ``userMetadata`` (native path; the session
    conf ``spark.databricks.delta.commitInfo.userMetadata``, restored after)."""
    key = "spark.databricks.delta.commitInfo.userMetadata"
    if text is None:
        yield
        return
    before = spark.conf.get(key, None)
    spark.conf.set(key, text)
    try:
        yield
    finally:
        spark.conf.unset(key) if before is None else spark.conf.set(key, before)


@dataclass(frozen=True)
class ChangeFeed:
    """A native Delta table's Change Data Feed (``location``: a path/URI or a catalog table name)."""

    spark: SparkSession = field(repr=False, compare=False)
    location: str

    @classmethod
    def of(cls, spark: SparkSession, location: str | None) -> "ChangeFeed | None":
        """The feed of ``location``, or None: no location, no native Delta, not a Delta table, or
        ``delta.enableChangeDataFeed`` not on."""
        if not location or not has_native_delta(spark):
            return None
        try:
            properties = _native_table(spark, location).detail().first()["properties"]
        except Exception:  # noqa: BLE001  (not a Delta table: a file, a folder of text, a view)
            return None
        return cls(spark, location) if str(properties.get(CDF, "")).lower() == "true" else None

    def version(self) -> int:
        """The table's current version."""
        return int(_history(self.spark, self.location)["version"])

    def changes(self, start: int, end: int) -> DataFrame:
        """Every change of versions ``start`` to ``end`` (inclusive), with ``_change_type``.

        Raises:
            AnalysisException: the feed no longer holds ``start`` (vacuumed, or written before CDF was on).
        """
        reader = (self.spark.read.format("delta").option("readChangeFeed", "true")
                  .option("startingVersion", start).option("endingVersion", end))
        return reader.load(self.location) if _is_path(self.location) else reader.table(self.location)


# ---- the delta-rs fallback ----------------------------------------------------------------------------

@dataclass
class _FilesWritten(WriterCommitMessage):
    """What one Spark task wrote: (path relative to the table, bytes, rows) per Parquet file."""

    files: list[tuple[str, int, int]] = field(default_factory=list)


def _filesystem(uri: str, options: Mapping[str, str]) -> tuple[pafs.FileSystem, str]:
    """A pyarrow file system and the path of ``uri`` on it (local, ``s3://`` or ``s3a://``).

    Raises:
        ValueError: another scheme (the fallback's tasks cannot write there).
    """
    parts = urlsplit(uri)
    if storage.is_local(uri):
        return pafs.LocalFileSystem(), storage.normalize(uri)
    if parts.scheme not in ("s3", "s3a"):
        raise ValueError(f"the delta-rs fallback writes local paths and s3:// or s3a:// only, not {uri}; "
                         "run with Delta Lake (spark.apwa.delta.engine=auto on a session with delta-spark)")
    endpoint = options.get("AWS_ENDPOINT_URL")
    fs = pafs.S3FileSystem(
        access_key=options.get("AWS_ACCESS_KEY_ID"), secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
        session_token=options.get("AWS_SESSION_TOKEN"), region=options.get("AWS_REGION"),
        endpoint_override=urlsplit(endpoint).netloc if endpoint else None,
        scheme=urlsplit(endpoint).scheme if endpoint else "https")
    return fs, parts.netloc + parts.path.rstrip("/")


class _DeltaRsWriter(DataSourceArrowWriter):
    def __init__(self, uri: str, options: dict[str, str], schema: StructType, overwrite: bool):
        self.uri, self.options = uri, options
        self.arrow_schema = to_arrow_schema(schema)
        self.overwrite = overwrite
        self.write_id = uuid.uuid4().hex  # one per write job, made on the driver
        self.app_id = f"apwa-spark-{self.write_id}"

    def write(self, iterator: Iterator[pa.RecordBatch]) -> _FilesWritten:
        name = f"part-{self.write_id}-{uuid.uuid4().hex}.snappy.parquet"  # unique per task attempt
        fs, root = _filesystem(self.uri, self.options)
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(root, recursive=True)
        rows = 0
        with pq.ParquetWriter(f"{root}/{name}", self.arrow_schema, compression="snappy", filesystem=fs) as out:
            for batch in iterator:
                out.write_batch(batch.cast(self.arrow_schema) if batch.schema != self.arrow_schema else batch)
                rows += batch.num_rows
        if rows == 0:
            fs.delete_file(f"{root}/{name}")
            return _FilesWritten([])
        return _FilesWritten([(name, fs.get_file_info(f"{root}/{name}").size, rows)])

    def commit(self, messages: list[_FilesWritten]) -> None:
        """One delta-rs commit of every task's file, with the write's ``txn``; then the write's other files go."""
        from deltalake import CommitProperties, DeltaTable, Schema, Transaction
        from deltalake.transaction import AddAction, create_table_with_add_actions

        files = [f for message in messages if message is not None for f in message.files]
        if not self._committed():
            now_ms = int(time.time() * 1000)
            actions = [AddAction(name, size, {}, now_ms, True, json.dumps({"numRecords": rows})) for name, size, rows in files]
            mode = "overwrite" if self.overwrite else "append"
            schema = Schema.from_arrow(self.arrow_schema)
            props = CommitProperties(app_transactions=[Transaction(self.app_id, 0)])
            options = self.options or None
            if DeltaTable.is_deltatable(self.uri, storage_options=options):
                DeltaTable(self.uri, storage_options=options).create_write_transaction(
                    actions, mode, schema, commit_properties=props)
            else:
                create_table_with_add_actions(self.uri, schema, actions, mode=mode, storage_options=options,
                                              commit_properties=props)
        self._delete_files(keep={name for name, _, _ in files})

    def abort(self, messages: list[_FilesWritten]) -> None:
        """Delete the write's files, unless the log holds its commit (then only files it does not hold)."""
        if self._committed():
            self._delete_files(keep={f[0] for m in messages if m is not None for f in m.files})
        else:
            self._delete_files(keep=set())

    def _committed(self) -> bool:
        from deltalake import DeltaTable

        options = self.options or None
        if not DeltaTable.is_deltatable(self.uri, storage_options=options):
            return False
        return DeltaTable(self.uri, storage_options=options).transaction_version(self.app_id) is not None

    def _delete_files(self, keep: set[str]) -> None:
        """Delete this write's Parquet files (``part-<write id>-*``) that are not in ``keep``."""
        fs, root = _filesystem(self.uri, self.options)
        prefix = f"part-{self.write_id}-"
        try:
            infos = fs.get_file_info(pafs.FileSelector(root))
        except FileNotFoundError:
            return
        for info in infos:
            if info.base_name.startswith(prefix) and info.base_name not in keep:
                fs.delete_file(info.path)


class _DeltaRsReader(DataSourceReader):
    """Reads one version of a table through delta-rs.

    A plain table is read one Spark partition per data file, through delta-rs's pyarrow dataset
    (partition values come from the log). A table with deletion vectors or column mapping, which that
    dataset reads wrongly or not at all, is read in one partition through delta-rs's query engine
    (``QueryBuilder``), which applies both.
    """

    def __init__(self, uri: str, options: dict[str, str], version: int):
        self.uri, self.options, self.version = uri, options, version

    def _table(self):
        return _open(self.uri, self.options, self.version)

    def partitions(self) -> list[InputPartition]:
        table = self._table()
        if _needs_query_engine(table):
            return [InputPartition("all")]
        return [InputPartition(i) for i, _ in enumerate(table.to_pyarrow_dataset().get_fragments())]

    def read(self, partition: InputPartition | None) -> Iterator[pa.RecordBatch]:
        if partition is None or partition.value is None:  # a table without files: Spark reads one empty partition
            return
        table = self._table()
        if partition.value == "all":
            from deltalake import QueryBuilder

            columns = ", ".join('"' + f.name.replace('"', '""') + '"' for f in table.schema().fields)  # table order
            yield from pa.RecordBatchReader.from_stream(QueryBuilder().register("t", table).execute(f"SELECT {columns} FROM t"))
            return
        dataset = table.to_pyarrow_dataset()
        fragment = list(dataset.get_fragments())[partition.value]
        yield from fragment.to_batches(schema=dataset.schema)


def _needs_query_engine(table) -> bool:
    """True for a table with deletion vectors or column mapping."""
    features = table.protocol().reader_features or []
    mapping = table.metadata().configuration.get("delta.columnMapping.mode", "none")
    return "deletionVectors" in features or mapping != "none"


class DeltaRsDataSource(DataSource):
    """Spark Python Data Source ``apwa_delta``: writes (tasks write Parquet, the driver commits with
    delta-rs) and reads (delta-rs dataset) Delta tables. Options: ``path``, ``version`` (reads), and
    delta-rs storage options."""

    @classmethod
    def name(cls) -> str:
        return FORMAT_NAME

    def _storage_options(self) -> dict[str, str]:
        # Spark hands data source options over lower-cased; delta-rs and _filesystem read upper case
        return {k.upper(): v for k, v in self.options.items() if k.lower() not in ("path", "version")}

    def schema(self) -> StructType:
        return _spark_schema(_open(self.options["path"], self._storage_options()))

    def writer(self, schema: StructType, overwrite: bool) -> _DeltaRsWriter:
        return _DeltaRsWriter(self.options["path"], self._storage_options(), schema, overwrite)

    def reader(self, schema: StructType) -> _DeltaRsReader:
        version = self.options.get("version")
        return _DeltaRsReader(self.options["path"], self._storage_options(), int(version) if version else None)
