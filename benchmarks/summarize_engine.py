"""The summarize job's own cost: Romeo and Juliet against the instant endpoint, so that what is left
is Spark, Delta and the plugin (planning, tables, commits, the Python workers), not the model.

A fresh Spark session runs the job once (cold: its first Python workers, its first Delta commits, as
a spark-submit job pays them), then ``--warm`` more times (as a notebook's later runs). Each run
writes a new output folder. Writes ``summarize_engine[_<label>].{json,md}``: per run, its wall
seconds and each table's seconds (its write: computing its rows and its commit); the warm runs'
median.

    python benchmarks/summarize_engine.py [--warm 3] [--max-scenes N] [--label L] [--results-dir D]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import bench_session, machine, write_results

from apwa_spark.config import Settings
from apwa_spark.summarize import summarize_play
from apwa_spark.testing.instant_endpoint import InstantEndpoint


def one_run(spark, settings: Settings, play: str, max_scenes: int | None) -> dict:
    """One summarize job into a new folder ──► its wall seconds, calls and per-table seconds."""
    started = time.perf_counter()
    result = summarize_play(play, tempfile.mkdtemp(prefix="apwa-bench-engine-"), spark, settings, max_scenes)
    return {"seconds": round(time.perf_counter() - started, 2), "llm_calls": sum(t.llm_calls for t in result.levels),
            "tables": {t.table: round(t.seconds, 2) for t in result.levels}}


def code_version() -> str:
    """The repository's commit, with ``+changes`` when the work tree differs from it."""
    here = Path(__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True,
                           text=True).stdout.strip()
    return head + ("+changes" if dirty else "")


def markdown(d: dict) -> str:
    warm = d["warm"]
    names = list(d["cold"]["tables"])
    lines = [
        f"# Summarize job's own cost: {d['play']} against the instant endpoint", "",
        f"Command: `python benchmarks/summarize_engine.py{d['command']}` (code {d['code']}; {d['machine']['cpus']} CPUs, "
        f"load {d['machine']['load_average_1m']} at the end, {d['machine']['date']}). The endpoint answers at once, so these "
        "seconds are Spark's, Delta's and the plugin's; compare runs of one machine only.", "",
        "| run | calls | job s | " + " | ".join(f"{n} s" for n in names) + " |",
        "|---|---:|---:|" + "---:|" * len(names),
        f"| cold (first in the session) | {d['cold']['llm_calls']} | {d['cold']['seconds']} | "
        + " | ".join(str(d["cold"]["tables"].get(n, "")) for n in names) + " |",
    ]
    lines += [f"| warm {i} | {r['llm_calls']} | {r['seconds']} | " + " | ".join(str(r["tables"].get(n, "")) for n in names) + " |"
              for i, r in enumerate(d["warm_runs"], 1)]
    if warm:
        lines.append(f"| **warm median** | | **{warm['seconds']}** | " + " | ".join(str(warm["tables"].get(n, "")) for n in names) + " |")
    return "\n".join(lines) + "\n"


def run(spark, play: str = "romeo-and-juliet", max_scenes: int | None = None, warm: int = 3,
        results_dir: str | Path | None = None, name: str = "summarize_engine", command: str = "") -> dict:
    """One cold run of the summarize job against the instant endpoint, then ``warm`` more; writes
    ``<name>.{json,md}`` and returns the JSON's data."""
    with InstantEndpoint() as instant:
        settings = Settings.load(overrides={"spark.apwa.llm.baseUrl": instant.base_url, "spark.apwa.llm.model": "instant"})
        cold = one_run(spark, settings, play, max_scenes)
        warm_runs = [one_run(spark, settings, play, max_scenes) for _ in range(warm)]
    median = {"seconds": round(statistics.median(r["seconds"] for r in warm_runs), 2),
              "tables": {n: round(statistics.median(r["tables"][n] for r in warm_runs if n in r["tables"]), 2)
                         for n in cold["tables"] if any(n in r["tables"] for r in warm_runs)}} if warm_runs else None
    data = {"play": play, "max_scenes": max_scenes, "command": command, "code": code_version(), "machine": machine(),
            "cold": cold, "warm_runs": warm_runs, "warm": median}
    write_results(name, data, markdown(data), results_dir)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--play", default="romeo-and-juliet")
    parser.add_argument("--max-scenes", type=int, help="only the first N scenes (a smoke test)")
    parser.add_argument("--warm", type=int, default=3, help="runs after the first (default 3)")
    parser.add_argument("--label", help="results file suffix")
    parser.add_argument("--results-dir", help="default: $APWA_BENCH_RESULTS or benchmarks/results")
    args = parser.parse_args()
    command = "".join(f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                      if v is not None and k != "results_dir" and not (k == "play" and v == "romeo-and-juliet")
                      and not (k == "warm" and v == 3))
    run(bench_session(), args.play, args.max_scenes, args.warm, args.results_dir,
        "summarize_engine" + (f"_{args.label}" if args.label else ""), command)


if __name__ == "__main__":
    main()
