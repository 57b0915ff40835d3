"""Inputs for plans: Delta, Parquet, CSV, JSON lines, or a folder of text / Markdown files."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from apwa_spark.delta import read_delta

TEXT_SUFFIXES = (".txt", ".md", ".markdown")


def read_input(spark: SparkSession, path: str | Path) -> DataFrame:
    """Read ``path`` by what it is:

    * a folder with ``_delta_log``: a Delta table;
    * ``*.parquet`` or a folder of Parquet files; ``*.csv`` (header row); ``*.jsonl`` / ``*.json``;
    * a folder of ``.txt`` / ``.md`` files: one row per file, columns ``path`` and ``text``.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: a format it cannot tell; the message lists the supported ones.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no input at {path}")
    if p.is_dir() and (p / "_delta_log").is_dir():
        return read_delta(spark, p)
    if p.suffix == ".parquet" or (p.is_dir() and any(p.glob("*.parquet"))):
        return spark.read.parquet(str(p))
    if p.suffix == ".csv":
        return spark.read.option("header", True).option("multiLine", True).option("escape", '"').csv(str(p))
    if p.suffix in (".jsonl", ".json"):
        return spark.read.json(str(p))
    if p.is_dir() and any(f.suffix in TEXT_SUFFIXES for f in p.iterdir()):
        files = sorted(f for f in p.iterdir() if f.suffix in TEXT_SUFFIXES)
        rows = [(str(f), f.read_text(encoding="utf-8", errors="replace")) for f in files]
        return spark.createDataFrame(rows, "path string, text string")
    raise ValueError(f"cannot tell the format of {path}: use a Delta table, .parquet, .csv, .jsonl or a folder of .txt/.md files")
