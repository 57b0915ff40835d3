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
import sys
from pathlib import Path
from typing import Callable, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from apwa_spark.config import ConfigError, Settings
from apwa_spark.tools import DEFAULT_ENTITIES

INPUT_HELP = "catalog table, Delta table, .parquet, .csv, .jsonl, or a folder of .txt/.md files (path or URI)"
OUTPUT_HELP = ("folder (path or URI, e.g. s3a://bucket/runs/x) for the run's Delta tables and response cache; a plan "
               "ending in a reduce (summarize) run again into it recomputes only what changed "
               "(spark.apwa.run.incremental=false: everything)")
DRY_RUN_HELP = ("print the plan, Spark's physical plan and the estimate (LLM calls, tokens, cost at spark.apwa.price.*), "
                "as `apwa-spark explain` does, and stop: no LLM call, nothing written")
SCHEMA_HELP = "catalog schema (e.g. main.apwa_runs): each table becomes a managed Delta table there"


def add_output_args(parser: argparse.ArgumentParser, what: str = "", required: bool = True) -> None:
    """``--output`` (folder or URI) and ``--output-schema`` (catalog schema for the tables)."""
    parser.add_argument("--output", required=required, help=OUTPUT_HELP + what)
    parser.add_argument("--output-schema", metavar="SCHEMA", help=SCHEMA_HELP)


def add_plan_input_args(parser: argparse.ArgumentParser, what: str, input_required: bool = True) -> None:
    """``--input``, the output arguments and ``--key`` of a job that runs a plan (``--input`` optional
    where the plan may start with a source step such as ``read_plays``)."""
    parser.add_argument("--input", required=input_required,
                        help=INPUT_HELP + ("" if input_required else "; not needed by a plan whose first step reads "
                                                                      "its own input (read_plays)"))
    add_output_args(parser, what)
    parser.add_argument("--key", metavar="COLUMN",
                        help="the input column identifying a row in the dead letter (default: id or path when the input "
                             "has one, else an added row_key column: a hash of the row)")
    parser.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)


#: Exit code of a command whose LLM endpoint failed its preflight (unreachable, key rejected, model
#: not served) or whose embedded endpoint could not start.
ENDPOINT_EXIT = 3
#: Exit code of bad arguments, settings or input.
USAGE_EXIT = 2
EXIT_CODES = (f"exit codes: 0 done (a summary root may be partial: some inputs failed, and the report counts them); "
              f"1 the summary job ended with an error at its root; {USAGE_EXIT} bad arguments, "
              f"settings or input; {ENDPOINT_EXIT} the LLM endpoint failed its preflight (unreachable, API key "
              "rejected, model not served) or the embedded endpoint could not start")


