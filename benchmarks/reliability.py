"""Reliability figures: rows accounted under injected faults, calls repeated after a kill, re-run cost.

Workload: the summarize job on the first scenes of Romeo and Juliet (``--scenes``, default 6) with
small budgets (chunkTokens 300, maxTokens 40), through the faulty proxy
(apwa_spark.testing.faulty_endpoint) in front of the embedded endpoint.

1. Fault rates 0 %, 10 %, 20 %, 40 % (split evenly over 429 with Retry-After, 500, stall past the
   timeout, truncated body, non-JSON body), default retries: level-0 rows accounted (exactly once),
   rows ok, errors by class, LLM calls, wall seconds.
2. A real kill: the job runs as a process, is SIGKILLed after ``--kill-after`` calls, and is started
   again; calls repeated = calls of both runs - calls of an uninterrupted run.
3. An unchanged re-run into the same output: wall seconds and LLM calls against the first run.

    python benchmarks/reliability.py
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import endpoint_settings, machine, write_results

from apwa_spark.delta import read_delta
from apwa_spark.session import get_session
from apwa_spark.summarize import summarize_play
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

BUDGETS = {"spark.apwa.summarize.chunkTokens": "300", "spark.apwa.summarize.maxTokens": "40"}
KINDS = ("http_429", "http_500", "stall", "truncated", "non_json")


def fault_run(spark, settings, rate: float, scenes: int, workdir: Path) -> dict:
    rates = {kind: rate / len(KINDS) for kind in KINDS} if rate else {}
    output = workdir / f"faults-{int(rate * 100)}"
    with FaultyEndpoint(settings.llm.base_url, seed=1, retry_after=0.5, stall_seconds=35, **rates) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url, "spark.apwa.llm.timeout": "30"})
        started = time.perf_counter()
        run = summarize_play("romeo-and-juliet", output, spark, local, max_scenes=scenes)
        wall = time.perf_counter() - started
    chunks = read_delta(spark, output / "chunks").select("scene_id", "chunk_index").toPandas()
    level0 = read_delta(spark, output / "chunk").toPandas()
    accounted = sorted(level0["node_id"]) == sorted("chunk:" + chunks["scene_id"] + "#" + chunks["chunk_index"].astype(str))
    return {
        "fault_rate": rate, "faults_injected": dict(proxy.faults), "requests": proxy.requests,
        "input_rows": len(chunks), "rows_out": len(level0), "accounted_exactly_once": accounted,
        "rows_ok": int((level0["status"] == "ok").sum()), "errors_by_class": run.errors_by_class,
        "root_status": run.root.get("status"), "wall_seconds": round(wall, 1),
    }


def _job(output: Path, base_url: str, scenes: int, registry: Path) -> list[str]:
    conf = {**BUDGETS, "spark.apwa.llm.baseUrl": base_url, "spark.apwa.run.registry": str(registry)}
    return [str(Path(sys.executable).parent / "apwa-spark"), "summarize", "--play", "romeo-and-juliet",
            "--max-scenes", str(scenes), "--output", str(output)] + [a for k, v in conf.items() for a in ("--conf", f"{k}={v}")]


def kill_run(settings, scenes: int, kill_after: int, workdir: Path) -> dict:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    with FaultyEndpoint(settings.llm.base_url) as proxy:
        job = subprocess.Popen(_job(workdir / "killed", proxy.base_url, scenes, workdir / "registry"), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while proxy.requests < kill_after and job.poll() is None:
            time.sleep(0.05)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        before = proxy.requests
        subprocess.run(_job(workdir / "killed", proxy.base_url, scenes, workdir / "registry"), env=env, check=True, capture_output=True)
        after = proxy.requests - before
        proxy.requests = 0
        subprocess.run(_job(workdir / "clean", proxy.base_url, scenes, workdir / "registry"), env=env, check=True, capture_output=True)
        clean = proxy.requests
    return {"calls_before_kill": before, "calls_after_restart": after, "calls_uninterrupted": clean,
            "calls_repeated": before + after - clean}


def rerun(spark, settings, scenes: int, workdir: Path) -> dict:
    out = {}
    for name in ("first", "unchanged_rerun"):
        started = time.perf_counter()
        run = summarize_play("romeo-and-juliet", workdir / "rerun", spark, settings, max_scenes=scenes)
        out[name] = {"wall_seconds": round(time.perf_counter() - started, 1),
                     "llm_calls": sum(l.llm_calls for l in run.levels)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--rates", default="0,0.1,0.2,0.4")
    parser.add_argument("--kill-after", type=int, default=20, help="LLM calls before the kill")
    args = parser.parse_args()
    spark = get_session(conf={"spark.ui.showConsoleProgress": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    workdir = Path(tempfile.mkdtemp(prefix="apwa-reliability-"))
    with endpoint_settings(None, overrides=BUDGETS) as settings:
        settings = settings.with_overrides(**{"spark.apwa.run.registry": str(workdir / "registry")})
        faults = [fault_run(spark, settings, float(r), args.scenes, workdir) for r in args.rates.split(",")]
        kill = kill_run(settings, args.scenes, args.kill_after, workdir)
        again = rerun(spark, settings, args.scenes, workdir)
    data = {"machine": machine(), "scenes": args.scenes, "budgets": BUDGETS, "faults": faults, "kill": kill, "rerun": again}
    lines = ["# Reliability: faults, kill and resume, re-run", "",
             f"Command: `python benchmarks/reliability.py` (first {args.scenes} scenes of Romeo and Juliet, "
             "chunkTokens 300, maxTokens 40, maxRetries 3, timeout 30 s, stalls 35 s)", "",
             "| injected fault rate | level-0 rows in | rows out | each exactly once | rows ok | errors by class | requests | wall s |",
             "|---:|---:|---:|---|---:|---|---:|---:|"]
    for f in faults:
        lines.append(f"| {f['fault_rate']:.0%} | {f['input_rows']} | {f['rows_out']} | {f['accounted_exactly_once']} | "
                     f"{f['rows_ok']} | {f['errors_by_class'] or '-'} | {f['requests']} | {f['wall_seconds']} |")
    lines += ["", "The 0 % row's wall time includes Spark's Python worker start-up (it runs first).", "",
              f"Kill after {kill['calls_before_kill']} calls, restart: {kill['calls_after_restart']} more calls; "
              f"an uninterrupted run makes {kill['calls_uninterrupted']}; **calls repeated: {kill['calls_repeated']}**.", "",
              f"Unchanged re-run: {again['unchanged_rerun']['wall_seconds']} s and {again['unchanged_rerun']['llm_calls']} LLM calls, "
              f"against {again['first']['wall_seconds']} s and {again['first']['llm_calls']} calls for the first run."]
    write_results("reliability", data, "\n".join(lines))


if __name__ == "__main__":
    main()
