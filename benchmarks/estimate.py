"""Estimate against actual (issue 17): the measured estimate of ``explain`` before a run, then the
run, for the Romeo and Juliet summarize job and three plans of two steps over real inputs.

For each case: the estimate's calls, prompt tokens and completion tokens per step (from
:func:`apwa_spark.plan.estimate.measured_estimate` on an empty output: nothing cached), the run's
actual figures per step (the ``<step>_meta`` sums of its result, a filter's from the run's totals:
:func:`actual_steps`; for the summarize job its tables),
their difference in percent, and whether calls and prompt tokens fall within ±25 %. Completion
tokens are estimated as ``max_tokens`` per call, an upper bound, unless ``--sample-calls N`` lets the
estimate spend N real calls per LLM step (``spark.apwa.estimate.sampleCalls``). Then the estimate once more on the
run's output: every answer is in the response cache, so it should show 0 calls. Writes
``results/estimate.{json,md}``.

    python benchmarks/estimate.py [--base-url URL] [--scenes N] [--sample-calls N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import endpoint_settings, machine, write_results
from planner import pii_table, read_play

sys.path.insert(0, str(Path(__file__).parent))
from planner_multistep import modules_table  # noqa: E402

from apwa_spark.endpoint import preflight  # noqa: E402
from apwa_spark.plan.estimate import measured_estimate, probe_run  # noqa: E402
from apwa_spark.plan.ir import Plan  # noqa: E402
from apwa_spark.plan.run import execute_plan  # noqa: E402
from apwa_spark.session import get_session  # noqa: E402
from apwa_spark.summarize import summarize_plan  # noqa: E402
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint  # noqa: E402

KEYS = ("llm_calls", "prompt_tokens", "completion_tokens")
PLANS = {
    "scenes: chunk ──► map": ("play", """steps:
  - {kind: chunk, column: text, max_chars: 1500}
  - {kind: map, template: 'Summarize this passage of a play in one line: {chunk}', output: line, max_tokens: 32}
"""),
    "messages: filter ──► extract": ("pii", """steps:
  - {kind: filter, template: 'Does this customer message ask for a call back? {text}'}
  - kind: extract
    template: 'Message: {text}'
    output: contact
    output_schema: {type: object, properties: {name: {type: string}, phone: {type: string}}, required: [name, phone]}
"""),
    "docstrings: map ──► classify": ("modules", """steps:
  - {kind: map, template: "Summarize this documentation in one sentence.\n\n{text}\n\nSummary:", output: purpose, max_tokens: 40}
  - {kind: classify, template: 'Module purpose: {purpose}', labels: [text, data, network, system, other], output: area}
"""),
}


def estimated(spark, df, plan: Plan, settings, output: str) -> dict[str, dict]:
    """Step ──► the measured estimate's row, on ``output``."""
    with probe_run(spark, settings, output) as run:
        return {r["step"]: r for r in measured_estimate(df, plan, run)}


def cache_tokens(output: str) -> dict[str, int]:
    """Prompt and completion tokens of the answers in ``output``'s response cache (0 without one)."""
    from deltalake import DeltaTable

    from apwa_spark.runs import CACHE

    if not DeltaTable.is_deltatable(f"{output}/{CACHE}"):
        return {"prompt_tokens": 0, "completion_tokens": 0}
    cache = DeltaTable(f"{output}/{CACHE}").to_pandas()
    return {k: int(cache[k].sum()) for k in ("prompt_tokens", "completion_tokens")}


def actual_steps(result, plan: Plan, requests: int, output: str, cached_before: dict[str, int]) -> dict[str, dict]:
    """Step ──► its calls and tokens: sums of ``<step>_meta`` in the result, except for a filter,
    whose dropped rows are not in the result: its figures are the run's totals less the other
    steps' (calls: the requests the counting proxy forwarded; tokens: the response cache's rows the
    run added, one per answered call, plus the error rows' counts)."""
    from pyspark.sql import functions as F

    from apwa_spark.plan.step import Cardinality

    out, errors = {}, {k: 0 for k in KEYS}
    for name, step in plan.named_steps():
        meta = f"{name}_meta"
        if meta not in result.columns:
            out[name] = {k: 0 for k in KEYS}
            continue
        sums = [F.coalesce(F.sum(f"{meta}.{k}"), F.lit(0)).alias(k) for k in KEYS]
        out[name] = result.agg(*sums).first().asDict()
        failed = result.filter(F.col(f"{meta}.status") != "ok").agg(*sums).first().asDict()
        errors = {k: errors[k] + failed[k] for k in KEYS}
    cache = cache_tokens(output)
    total = {"llm_calls": requests, **{k: cache[k] - cached_before[k] + errors[k] for k in ("prompt_tokens", "completion_tokens")}}
    for name, step in plan.named_steps():
        if step.cardinality is Cardinality.SELECTION:
            out[name] = {k: total[k] - sum(v[k] for n, v in out.items() if n != name) for k in KEYS}
    return out


