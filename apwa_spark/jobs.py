"""Batch jobs: one body per job, shared by the ``apwa-spark`` CLI and the spark-submit scripts in ``jobs/``.

Each job has ``add_<job>_args(parser)`` (its own arguments) and ``run_<job>(spark, args) -> exit
code``. Settings come from, lowest first: ``conf/apwa-defaults.conf`` (or ``--conf-file``),
``APWA_*`` env vars, the session's ``spark.apwa.*`` conf (``spark-submit --conf``), and the job's
own ``--conf spark.apwa.KEY=VALUE`` flags.

    spark-submit --properties-file conf/apwa-defaults.conf jobs/redact.py --input docs.jsonl --output runs/redacted
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from apwa_spark.config import ConfigError, Settings

INPUT_HELP = "Delta table, .parquet, .csv, .jsonl, or a folder of .txt/.md files"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--conf KEY=VALUE`` (repeatable), ``--conf-file``, ``-v``."""
    parser.add_argument("--conf", action="append", default=[], metavar="spark.apwa.KEY=VALUE",
                        help="a setting (repeatable); overrides conf file, env and Spark conf")
    parser.add_argument("--conf-file", help="spark-defaults style file of spark.apwa.* settings (default conf/apwa-defaults.conf)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def parse_conf(pairs: Sequence[str]) -> dict[str, str]:
    """``["spark.apwa.a.b=1"]`` ──► ``{"spark.apwa.a.b": "1"}``.

    Raises:
        ConfigError: an entry without ``=``.
    """
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--conf expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def job_settings(spark: SparkSession, args) -> Settings:
    """The job's settings: conf file, env, the session's conf, then ``--conf`` flags."""
    return Settings.load(spark, overrides=parse_conf(args.conf), conf_file=args.conf_file)


# ---- redact ----------------------------------------------------------------------------------------------

def add_redact_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help=INPUT_HELP)
    parser.add_argument("--output", required=True, help="directory for the result Delta table (<output>/result)")
    parser.add_argument("--column", default="text", help="the text column (default: text)")
    parser.add_argument("--entities", help="comma-separated entity types (default: person,email,phone,address,id_number)")
    parser.add_argument("--no-model", action="store_true", help="rule detectors only; no LLM call")


def run_redact(spark: SparkSession, args) -> int:
    """Redact PII in ``--column``: ``redacted`` (``[ENTITY]`` markers) and ``redacted_spans`` columns."""
    from apwa_spark.plan.ir import Plan, RedactStep

    options = {"entities": args.entities.split(",")} if args.entities else {}
    step = RedactStep(column=args.column, use_model=not args.no_model, **options)
    return _run_plan(spark, args, Plan(steps=[step]))


# ---- extract ---------------------------------------------------------------------------------------------

def add_extract_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help=INPUT_HELP)
    parser.add_argument("--output", required=True, help="directory for the result Delta table (<output>/result)")
    parser.add_argument("--schema", required=True,
                        help="Spark DDL ('title STRING, year INT'), a JSON schema, or @FILE holding either")
    parser.add_argument("--template", default="{text}", help="subtask template naming columns as {column} (default: {text})")
    parser.add_argument("--column", default="extracted", help="the struct column to add (default: extracted)")


def run_extract(spark: SparkSession, args) -> int:
    """Extract a typed struct column from each row."""
    from apwa_spark.plan.ir import ExtractStep, Plan
    from apwa_spark.plan.schema import schema_from_string

    text = Path(args.schema[1:]).read_text() if args.schema.startswith("@") else args.schema
    step = ExtractStep(template=args.template, output_schema=schema_from_string(text), output=args.column)
    return _run_plan(spark, args, Plan(steps=[step]))


# ---- query (planner) -------------------------------------------------------------------------------------

def add_query_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", nargs="?", default="", help="the query in plain language (omit with --plan)")
    parser.add_argument("--input", required=True, help=INPUT_HELP)
    parser.add_argument("--output", required=True, help="directory for the result and intermediate Delta tables")
    parser.add_argument("--plan", help="a saved or hand-written plan file (YAML or JSON) instead of planning")