def guarded(prog: str, command: Callable[[], int]) -> int:
    """Run ``command``; an expected failure becomes one line ``<prog>: error: <message>`` on stderr
    and an exit code (:data:`ENDPOINT_EXIT`, :data:`USAGE_EXIT`), never a traceback."""
    from apwa_spark.endpoint import EmbeddedEndpointError
    from apwa_spark.llm.endpoints import EndpointUnavailableError

    try:
        return command()
    except (EndpointUnavailableError, EmbeddedEndpointError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return ENDPOINT_EXIT
    except (ConfigError, ValueError, RuntimeError, FileNotFoundError, LookupError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return USAGE_EXIT


def preflight_args(args, spark: SparkSession | None = None) -> None:
    """The preflight of the endpoint a command's settings name (none: the embedded one starts
    later), before any Spark work.

    Raises:
        EndpointUnavailableError: it failed (see :func:`apwa_spark.llm.endpoints.preflight`).
        ConfigError: invalid settings.
    """
    from apwa_spark.llm.endpoints import preflight

    settings = Settings.load(spark, overrides=parse_conf(getattr(args, "conf", [])),
                             conf_file=getattr(args, "conf_file", None))
    if settings.llm.base_url and not getattr(args, "no_model", False):
        preflight(settings)


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
    add_plan_input_args(parser, " (the result: <output>/result)")
    parser.add_argument("--column", default="text", help="the text column (default: text)")
    parser.add_argument("--entities", help=f"comma-separated entity types (default: all, {','.join(DEFAULT_ENTITIES)})")
    parser.add_argument("--no-model", action="store_true", help="rule detectors only; no LLM call")
    parser.add_argument("--keep-source", action="store_true",
                        help="keep the unredacted source column in the result (it holds the PII; warns)")


def run_redact(spark: SparkSession, args) -> int:
    """Redact PII in ``--column``: ``redacted`` (``[ENTITY]`` markers) and ``redacted_spans`` (offsets
    and entity types) columns; the source column is dropped unless ``--keep-source``."""
    from apwa_spark.plan.ir import Plan
    from apwa_spark.steps.redact import RedactStep

    options = {"entities": [e.strip() for e in args.entities.split(",") if e.strip()]} if args.entities else {}
    step = RedactStep(column=args.column, use_model=not args.no_model, keep_source=args.keep_source, **options)
    return _run_plan(spark, args, Plan(steps=[step]), "redact", hide=[args.column])


# ---- extract ---------------------------------------------------------------------------------------------

def add_extract_args(parser: argparse.ArgumentParser) -> None:
    add_plan_input_args(parser, " (the result: <output>/result)")
    parser.add_argument("--schema", required=True,
                        help="Spark DDL ('title STRING, year INT'), a JSON schema, or @FILE holding either")
    parser.add_argument("--template", default="{text}", help="subtask template naming columns as {column} (default: {text})")
    parser.add_argument("--column", default="extracted", help="the struct column to add (default: extracted)")


def run_extract(spark: SparkSession, args) -> int:
    """Extract a typed struct column from each row."""
    from apwa_spark.plan.ir import Plan
    from apwa_spark.steps.extract import ExtractStep
    from apwa_spark.plan.schema import schema_from_string

    text = Path(args.schema[1:]).read_text() if args.schema.startswith("@") else args.schema
    step = ExtractStep(template=args.template, output_schema=schema_from_string(text), output=args.column)
    return _run_plan(spark, args, Plan(steps=[step]), "extract")


# ---- query (planner) -------------------------------------------------------------------------------------

def add_query_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", nargs="?", default="", help="the query in plain language (omit with --plan)")
    add_plan_input_args(parser, " (result and intermediate tables)", input_required=False)
    parser.add_argument("--plan", help="a saved or hand-written plan file (YAML or JSON) instead of planning")
    parser.add_argument("--stream", action="store_true",
                        help="run as a Structured Streaming query: --input (a Delta table or a folder of files) is "
                             "read as a stream, each micro-batch enriched and appended to <output>/result exactly once")
    parser.add_argument("--trigger", default="availableNow",
                        help="with --stream: availableNow (what is there, then stop; the default) or "
                             "'processingTime=10 seconds' (a micro-batch per interval, until --timeout)")
    parser.add_argument("--checkpoint", help="with --stream: the checkpoint location (default <output>/_checkpoint)")
    parser.add_argument("--max-files-per-trigger", type=int, metavar="N", help="with --stream: files per micro-batch")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="with --stream: stop a processingTime stream after this long")


def run_query(spark: SparkSession, args) -> int:
    """Plan the query (or load ``--plan``), print the plan, run it into ``<output>/result``."""
    settings = job_settings(spark, args)
    if getattr(args, "stream", False):
        return run_stream(spark, args, settings)
    plan = load_plan(args, input_frame(spark, args), settings)
    print(plan.to_yaml())
    return _run_plan(spark, args, plan, "run", settings)


def run_stream(spark: SparkSession, args, settings: Settings) -> int:
    """``run --stream``: the plan (``--plan``, or planned over the files already in ``--input``)
    as a Structured Streaming query (:func:`apwa_spark.streaming.stream`)."""
    from apwa_spark.streaming import read_stream, stream

    if not args.input:
        raise ValueError("--stream needs --input: a Delta table or a folder of files to read as a stream")
    plan = load_plan(args, None if args.plan else read_stream(spark, args.input), settings)
    print(plan.to_yaml())
    done = stream(spark, plan, args.input, args.output, settings, trigger=args.trigger, checkpoint=args.checkpoint,
                  key=args.key, max_files_per_trigger=args.max_files_per_trigger, timeout=args.timeout)
    print(f"[apwa] stream {done.run_id}: {len(done.batches)} micro-batches, {done.rows} rows ──► {done.sink}")
    return 0


def input_frame(spark: SparkSession, args) -> DataFrame | None:
    """``--input`` read (:func:`apwa_spark.inputs.read_input`); None when it was not given."""
    from apwa_spark.inputs import read_input

    return read_input(spark, args.input) if getattr(args, "input", None) else None


def load_plan(args, df: DataFrame | None, settings: Settings):
    """``--plan FILE`` parsed, or the planner's plan for ``args.query`` over ``df``.

    Raises:
        ValueError: neither was given, or a query without ``--input``.
        PlanError: the file is invalid, or the planner could not map the query.
    """
    from apwa_spark.api import plan as plan_query
    from apwa_spark.plan.ir import Plan

    if getattr(args, "plan", None):
        return Plan.parse(Path(args.plan).read_text())
    if not args.query:
        raise ValueError("give a query or --plan FILE")
    if df is None:
        raise ValueError("the planner plans a query over an input: give --input")
    return plan_query(df, args.query, settings)


def _run_plan(spark: SparkSession, args, plan, kind: str, settings: Settings | None = None, hide: Sequence[str] = ()) -> int:
    """Run ``plan`` into ``args.output`` and print rows by status and the first rows, without the
    ``hide`` columns (a redact job's kept source: its PII stays out of the console and logs)."""
    from apwa_spark.inputs import source_of
    from apwa_spark.plan.run import execute_plan

    df = input_frame(spark, args)
    if getattr(args, "dry_run", False):
        from apwa_spark.plan.explain import explain

        print(explain(df if df is not None else spark.range(0), plan, settings or job_settings(spark, args),
                      getattr(args, "output", None)))
        return 0
    result = execute_plan(spark, df, plan, args.output, settings or job_settings(spark, args), output_schema=args.output_schema,
                          source=source_of(spark, args.input) if args.input else None, key=args.key, kind=kind).result
    _show_status(result)
    result.drop(*[c for c in hide if c not in plan.steps[-1].writes()]).show(5, truncate=60)
    return 0


def _show_status(result: DataFrame) -> None:
    """Print a plan result's rows by the status of each step."""
    metas = [c for c in result.columns if c.endswith("_meta")]
    if metas:
        result.groupBy(*[F.col(f"{m}.status").alias(m.removesuffix("_meta")) for m in metas]).count().show()


def retry_plan(spark: SparkSession, manifest: dict, settings: Settings) -> int:
    """``retry-failed`` of a plan run (``run``, ``redact``, ``extract`` or the API): run the
    manifest's plan over its input into its output again. Ok answers come from the response cache,
    so only the failed rows call the LLM (a redact step's name calls are never cached: each of its
    rows asks the model again). Prints rows by status, never row values.

    Raises:
        ValueError: the run read a DataFrame with no source (:func:`plan_input`).
    """
    from apwa_spark.inputs import read_input
    from apwa_spark.plan.ir import Plan
    from apwa_spark.plan.run import execute_plan
    from apwa_spark.runs import status_counts

    source = plan_input(manifest)
    plan = Plan.model_validate(manifest["plan"])
    result = execute_plan(spark, read_input(spark, source) if source else None, plan, manifest["output"], settings,
                          output_schema=manifest.get("output_schema"), source=source, key=manifest.get("key"),
                          kind=manifest["job"]).result
    _show_status(result)
    steps = [name for name, _ in plan.named_steps()]
    after = sum(c["error"] for s, c in status_counts(result, steps).items() if s != "rows")
    metas = [result[f"{s}_meta"]["llm_calls"] for s in steps if f"{s}_meta" in result.columns]
    calls = result.agg(*[F.coalesce(F.sum(m), F.lit(0)) for m in metas]).first() if metas else []
    print(f"retry of {manifest['run_id']}: {sum(manifest.get('errors_by_class', {}).values())} failed rows before, "
          f"{after} after, {sum(calls)} LLM calls")
    return 0


def plan_input(manifest: dict) -> str | None:
    """The input a plan run's manifest records (path, URI or catalog table); None for a plan whose
    first step reads its own input (``read_plays``).

    Raises:
        ValueError: the run read a DataFrame with no source (the Python API); the message says what to do.
    """
    from apwa_spark.plan.ir import Plan
    from apwa_spark.plan.step import Cardinality

    if Plan.model_validate(manifest["plan"]).steps[0].cardinality is Cardinality.SOURCE:
        return None
    if not manifest.get("input"):
        raise ValueError(f"run {manifest['run_id']} ran over a DataFrame with no source (the Python API), so retry-failed "
                         f"cannot read its input again; run the plan over the same DataFrame into the same output, "
                         f"apwa_spark.run(df, plan, output={manifest['output']!r}): its ok answers come from the response "
                         "cache, so only the failed rows call the model")
    return manifest["input"]


# ---- sql -------------------------------------------------------------------------------------------------

def add_sql_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("statement", nargs="?", help="a SQL statement (or use --file)")
    parser.add_argument("--file", "-f", help="a .sql file; statements separated by ';', the last one's result is shown or written")
    parser.add_argument("--table", action="append", default=[], metavar="NAME=PATH",
                        help=f"register an input as a temporary view (repeatable); PATH: {INPUT_HELP}")
    parser.add_argument("--output", help="write the last statement's result to this Delta table (path or URI) instead of printing it")
    parser.add_argument("--limit", type=int, default=20, help="rows to print (default 20)")


def run_sql(spark: SparkSession, args) -> int:
    """Run SQL with the ``apwa_*`` functions registered and ``--table`` inputs as views
    (:func:`sql_job`)."""
    from apwa_spark.notebook import sql_statements

    if bool(args.statement) == bool(args.file):
        raise ValueError("give a SQL statement or --file FILE (one of them)")
    statements = sql_statements(Path(args.file).read_text() if args.file else args.statement)
    if not statements:
        raise ValueError("no SQL statement to run")
    tables = {}
    for spec in args.table:
        name, sep, path = spec.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"--table expects NAME=PATH with NAME a SQL identifier, got {spec!r}")
        tables[name] = path
    return sql_job(spark, statements, tables, args.output, job_settings(spark, args), args.limit)


