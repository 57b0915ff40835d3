"""The Spark session the CLI, jobs and notebooks use when the caller brings none."""

from __future__ import annotations

import os
import sys
from typing import Mapping

from pyspark.sql import SparkSession

#: Settings apwa-spark needs or that suit LLM workloads; user-given conf wins.
SESSION_DEFAULTS = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.shuffle.partitions": "8",  # reduce levels have few groups; AQE coalesces further
    "spark.ui.showConsoleProgress": "true",  # Spark's stage progress bar on the console
    "spark.python.worker.reuse": "true",
    # Spark's default also hides tokens and passwords; add API keys (spark.apwa.llm.apiKey)
    "spark.redaction.regex": "(?i)secret|password|token|access[.]?key|api[._-]?key",
}


def get_session(master: str | None = None, conf: Mapping[str, str] | None = None, app_name: str = "apwa-spark") -> SparkSession:
    """The active session, or a new one (``local[2]`` unless ``master`` or spark-submit says otherwise).

    Executors run the same Python as the driver (``PYSPARK_PYTHON`` defaults to ``sys.executable``),
    so the installed ``apwa_spark`` package is importable in pandas UDFs.
    """
    active = SparkSession.getActiveSession()
    if active is not None and not conf:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ:  # under spark-submit the master is already set
        builder = builder.master("local[2]")
    for key, value in {**SESSION_DEFAULTS, **(conf or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()

