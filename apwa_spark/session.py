"""The Spark session the CLI, jobs and notebooks use when the caller brings none.

Sessions made here have Delta Lake: delta-spark's jar from Maven Central (Ivy, through delta-spark's
``configure_spark_with_delta_pip``), its SQL extension and catalog, and Change Data Feed on for every
new table. Under spark-submit the JVM is already running, so the jars and Delta settings must come
with the submit: ``spark-submit --properties-file conf/apwa-defaults.conf``. A session the caller
brings (Databricks, their own cluster) is used as it is.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Mapping

from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: What Spark must redact besides its defaults: API keys (``spark.apwa.llm.apiKey``).
API_KEY_REDACTION = "(?i:api[._-]?key)"
#: the conf keys that hold an API key.
API_KEY_CONFS = ("spark.apwa.llm.apiKey",)

#: Settings apwa-spark needs or that suit LLM workloads; user-given conf wins.
SESSION_DEFAULTS = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.shuffle.partitions": "8",  # reduce levels have few groups; AQE coalesces further
    "spark.ui.showConsoleProgress": "true",  # Spark's stage progress bar on the console
    "spark.python.worker.reuse": "true",
    # Spark's default also hides tokens and passwords; add API keys (spark.apwa.llm.apiKey)
    "spark.redaction.regex": "(?i)secret|password|token|access[.]?key|api[._-]?key",
}

#: Delta Lake in sessions apwa-spark starts (the jar itself comes through spark.jars.packages).
DELTA_DEFAULTS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.databricks.delta.properties.defaults.enableChangeDataFeed": "true",
    # delta-spark 4.4 lists a small table's files in its commit's checksum, to spare later reads a
    # snapshot job; a new table's commit then runs one more Spark job, over the empty table it
    # replaces. A run's tables are mostly new (its levels, its result): on 2 cores that job cost
    # 0.05 s of a 0.27 s write of a small new table (0.1 s before the JVM warmed up), and reads of
    # such tables still ran their snapshot jobs (5) with it on.
    "spark.databricks.delta.allFilesInCrc.enabled": "false",
}


def local_defaults(master: str) -> dict[str, str]:
    """Defaults for a ``local[N]`` / ``local-cluster[W,C,M]`` master: Delta rebuilds a table's snapshot
    in ``spark.databricks.delta.snapshotPartitions`` tasks (default 50, sized for clusters; Delta's own
    test suites use a handful), which on a laptop makes every read of a small table 50 tasks of
    overhead. Sized here to the local slots. ``{}`` for any other master."""
    import re

    if m := re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", master):
        slots = (os.cpu_count() or 2) if m[1] == "*" else int(m[1])
    elif m := re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*\d+\]", master):
        slots = int(m[1]) * int(m[2])
    else:
        return {}
    return {"spark.databricks.delta.snapshotPartitions": str(max(1, slots))}


def get_session(master: str | None = None, conf: Mapping[str, str] | None = None, app_name: str = "apwa-spark") -> SparkSession:
    """The active session, or a new one (``local[2]`` unless ``master`` or spark-submit says otherwise).

    A new session outside spark-submit gets Delta Lake (:data:`DELTA_DEFAULTS` and delta-spark's jar,
    resolved by Ivy from Maven Central on first use and cached in ``~/.ivy2*``); packages named in
    ``conf["spark.jars.packages"]`` (comma-separated Maven coordinates) are resolved with it.
    Executors run the same Python as the driver (``PYSPARK_PYTHON`` defaults to ``sys.executable``),
    so the installed ``apwa_spark`` package is importable in pandas UDFs. A local master also gets
    :func:`local_defaults` unless the conf sets them.
    """
    active = SparkSession.getActiveSession()
    if active is not None and not conf:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # under spark-submit the master and jars are already set
    if master:
        builder = builder.master(master)
    elif not submitted:
        builder = builder.master("local[2]")
    settings = {**SESSION_DEFAULTS, **({} if submitted else DELTA_DEFAULTS), **(conf or {})}
    packages = [p for p in settings.pop("spark.jars.packages", "").split(",") if p.strip()]
    for key, value in settings.items():
        builder = builder.config(key, value)
    if not submitted:
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder, extra_packages=packages)
    elif packages:
        builder = builder.config("spark.jars.packages", ",".join(packages))
    session = builder.getOrCreate()
    master = session.conf.get("spark.master", "")  # also on Spark Connect, which has no SparkContext
    for key, value in local_defaults(master).items():
        if session.conf.get(key, None) is None:  # a value from --conf or spark-defaults wins
            session.conf.set(key, value)
    return session


def protect_api_key(spark: SparkSession) -> None:
    """Keep ``spark.apwa.llm.apiKey`` out of the Spark UI and the event log of a session apwa-spark
    did not create (a notebook's, Databricks'), where ``spark.redaction.regex`` does not cover it.

    Called whenever settings are read from a session (:meth:`apwa_spark.config.Settings.load`).
    On the live session it:

    * extends the SparkContext's ``spark.redaction.regex`` (its live conf, which the event log and
      the UI's Environment page redact with) and the session's ``spark.sql.redaction.options.regex``
      (SQL executions' modified configs) to match API keys;
    * copies a key set the notebook way (``spark.conf.set``) into the SparkContext's conf: Spark SQL
      hands every ``spark.*`` session conf to the jobs it runs as job properties, and the event log
      redacts only the properties the SparkContext's conf has.

    A key given when the session started (``--conf``, ``spark-defaults.conf``) while the regex did
    not cover it is already in the event log's start event and the UI's Environment page: that is
    logged as a warning with the fix. A Spark Connect session (Databricks shared and serverless
    compute) has no SparkContext on the client, so its server's redaction cannot be changed from
    here: a key set in its conf is logged as a warning naming the safe ways to pass it.
    """
    try:
        conf = spark.sparkContext._conf  # the live JVM SparkConf, not a copy
    except Exception:  # Spark Connect: no SparkContext on the client
        if any(spark.conf.get(k, None) for k in API_KEY_CONFS):
            log.warning("%s is set on a Spark Connect session, whose server's spark.redaction.regex apwa-spark cannot "
                        "extend: the server's UI and event log may show it; pass the key as APWA_LLM_API_KEY or "
                        "spark.apwa.llm.apiKeyFile instead", API_KEY_CONFS[0])
        return
    keys = {k: spark.conf.get(k, None) for k in API_KEY_CONFS}
    keys = {k: v for k, v in keys.items() if v}
    regex = conf.get("spark.redaction.regex", "(?i)secret|password|token|access[.]?key")
    if not _matches(spark, regex, API_KEY_CONFS[0]):
        started_with = [k for k in keys if conf.get(k, None) == keys[k]]
        if started_with:
            log.warning("%s was set when the Spark session started, while spark.redaction.regex did not cover it, so "
                        "the Spark UI's Environment page and the event log's start event show it; pass the key as "
                        "APWA_LLM_API_KEY or spark.apwa.llm.apiKeyFile, or start the session with "
                        "--conf spark.redaction.regex='(?i)secret|password|token|api[._-]?key'", ", ".join(started_with))
        conf.set("spark.redaction.regex", f"{regex}|{API_KEY_REDACTION}")
    sql_regex = spark.conf.get("spark.sql.redaction.options.regex", "(?i)url")
    if not _matches(spark, sql_regex, API_KEY_CONFS[0]):
        spark.conf.set("spark.sql.redaction.options.regex", f"{sql_regex}|{API_KEY_REDACTION}")
    for key, value in keys.items():
        if conf.get(key, None) != value:
            conf.set(key, value)


def _matches(spark: SparkSession, java_regex: str, text: str) -> bool:
    """Whether the Java regex (Spark's syntax, not Python's) finds a match in ``text``."""
    return bool(spark._jvm.java.util.regex.Pattern.compile(java_regex).matcher(text).find())