def sql_job(spark: SparkSession, statements: Sequence[str], tables: dict[str, str], output: str | None,
            settings: Settings, limit: int = 20) -> int:
    """Register ``tables`` (view name ──► input) and the ``apwa_*`` functions, run ``statements``;
    the last one's result is printed, or with ``output`` written as the Delta table there.

    With ``output`` the run does every job's bookkeeping under it (:func:`apwa_spark.runs.finish_run`):
    the functions' response cache in ``<output>/_llm_cache`` (when caching is on and no
    ``cache.path`` is set), rows of ``*_or_error`` columns with an ``errorMessage`` in
    ``<output>/_dead_letter`` (:func:`apwa_spark.runs.sql_failures`), and a manifest with the
    statements, tables and row counts in ``<output>/_runs`` and the run registry.
    """
    import time

    from apwa_spark import runs, storage
    from apwa_spark.delta import TableStore, read_delta, write_delta
    from apwa_spark.inputs import read_input, source_of
    from apwa_spark.sql import register

    started = time.monotonic()
    for name, path in tables.items():
        read_input(spark, path).createOrReplaceTempView(name)
    store = TableStore.create(spark, output, settings.delta.engine) if output else None
    if store and settings.cache.enabled and not settings.cache.path:
        settings = settings.with_overrides(**{"spark.apwa.cache.path": store.path(runs.CACHE)})
    manifest = {"job": "sql", "statements": list(statements), "tables": {n: source_of(spark, p) for n, p in tables.items()},
                "embedded": not settings.llm.base_url, "settings": settings.as_keys()}
    with runs.job_budget(spark, settings) as budget:
        settings = register(spark, settings, budget_url=budget.url if budget else None)
        for statement in statements[:-1]:
            spark.sql(statement).collect()
        result = spark.sql(statements[-1])
        if store is None:
            result.show(limit, truncate=80)
        else:
            write_delta(result, store.root, engine=store.engine)
        _report_sql_budget(budget)
    if store is None:
        return 0
    written = read_delta(spark, store.root, engine=store.engine)
    options = storage.storage_options(spark, settings.cache.path) if settings.cache.path else {}
    job = runs.JobContext(settings, runs.new_run_id(), plan_id="sql", storage_options=options)
    rows = written.count()
    errors = runs.finish_run(store, job, {**manifest, "rows": rows}, runs.sql_failures(written, job.run_id),
                             time.monotonic() - started)
    print(json.dumps({"output": store.root, "rows": rows, "run_id": job.run_id, "errors_by_class": errors}))
    return 0


