"""Run every workload benchmark at one size, on one Spark session (local[2]) and one endpoint.

* ``small`` (minutes): PII 50 rows, extraction 20 documents, summarization of a 2-scene slice of
  Romeo and Juliet, throughput with 8 prompts per level and 200 rows on the instant endpoint.
* ``full`` (under an hour here): PII 2,000 rows in all three pipelines, extraction 200 documents,
  Romeo and Juliet in full, throughput with 128 prompts and 2,000 / 10,000 rows on the instant
  endpoint. ``--histories`` adds the ~1 MB histories size (about 20 more minutes); the 38-play size
  is ``summarize_sizes.py --size all`` (about 100 minutes here).

    python benchmarks/run_all.py --size small|full [--only pii,extraction,summarize,throughput]
                                 [--base-url URL] [--results-dir DIR] [--histories]

Each benchmark writes ``<name>_<size>.{json,md}`` (throughput also a PNG) to the results folder
(default ``benchmarks/results``, or ``$APWA_BENCH_RESULTS``), and this script an index
``run_all_<size>.{json,md}`` with each benchmark's wall time and headline figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import extraction  # noqa: E402
import pii  # noqa: E402
import summarize_sizes  # noqa: E402
import throughput  # noqa: E402
from _common import endpoint_settings, machine, results_dir, write_results  # noqa: E402

BENCHMARKS = ("pii", "extraction", "summarize", "throughput")


def headline(name: str, data: dict) -> str:
    """One line of the figures that a target is set for."""
    if name.startswith("pii"):
        return "; ".join(f"{p}: recall {d['overall']['recall']}, precision {d['overall']['precision']}, "
                         f"leak {d['overall']['leak_rate']}" for p, d in data["pipelines"].items())
    if name.startswith("extraction"):
        return f"validity {data['overall']['validity']}, mean field accuracy {data['overall']['mean_field_accuracy']}"
    if name.startswith("summarize"):
        return (f"failure rate {data['failure_rate']}, coverage {data['scenes_covered']}/{data['scenes']}, "
                f"{data['llm_calls']} LLM calls, {data['prompt_tokens']} prompt tokens")
    return (f"(b)/(a) {data['b_over_a']}, best ceiling {data['best_ceiling']['rows_per_second']} rows/s, "
            f"instant endpoint best {data['engine_best_rows_per_second']} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=("small", "full"), default="small")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--histories", action="store_true", help="full size: also summarize the ~1 MB histories")
    parser.add_argument("--base-url", help="an OpenAI-compatible endpoint (default: the embedded one)")
    parser.add_argument("--results-dir", help="default: $APWA_BENCH_RESULTS or benchmarks/results")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {BENCHMARKS}")
    from apwa_spark.session import get_session

    spark = get_session(conf={"spark.ui.showConsoleProgress": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    full = args.size == "full"
    jobs = {
        "pii": lambda s: [(f"pii_{args.size}", pii.run(spark, s, args.size, results_dir=args.results_dir))],
        "extraction": lambda s: [(f"extraction_{args.size}", extraction.run(spark, s, args.size, results_dir=args.results_dir))],
        "summarize": lambda s: [(f"summarize_{size}", summarize_sizes.run(spark, s, size, results_dir=args.results_dir))
                                for size in (["romeo"] + (["histories"] if args.histories else []) if full else ["small"])],
        "throughput": lambda s: [(f"throughput_{args.size}", throughput.run(spark, s, args.size, results_dir=args.results_dir))],
    }
    previous = results_dir(args.results_dir) / f"run_all_{args.size}.json"
    index = {"size": args.size, "machine": machine(),  # an --only run keeps the other benchmarks' earlier entries
             "benchmarks": json.loads(previous.read_text())["benchmarks"] if previous.exists() and args.only else {}}
    started_all = time.perf_counter()
    with endpoint_settings(args.base_url) as settings:
        for name in chosen:
            started = time.perf_counter()
            for result_name, data in jobs[name](settings):
                index["benchmarks"][result_name] = {"headline": headline(result_name, data)}
            index["benchmarks"][name] = {"wall_seconds": round(time.perf_counter() - started, 1)}
    index["total_wall_seconds"] = round(time.perf_counter() - started_all, 1)  # endpoint start-up included
    lines = [f"# All benchmarks, size `{args.size}`", "", f"Command: `python benchmarks/run_all.py --size {args.size}` "
             f"({index['machine']['cpus']} CPUs, {index['machine']['date']})", "", "| result | headline |", "|---|---|"]
    lines += [f"| {k} | {v.get('headline', '')} |" for k, v in index["benchmarks"].items() if "headline" in v]
    lines += ["", "| benchmark | wall s |", "|---|---:|"]
    lines += [f"| {k} | {v['wall_seconds']} |" for k, v in index["benchmarks"].items() if "wall_seconds" in v]
    lines += [f"| **this run, endpoint start-up included** | {index['total_wall_seconds']} |"]
    write_results(f"run_all_{args.size}", index, "\n".join(lines), args.results_dir)


if __name__ == "__main__":
    main()