def compare(case: str, est: dict, act: dict, seconds: float, again: dict) -> dict:
    steps = []
    for name in est:
        e, a = est[name], act.get(name, {k: 0 for k in KEYS})
        steps.append({"step": name, "kind": est[name]["kind"], "assumption": e["assumption"],
                      **{f"estimated_{k}": e[k] for k in KEYS}, **{f"actual_{k}": a[k] for k in KEYS}})
    total = {f"{w}_{k}": sum(s[f"{w}_{k}"] for s in steps) for w in ("estimated", "actual") for k in KEYS}
    diff = {k: pct(total[f"estimated_{k}"], total[f"actual_{k}"]) for k in KEYS}
    return {"case": case, "run_seconds": round(seconds, 1), "steps": steps, "total": total, "difference_pct": diff,
            "calls_and_prompt_within_25pct": all(d is not None and abs(d) <= 25 for d in (diff["llm_calls"], diff["prompt_tokens"])),
            "estimate_after_run_calls": sum(r["llm_calls"] for r in again.values()),
            "estimate_after_run_cached": sum(r["cached_calls"] for r in again.values())}


def pct(estimate: float, actual: float) -> float | None:
    return None if not actual else round(100 * (estimate - actual) / actual, 1)


def run_case(spark, case: str, df, plan: Plan, settings, summarize: bool) -> dict:
    output = tempfile.mkdtemp(prefix="apwa-bench-estimate-")
    est = estimated(spark, df, plan, settings, output)
    cached_before = cache_tokens(output)  # the estimate's own sample calls (sampleCalls), if any
    with FaultyEndpoint(settings.llm.base_url) as proxy:  # forwards everything; counts completion requests
        start = time.perf_counter()
        run = execute_plan(spark, None if summarize else df, plan, output,
                           settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url}))
        seconds = time.perf_counter() - start
    if summarize:
        tables = {t.table: t for t in run.tables}
        act = {"scenes": {k: 0 for k in KEYS}, "chunks": {k: 0 for k in KEYS},
               "chunk": {k: getattr(tables["chunk"], k) for k in KEYS},
               "summaries": {k: sum(getattr(t, k) for n, t in tables.items() if n not in ("chunks", "chunk")) for k in KEYS}}
    else:
        act = actual_steps(run.result, plan, proxy.requests, output, cached_before)
    again = estimated(spark, df, plan, settings, output)
    row = compare(case, est, act, seconds, again)
    print(f"{case}: estimate {row['total']} diff {row['difference_pct']} after run {row['estimate_after_run_calls']} calls",
          flush=True)
    return row


def markdown(rows: list[dict], settings, sample_calls: int) -> str:
    how = (f"with `spark.apwa.estimate.sampleCalls={sample_calls}`: up to {sample_calls} real calls per LLM step, "
           "whose answers the run then takes from the response cache (so neither side counts them); tokens per call "
           "from those samples" if sample_calls else
           "spending nothing; completion tokens are estimated at `max_tokens` per call (an upper bound)")
    lines = ["# Estimate against actual", "", f"Model `{settings.llm.model}`; the measured estimate on an empty output, "
             f"then the run, {how}.", "",
             "| case | step | calls est. | calls actual | prompt tokens est. | actual | completion est. | actual |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for s in r["steps"]:
            lines.append(f"| {r['case']} | {s['step']} ({s['kind']}) | {s['estimated_llm_calls']} | {s['actual_llm_calls']} | "
                         f"{s['estimated_prompt_tokens']} | {s['actual_prompt_tokens']} | {s['estimated_completion_tokens']} | "
                         f"{s['actual_completion_tokens']} |")
    lines += ["", "| case | calls diff | prompt tokens diff | completion diff | calls and prompt within ±25 % | "
              "estimate after the run: calls (cached) | run s |", "|---|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        d = r["difference_pct"]
        lines.append(f"| {r['case']} | {d['llm_calls']} % | {d['prompt_tokens']} % | {d['completion_tokens']} % | "
                     f"{'yes' if r['calls_and_prompt_within_25pct'] else 'no'} | {r['estimate_after_run_calls']} "
                     f"({r['estimate_after_run_cached']}) | {r['run_seconds']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url")
    parser.add_argument("--scenes", type=int, default=6, help="scenes of Romeo and Juliet for the chunk ──► map plan")
    parser.add_argument("--play", default="romeo-and-juliet")
    parser.add_argument("--sample-calls", type=int, default=0,
                        help="spark.apwa.estimate.sampleCalls: real calls per LLM step the estimate may spend "
                             "(results/estimate_sampled.*; 0: results/estimate.*)")
    args = parser.parse_args()
    spark = get_session(conf={"spark.ui.showConsoleProgress": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    inputs = {"play": read_play(spark, "romeo-and-juliet").orderBy("ordinal").limit(args.scenes).cache(),
              "pii": pii_table(spark).cache(), "modules": modules_table(spark).cache()}
    rows = []
    with endpoint_settings(args.base_url, {"spark.apwa.estimate.sampleCalls": str(args.sample_calls)}) as settings:
        settings = preflight(settings)
        for case, (source, text) in PLANS.items():
            rows.append(run_case(spark, case, inputs[source], Plan.parse(text), settings, summarize=False))
        rows.append(run_case(spark, f"{args.play}: summarize", spark.range(0), summarize_plan([args.play], settings),
                             settings, summarize=True))
    name = "estimate_sampled" if args.sample_calls else "estimate"
    write_results(name, {"machine": machine(), "model": settings.llm.model, "sample_calls": args.sample_calls,
                         "cases": rows}, markdown(rows, settings, args.sample_calls))


if __name__ == "__main__":
    main()
