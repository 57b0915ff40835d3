"""``apwa-spark`` command line: ``serve``, ``summarize``, ``retry-failed``, ``plan``, ``run``, ``redact``,
``extract``, ``sql``, ``notebook``, ``explain``, ``plays``.

Every command accepts ``--conf spark.apwa.KEY=VALUE`` (repeatable) and ``--conf-file PATH``; see
``conf/apwa-defaults.conf`` for the keys.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from apwa_spark.config import Settings
from apwa_spark import jobs
from apwa_spark.jobs import (EXIT_CODES, add_common_args, add_extract_args, add_query_args, add_redact_args,
                             add_sql_args, guarded, load_plan, parse_conf, preflight_args)


#: Job commands whose bodies live in :mod:`apwa_spark.jobs`: name, help, argument adder.
JOB_COMMANDS = [
    ("redact", "redact PII in a text column into a Delta table", add_redact_args),
    ("extract", "extract a typed struct column (Spark DDL or JSON schema) into a Delta table", add_extract_args),
    ("sql", "run SQL with the apwa_* functions registered and inputs as views", add_sql_args),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apwa-spark",
        description="Run LLM executor agents over Spark DataFrames (APWA on Spark).",
        epilog=EXIT_CODES,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the embedded Gemma 3 270M llama.cpp server in the foreground")
    add_common_args(serve)

    summarize = sub.add_parser("summarize", help="summarize plays scene ──► act ──► play (──► corpus) into Delta tables")
    add_summarize_args(summarize)
    add_common_args(summarize)
    summarize.add_argument("--master", help="Spark master (default local[2])")

    retry = sub.add_parser("retry-failed", help="re-drive the failed rows of a run and merge the results back")
    retry.add_argument("run_id", metavar="RUN_ID", help="the run id the job printed (see <output>/_runs/)")
    add_common_args(retry)
    retry.add_argument("--master", help="Spark master (default local[2])")

    plan = sub.add_parser("plan", help="plan a query over an input and print the plan (YAML)")
    plan.add_argument("query")
    plan.add_argument("--input", required=True, help="Delta table, .parquet, .csv, .jsonl, or a folder of .txt/.md files")
    add_common_args(plan)

    run = sub.add_parser("run", help="plan a query (or load --plan) and execute it into a Delta table")
    add_query_args(run)
    add_common_args(run)

    for name, help_text, add_args in JOB_COMMANDS:
        job = sub.add_parser(name, help=help_text)
        add_args(job)
        add_common_args(job)

    notebook = sub.add_parser("notebook", help="run a Databricks source notebook locally in a fresh kernel")
    notebook.add_argument("path", help="a notebooks/*.py file in Databricks source format")
    notebook.add_argument("--save", help="write the executed notebook (.ipynb, outputs included) here")
    notebook.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell (default 900)")

    explain = sub.add_parser("explain", help="print the plan, Spark's physical plan and an LLM call/token estimate; runs nothing")
    explain.add_argument("query", nargs="?", default="")
    explain.add_argument("--input", help="the input (not needed by a plan that reads its own, such as the summarize job's)")
    explain.add_argument("--plan", help="a plan file (YAML or JSON)")
    explain.add_argument("--output", help="the output folder or URI a run would write: answers already in its response "
                                          "cache are counted as free calls")
    add_common_args(explain)

    sub.add_parser("plays", help="list the plays the summarize job can read")
    return parser


def add_summarize_args(parser: argparse.ArgumentParser) -> None:
    """The summarize job's own arguments (shared with ``jobs/summarize.py``)."""
    parser.add_argument("--play", required=True, action="append",
                        help="play name (see `apwa-spark plays`), a path to a play .md file, or 'all'; repeat it to "
                             "summarize several plays in one job, on to one corpus summary")
    jobs.add_output_args(parser, " (required, but with --show-plan or --dry-run)", required=False)
    parser.add_argument("--max-scenes", type=_positive_int, metavar="N", help="summarize only the first N scenes of each play")
    parser.add_argument("--show-plan", action="store_true",
                        help="print the job's plan (YAML; `apwa-spark run --plan FILE --output DIR` runs it) and stop")
    parser.add_argument("--dry-run", action="store_true", help=jobs.DRY_RUN_HELP)


