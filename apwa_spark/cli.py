"""``apwa-spark`` command line: ``serve``, ``summarize``, ``retry-failed``, ``plan``, ``run``, ``explain``, ``plays``.

Every command accepts ``--conf spark.apwa.KEY=VALUE`` (repeatable) and ``--conf-file PATH``; see
``conf/apwa-defaults.conf`` for the keys.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from apwa_spark.config import ConfigError, Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apwa-spark",
        description="Run LLM executor agents over Spark DataFrames (APWA on Spark).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the embedded Gemma 3 270M llama.cpp server in the foreground")
    _common(serve)

    summarize = sub.add_parser("summarize", help="summarize a play scene ──► act ──► play into Delta tables")
    add_summarize_args(summarize)
    _common(summarize)
    summarize.add_argument("--master", help="Spark master (default local[2])")

    retry = sub.add_parser("retry-failed", help="re-drive the failed rows of a run and merge the results back")
    retry.add_argument("run_id", metavar="RUN_ID", help="the run id the job printed (see <output>/_runs/)")
    _common(retry)
    retry.add_argument("--master", help="Spark master (default local[2])")

    plan = sub.add_parser("plan", help="plan a query over an input and print the plan (YAML)")
    plan.add_argument("query")
    plan.add_argument("--input", required=True, help="Delta table, .parquet, .csv, .jsonl, or a folder of .txt/.md files")
    _common(plan)

    run = sub.add_parser("run", help="plan a query (or load --plan) and execute it into a Delta table")
    run.add_argument("query", nargs="?", default="", help="the query (omit with --plan)")
    run.add_argument("--input", required=True)
    run.add_argument("--output", required=True, help="directory for the result and intermediate Delta tables")
    run.add_argument("--plan", help="a saved or hand-written plan file (YAML or JSON)")
    _common(run)

    explain = sub.add_parser("explain", help="print the plan, Spark's physical plan and an LLM call/token estimate; runs nothing")
    explain.add_argument("query", nargs="?", default="")
    explain.add_argument("--input", required=True)
    explain.add_argument("--plan", help="a plan file (YAML or JSON)")
    _common(explain)

    sub.add_parser("plays", help="list the plays the summarize job can read")
    return parser


def add_summarize_args(parser: argparse.ArgumentParser) -> None:
    """The summarize job's own arguments (shared with ``jobs/summarize.py``)."""
    parser.add_argument("--play", required=True, help="play name (see `apwa-spark plays`) or a path to a play .md file")
    parser.add_argument("--output", required=True, help="directory for the run's Delta tables")
    parser.add_argument("--max-scenes", type=int, help="summarize only the first N scenes")


def _common(parser: argparse.ArgumentParser) -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, ValueError, RuntimeError, FileNotFoundError, LookupError) as exc:
        print(f"apwa-spark {args.command}: error: {exc}", file=sys.stderr)
        return 2


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
    from apwa_spark.plays import resolve_play

    resolve_play(args.play)  # an unknown play fails before Spark starts
    from apwa_spark.session import get_session

    spark = get_session(master=args.master)
    return run_summarize(spark, args)


def run_summarize(spark, args) -> int:
    """Run the summarize job for parsed ``args`` and print its report (used by the CLI and spark-submit)."""
    from apwa_spark.summarize import summarize_play

    spark.sparkContext.setLogLevel("WARN")
    settings = Settings.load(spark, overrides=parse_conf(args.conf), conf_file=args.conf_file)
    result = summarize_play(args.play, args.output, spark, settings, max_scenes=args.max_scenes)
    report(result)
    return 0 if result.root.get("status") == "ok" else 1


def report(result) -> None:
    """Print a finished run: per-table figures, rows by status and error class, the final summary."""
    print(f"\nrun {result.run_id} ({result.play}): {len(result.levels)} tables in {result.output}, {result.seconds:.1f} s\n")
    print(result.table())
    failed = sum(result.errors_by_class.values())
    ok = sum(level.rows - level.errors for level in result.levels[1:])
    print(f"\nrows ok: {ok}; rows failed: {failed}" + "".join(f", {k}: {v}" for k, v in sorted(result.errors_by_class.items())))
    if failed:
        print(f"failed rows are in {result.output}/_dead_letter; re-drive them with: apwa-spark retry-failed {result.run_id}")
    print(f"\nSummary ({result.root.get('status')}):\n{result.summary or result.root.get('error')}")


def _retry_failed(args) -> int:
    """Re-run a run's job into its output: every ok answer comes from the run's response cache, so
    only the rows that failed call the LLM again, and the level tables are rewritten whole."""
    from apwa_spark.runs import load_manifest
    from apwa_spark.session import get_session
    from apwa_spark.summarize import summarize_play

    base = Settings.load(overrides=parse_conf(args.conf), conf_file=args.conf_file)
    manifest = load_manifest(args.run_id, base)
    keys = dict(manifest["settings"])
    if manifest.get("embedded"):
        keys.pop("spark.apwa.llm.baseUrl", None)
    settings = Settings.load(overrides={**keys, **parse_conf(args.conf)}, conf_file=args.conf_file)
    spark = get_session(master=args.master)
    spark.sparkContext.setLogLevel("WARN")
    before = sum(manifest.get("errors_by_class", {}).values())
    result = summarize_play(manifest["play"], manifest["output"], spark, settings, max_scenes=manifest.get("max_scenes"))
    report(result)
    calls = sum(level.llm_calls for level in result.levels)
    print(f"\nretry of {args.run_id}: {before} failed rows before, {sum(result.errors_by_class.values())} after, {calls} LLM calls")
    return 0 if result.root.get("status") == "ok" else 1


def _load_plan(args, df, settings):
    from apwa_spark.api import plan as plan_query
    from apwa_spark.plan.ir import Plan

    if getattr(args, "plan", None):
        from pathlib import Path

        return Plan.parse(Path(args.plan).read_text())
    if not args.query:
        raise ValueError("give a query or --plan FILE")
    return plan_query(df, args.query, settings)


def _input_session(args):
    from apwa_spark.inputs import read_input
    from apwa_spark.session import get_session

    spark = get_session()
    spark.sparkContext.setLogLevel("WARN")
    settings = Settings.load(spark, overrides=parse_conf(args.conf), conf_file=args.conf_file)
    return spark, read_input(spark, args.input), settings


def _plan(args) -> int:
    spark, df, settings = _input_session(args)
    print(_load_plan(args, df, settings).to_yaml())
    return 0


def _run(args) -> int:
    from apwa_spark.plan.run import run_plan

    spark, df, settings = _input_session(args)
    plan = _load_plan(args, df, settings)
    print(plan.to_yaml())
    result = run_plan(df, plan, args.output, settings)
    result.show(10, truncate=60)
    return 0


def _explain(args) -> int:
    from apwa_spark.plan.explain import explain

    spark, df, settings = _input_session(args)
    print(explain(df, _load_plan(args, df, settings), settings))
    return 0


def _plays(args) -> int:
    from apwa_spark.plays import available_plays

    for name, path in available_plays().items():
        print(f"{name}\t{path.parent.name}")
    return 0


COMMANDS = {"serve": _serve, "summarize": _summarize, "retry-failed": _retry_failed, "plan": _plan, "run": _run,
            "explain": _explain, "plays": _plays}

if __name__ == "__main__":
    sys.exit(main())