def _report_sql_budget(budget) -> None:
    """Print what a SQL job's budget spent and refused (each refused call: a NULL answer, with
    ``BudgetExhausted`` in the ``*_or_error`` columns)."""
    if budget is None or not budget.enabled:
        return
    undone = (f"{budget.refused} calls refused: their rows are NULL (errorMessage BudgetExhausted in *_or_error "
              "columns); re-run with a larger spark.apwa.budget.* to finish them (paid answers come from the response "
              "cache)") if budget.refused else "nothing refused"
    print(f"[apwa] sql: budget spent {budget.left_undone()}; {undone}", flush=True)


# ---- spark-submit entry points ---------------------------------------------------------------------------

def submit_main(name: str, description: str, add_args, run, argv: Sequence[str] | None = None) -> int:
    """``jobs/<name>.py``: parse the job's arguments (``--help``), take spark-submit's session, run."""
    from apwa_spark.session import get_session

    parser = argparse.ArgumentParser(prog=f"spark-submit jobs/{name}.py", description=description, epilog=EXIT_CODES)
    add_args(parser)
    add_common_args(parser)
    args = parser.parse_args(argv)

    def job() -> int:
        spark = get_session(app_name=f"apwa-spark {name}")
        preflight_args(args, spark)
        return run(spark, args)

    return guarded(parser.prog, job)