def _positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


#: Commands that call the LLM: their endpoint passes the preflight before Spark starts.
LLM_COMMANDS = {"summarize", "retry-failed", "plan", "run", "redact", "extract", "sql", "explain", "notebook"}


def main(argv: Sequence[str] | None = None) -> int:
    """The ``apwa-spark`` console script; returns the exit code (see :data:`~apwa_spark.jobs.EXIT_CODES`)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def command() -> int:
        if args.command in LLM_COMMANDS:
            preflight_args(args)
        return COMMANDS[args.command](args)

    return guarded(f"apwa-spark {args.command}", command)


def _serve(args) -> int:
    from apwa_spark.endpoint import EmbeddedEndpoint

    settings = Settings.load(overrides=parse_conf(args.conf), conf_file=args.conf_file)
    endpoint = EmbeddedEndpoint(settings).start()
    print(f"embedded endpoint serving at {endpoint.base_url} (model {endpoint.settings.llm.model}); Ctrl-C stops it", flush=True)
    try:
        return endpoint.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        endpoint.stop()


def _summarize(args) -> int:
    from apwa_spark.plays import resolve_plays

    resolve_plays(args.play)  # an unknown play fails before Spark starts
    if args.show_plan:
        return show_summarize_plan(args)
    if not args.output and not args.dry_run:
        raise ValueError("the summarize job needs --output (a folder or URI for its Delta tables)")
    from apwa_spark.session import get_session

    spark = get_session(master=args.master)
    return run_summarize(spark, args)


def show_summarize_plan(args, spark=None) -> int:
    """``--show-plan``: print the summarize job's plan (YAML) for ``args``; nothing runs."""
    from apwa_spark.summarize import summarize_plan

    settings = Settings.load(spark, overrides=parse_conf(args.conf), conf_file=args.conf_file)
    print(summarize_plan(args.play, settings, args.max_scenes).to_yaml())
    return 0


def run_summarize(spark, args) -> int:
    """Run the summarize job for parsed ``args`` and print its report (used by the CLI and spark-submit)."""
    from apwa_spark.summarize import summarize_plays

    if args.show_plan:
        return show_summarize_plan(args, spark)
    spark.sparkContext.setLogLevel("WARN")
    settings = Settings.load(spark, overrides=parse_conf(args.conf), conf_file=args.conf_file)
    if getattr(args, "dry_run", False):
        from apwa_spark.plan.explain import explain
        from apwa_spark.summarize import summarize_plan

        print(explain(spark.range(0), summarize_plan(args.play, settings, args.max_scenes), settings, args.output))
        return 0
    if not args.output:
        raise ValueError("the summarize job needs --output (a folder or URI for its Delta tables)")
    result = summarize_plays(args.play, args.output, spark, settings, max_scenes=args.max_scenes,
                             output_schema=args.output_schema)
    report(result)
    return root_exit_code(result)


def root_exit_code(result) -> int:
    """1 when the root is an ``error``; 0 otherwise, a ``partial`` root included (its report says how
    many inputs failed, and they are in the dead letter) and an ``unevaluated`` one (a spent budget:
    the report says how much was left undone)."""
    return 1 if result.root.get("status", "error") == "error" else 0


def report(result) -> None:
    """Print a finished run: per-table figures, rows by status and error class, the final summary."""
    print(f"\nrun {result.run_id} ({result.play}): {len(result.levels)} tables in {result.output}, {result.seconds:.1f} s\n")
    print(result.table())
    failed = sum(result.errors_by_class.values())
    unevaluated = sum(level.unevaluated for level in result.levels[1:])
    ok = sum(level.rows - level.errors - level.unevaluated for level in result.levels[1:])
    print(f"\nrows ok: {ok}; rows failed: {failed}" + "".join(f", {k}: {v}" for k, v in sorted(result.errors_by_class.items()))
          + (f"; rows unevaluated (budget spent): {unevaluated}" if unevaluated else ""))
    if failed:
        print(f"failed rows are in {result.output}/_dead_letter; re-drive them with: apwa-spark retry-failed {result.run_id}")
    print(f"\nSummary ({result.root.get('status')}):\n{result.summary or result.root.get('error')}")