def run_query(spark: SparkSession, args) -> int:
    """Plan the query (or load ``--plan``), print the plan, run it into ``<output>/result``."""
    from apwa_spark.inputs import read_input

    settings = job_settings(spark, args)
    plan = load_plan(args, read_input(spark, args.input), settings)
    print(plan.to_yaml())
    return _run_plan(spark, args, plan, settings)


def load_plan(args, df: DataFrame, settings: Settings):
    """``--plan FILE`` parsed, or the planner's plan for ``args.query``.

    Raises:
        ValueError: neither was given.
        PlanError: the file is invalid, or the planner could not map the query.
    """
    from apwa_spark.api import plan as plan_query
    from apwa_spark.plan.ir import Plan

    if getattr(args, "plan", None):
        return Plan.parse(Path(args.plan).read_text())
    if not args.query:
        raise ValueError("give a query or --plan FILE")
    return plan_query(df, args.query, settings)


def _run_plan(spark: SparkSession, args, plan, settings: Settings | None = None) -> int:
    from apwa_spark.inputs import read_input
    from apwa_spark.plan.run import run_plan

    result = run_plan(read_input(spark, args.input), plan, args.output, settings or job_settings(spark, args))
    metas = [c for c in result.columns if c.endswith("_meta")]
    if metas:
        result.groupBy(*[F.col(f"{m}.status").alias(m.removesuffix("_meta")) for m in metas]).count().show()
    result.show(5, truncate=60)
    return 0


# ---- sql -------------------------------------------------------------------------------------------------

def add_sql_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("statement", nargs="?", help="a SQL statement (or use --file)")
    parser.add_argument("--file", "-f", help="a .sql file; statements separated by ';', the last one's result is shown or written")
    parser.add_argument("--table", action="append", default=[], metavar="NAME=PATH",
                        help=f"register an input as a temporary view (repeatable); PATH: {INPUT_HELP}")
    parser.add_argument("--output", help="write the last statement's result to this Delta table instead of printing it")
    parser.add_argument("--limit", type=int, default=20, help="rows to print (default 20)")


def run_sql(spark: SparkSession, args) -> int:
    """Run SQL with the ``apwa_*`` functions registered and ``--table`` inputs as views."""
    from apwa_spark.delta import read_delta, write_delta
    from apwa_spark.inputs import read_input
    from apwa_spark.notebook import sql_statements
    from apwa_spark.sql import register

    if bool(args.statement) == bool(args.file):
        raise ValueError("give a SQL statement or --file FILE (one of them)")
    statements = sql_statements(Path(args.file).read_text() if args.file else args.statement)
    if not statements:
        raise ValueError("no SQL statement to run")
    for spec in args.table:
        name, sep, path = spec.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"--table expects NAME=PATH with NAME a SQL identifier, got {spec!r}")
        read_input(spark, path).createOrReplaceTempView(name)
    register(spark, job_settings(spark, args))
    for statement in statements[:-1]:
        spark.sql(statement).collect()
    result = spark.sql(statements[-1])
    if args.output:
        write_delta(result, args.output)
        print(json.dumps({"output": str(Path(args.output).resolve()), "rows": read_delta(spark, args.output).count()}))
    else:
        result.show(args.limit, truncate=80)
    return 0


# ---- spark-submit entry points ---------------------------------------------------------------------------

def submit_main(name: str, description: str, add_args, run, argv: Sequence[str] | None = None) -> int:
    """``jobs/<name>.py``: parse the job's arguments (``--help``), take spark-submit's session, run."""
    from apwa_spark.session import get_session

    parser = argparse.ArgumentParser(prog=f"spark-submit jobs/{name}.py", description=description)
    add_args(parser)
    add_common_args(parser)
    args = parser.parse_args(argv)
    return run(get_session(app_name=f"apwa-spark {name}"), args)
