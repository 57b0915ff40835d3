"""Inputs for plans: a catalog table, Delta, Parquet, CSV, JSON lines, or a folder of text / Markdown files,
at a local path or any URI the session reads (``s3a://``, ``abfss://``, ``dbfs:/``, ``/Volumes/...``)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from apwa_spark import storage
from apwa_spark.delta import read_delta

TEXT_SUFFIXES = (".txt", ".md", ".markdown")


def read_input(spark: SparkSession, source: str | Path) -> DataFrame:
    """Read ``source`` by what it is:

    * a catalog table name (``main.docs.reviews``, ``reviews``): ``spark.table``;
    * a folder with ``_delta_log``: a Delta table;
    * ``*.parquet`` or a folder of Parquet files; ``*.csv`` (header row); ``*.jsonl`` / ``*.json``;
    * a folder of ``.txt`` / ``.md`` files: one row per file, columns ``path`` (the file's URI) and
      ``text``, read by Spark's executors (``wholetext``); the driver only asks whether such files
      exist (a glob on the JVM), so a folder of a million files is listed once, not file by file.

    Raises:
        FileNotFoundError: nothing at ``source`` and no such table.
        ValueError: a format it cannot tell; the message lists the supported ones.
    """
    text = str(source)
    if _is_table(spark, text):
        return spark.table(text)
    uri = storage.normalize(text)
    try:
        folder = storage.is_folder(spark, uri)
    except FileNotFoundError:
        raise FileNotFoundError(f"no input at {source}: give a path, a URI (s3a://bucket/docs) or a catalog table name") from None
    has = lambda *patterns: folder and storage.has_children(spark, uri, *patterns)
    suffix = PurePosixPath(urlsplit(uri).path).suffix
    if has("_delta_log"):
        return read_delta(spark, uri)
    if suffix == ".parquet" or has("*.parquet"):
        return spark.read.parquet(uri)
    if suffix == ".csv":
        return spark.read.option("header", True).option("multiLine", True).option("escape", '"').csv(uri)
    if suffix in (".jsonl", ".json"):
        return spark.read.json(uri)
    if has(*(f"*{s}" for s in TEXT_SUFFIXES)):
        return text_files(spark.read, uri).orderBy("path")
    raise ValueError(f"cannot tell the format of {source}: use a catalog table, a Delta table, .parquet, .csv, .jsonl "
                     "or a folder of .txt/.md files")


def text_files(reader, uri: str) -> DataFrame:
    """The ``.txt``/``.md`` files of the folder ``uri``, one row each: ``path`` (the file's URI) and
    ``text``; ``reader`` is ``spark.read`` or ``spark.readStream`` (a stream of new files)."""
    glob = "*.{" + ",".join(s.lstrip(".") for s in TEXT_SUFFIXES) + "}"
    files = reader.option("pathGlobFilter", glob).text(uri, wholetext=True)  # text() resets an option("wholetext")
    return files.select(F.col("_metadata.file_path").alias("path"), F.col("value").alias("text"))


def source_of(spark: SparkSession, source: str | Path) -> str:
    """``source`` as a run's manifest records it, so a later run (``retry-failed``) reads the same
    input from any working directory: a catalog table name as given, a path as an absolute URI."""
    text = str(source)
    return text if _is_table(spark, text) else storage.normalize(text)


def _is_table(spark: SparkSession, name: str) -> bool:
    """True for a name without a path's ``/`` or a URI's ``:`` that is no local file and names a table."""
    if "/" in name or ":" in name or Path(name).exists():
        return False
    try:
        return spark.catalog.tableExists(name)
    except AnalysisException:  # not a valid table identifier (e.g. 'my file.csv'): treat as a path
        return False