def _retry_failed(args) -> int:
    """Re-run a run's job from its manifest into its output: every ok answer comes from the run's
    response cache, so only the rows that failed call the LLM again, and the tables are rewritten
    whole. Summarize, plan (``run``, ``redact``, ``extract``, the API) and ``sql --output`` runs."""
    from apwa_spark.runs import load_manifest
    from apwa_spark.session import get_session

    base = Settings.load(overrides=parse_conf(args.conf), conf_file=args.conf_file)
    manifest = load_manifest(args.run_id, base)
    keys = dict(manifest["settings"])
    if manifest.get("embedded"):
        keys.pop("spark.apwa.llm.baseUrl", None)
    settings = Settings.load(overrides={**keys, **parse_conf(args.conf)}, conf_file=args.conf_file)
    if manifest.get("job") not in ("summarize", "sql"):
        jobs.plan_input(manifest)  # a run over a DataFrame without a source fails here, before Spark starts
    spark = get_session(master=args.master)
    spark.sparkContext.setLogLevel("WARN")
    if manifest.get("job") == "summarize":
        return _retry_summarize(spark, manifest, settings)
    if manifest["job"] == "sql":
        print(f"retry of {args.run_id}: {sum(manifest.get('errors_by_class', {}).values())} failed rows before")
        return jobs.sql_job(spark, manifest["statements"], manifest["tables"], manifest["output"], settings)
    return jobs.retry_plan(spark, manifest, settings)


def _retry_summarize(spark, manifest: dict, settings: Settings) -> int:
    from apwa_spark.summarize import summarize_plays

    before = sum(manifest.get("errors_by_class", {}).values())
    plays = manifest.get("plays") or [manifest["play"]]  # runs written before multi-play jobs name one "play"
    result = summarize_plays(plays, manifest["output"], spark, settings, max_scenes=manifest.get("max_scenes"),
                             output_schema=manifest.get("output_schema"))
    report(result)
    calls = sum(level.llm_calls for level in result.levels)
    print(f"\nretry of {manifest['run_id']}: {before} failed rows before, {sum(result.errors_by_class.values())} after, {calls} LLM calls")
    return root_exit_code(result)


def _input_session(args):
    from apwa_spark.session import get_session

    spark = get_session()
    spark.sparkContext.setLogLevel("WARN")
    settings = Settings.load(spark, overrides=parse_conf(args.conf), conf_file=args.conf_file)
    return spark, jobs.input_frame(spark, args), settings


def _plan(args) -> int:
    spark, df, settings = _input_session(args)
    print(load_plan(args, df, settings).to_yaml())
    return 0


def _job(run_job):
    """A CLI command running a job body from :mod:`apwa_spark.jobs` on the default session."""
    def command(args) -> int:
        from apwa_spark.session import get_session

        spark = get_session()
        spark.sparkContext.setLogLevel("WARN")
        return run_job(spark, args)

    return command


def _notebook(args) -> int:
    from apwa_spark.notebook import run_notebook

    run_notebook(args.path, timeout=args.timeout, save_to=args.save, echo=print)
    print(f"{args.path}: every cell ran")
    return 0


def _explain(args) -> int:
    from apwa_spark.plan.explain import explain

    spark, df, settings = _input_session(args)
    print(explain(df if df is not None else spark.range(0), load_plan(args, df, settings), settings, args.output))
    return 0


def _plays(args) -> int:
    from apwa_spark.plays import available_plays

    for name, path in available_plays().items():
        print(f"{name}\t{path.parent.name}")
    return 0


COMMANDS = {"serve": _serve, "summarize": _summarize, "retry-failed": _retry_failed, "plan": _plan,
            "run": _job(jobs.run_query), "redact": _job(jobs.run_redact), "extract": _job(jobs.run_extract),
            "sql": _job(jobs.run_sql), "notebook": _notebook, "explain": _explain, "plays": _plays}

if __name__ == "__main__":
    sys.exit(main())
