"""Delta tables from Spark, with or without the Delta jars.

* Session with Delta (delta-spark jars, Databricks): native ``format("delta")``.
* Otherwise (this machine: Maven is unreachable, so no ``io.delta`` jars): delta-rs. Spark tasks
  write Parquet files through a Spark 4 Python Data Source (``DataSourceArrowWriter.write`` runs
  once per task), and the driver commits every file as **one** Delta transaction in
  ``DataSourceWriter.commit`` with ``deltalake``. A failed job commits nothing (``abort`` deletes
  the files it wrote). Reading back lists the table's active files from the Delta log and hands
  them to ``spark.read.parquet``.

Either way the result is a plain Delta table: ``deltalake.DeltaTable(path)`` opens it, and so does
any Delta reader. Usage::

    write_delta(df, "/data/out/level0", mode="overwrite")
    df = read_delta(spark, "/data/out/level0")
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.datasource import DataSource, DataSourceArrowWriter, WriterCommitMessage
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import StructType

FORMAT_NAME = "apwa_delta"


def has_native_delta(spark: SparkSession) -> bool:
    """True when the session can read and write ``format("delta")`` itself (jars or Databricks)."""
    if "DeltaSparkSessionExtension" in (spark.conf.get("spark.sql.extensions", "") or ""):
        return True
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def write_delta(df: DataFrame, path: str | Path, mode: str = "overwrite") -> None:
    """Write ``df`` as a Delta table at ``path`` in one commit.

    Args:
        df: any DataFrame; its rows are computed once, by the write job.
        path: local or mounted directory of the table.
        mode: ``overwrite`` (replace the table's rows) or ``append``.

    Raises:
        ValueError: an unsupported mode.
    """
    if mode not in ("overwrite", "append"):
        raise ValueError(f"mode must be 'overwrite' or 'append', got {mode!r}")
    path = str(Path(path).resolve())
    if has_native_delta(df.sparkSession):
        df.write.format("delta").mode(mode).save(path)
        return
    _register(df.sparkSession)
    df.write.format(FORMAT_NAME).mode(mode).save(path)


def read_delta(spark: SparkSession, path: str | Path) -> DataFrame:
    """Read the current version of the Delta table at ``path`` as a DataFrame.

    Raises:
        FileNotFoundError: no Delta table at ``path``.
    """
    path = str(Path(path).resolve())
    if has_native_delta(spark):
        return spark.read.format("delta").load(path)
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(path)
    except TableNotFoundError:
        raise FileNotFoundError(f"no Delta table at {path}") from None
    files = table.file_uris()
    schema = from_arrow_schema(pa.schema(table.schema().to_arrow()))
    if not files:
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).parquet(*files)


@dataclass
class _FilesWritten(WriterCommitMessage):
    """What one Spark task wrote: (relative path, bytes, rows) per Parquet file."""

    files: list[tuple[str, int, int]] = field(default_factory=list)


class _DeltaRsWriter(DataSourceArrowWriter):
    def __init__(self, path: str, schema: StructType, overwrite: bool):
        self.path = path
        self.arrow_schema = to_arrow_schema(schema)
        self.overwrite = overwrite

    def write(self, iterator: Iterator[pa.RecordBatch]) -> _FilesWritten:
        name = f"part-{uuid.uuid4().hex}.snappy.parquet"
        target = Path(self.path) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        rows = 0
        with pq.ParquetWriter(target, self.arrow_schema, compression="snappy") as out:
            for batch in iterator:
                out.write_batch(batch.cast(self.arrow_schema) if batch.schema != self.arrow_schema else batch)
                rows += batch.num_rows
        if rows == 0:
            target.unlink()
            return _FilesWritten([])
        return _FilesWritten([(name, target.stat().st_size, rows)])

    def commit(self, messages: list[_FilesWritten]) -> None:
        from deltalake import DeltaTable, Schema
        from deltalake.transaction import AddAction, create_table_with_add_actions

        now_ms = int(time.time() * 1000)
        actions = [
            AddAction(name, size, {}, now_ms, True, json.dumps({"numRecords": rows}))
            for message in messages
            if message is not None
            for name, size, rows in message.files
        ]
        mode = "overwrite" if self.overwrite else "append"
        schema = Schema.from_arrow(self.arrow_schema)
        if DeltaTable.is_deltatable(self.path):
            DeltaTable(self.path).create_write_transaction(actions, mode, schema)
        else:
            create_table_with_add_actions(self.path, schema, actions, mode=mode)

    def abort(self, messages: list[_FilesWritten]) -> None:
        for message in messages:
            for name, _, _ in (message.files if message else []):
                (Path(self.path) / name).unlink(missing_ok=True)


class DeltaRsDataSource(DataSource):
    """Spark Python Data Source ``apwa_delta``: Spark tasks write Parquet, the driver commits with delta-rs."""

    @classmethod
    def name(cls) -> str:
        return FORMAT_NAME

    def writer(self, schema: StructType, overwrite: bool) -> _DeltaRsWriter:
        return _DeltaRsWriter(self.options["path"], schema, overwrite)


def _register(spark: SparkSession) -> None:
    spark.dataSource.register(DeltaRsDataSource)
