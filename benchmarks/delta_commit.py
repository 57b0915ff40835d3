"""What one small Delta write costs on this machine's local disk: the fixed cost of every table a
run writes, which a reduce level of one LLM call (the play level of a summarize job) cannot hide.

Writes a one-row DataFrame (a node-like row: a string, a long, an array, 500 characters of text)
``--writes`` times each way, alternating, after a warm-up: as a new Delta table through
delta-spark (``write_delta``, the engine the benchmarks' session runs), as a new Delta table
through the delta-rs fallback, and as plain Parquet through Spark. Reports each way's median
seconds, and the processes the machine created per write (``processes`` of ``/proc/stat``, every
fork and thread of the machine, so a quiet machine is assumed): Hadoop's local file system sets
each file's and folder's permissions with a ``chmod`` subprocess, and delta-spark's commit renames
through a ``readlink`` subprocess, when the native Hadoop library is not loaded (pip's PySpark
ships none). Also times one such subprocess (Hadoop's ``Shell.execCommand``). Writes
``results/delta_commit[_<label>].{json,md}``.

    python benchmarks/delta_commit.py [--writes 8] [--label L] [--results-dir D]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import bench_session, machine, write_results

from apwa_spark.delta import write_delta

WAYS = {"delta-spark (new table)": ("native", None), "delta-rs fallback (new table)": ("deltars", None),
        "Spark Parquet (new folder)": (None, "parquet")}


def processes_created() -> int:
    """Processes and threads the machine has created since boot (``/proc/stat``); -1 where there is none."""
    try:
        return next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("processes "))
    except (OSError, StopIteration):
        return -1


def write_once(df, how: tuple[str | None, str | None]) -> tuple[float, int]:
    """One write into a new folder ──► (seconds, processes created meanwhile)."""
    engine, fmt = how
    target = str(Path(tempfile.mkdtemp(prefix="apwa-bench-commit-")) / "t")
    before, started = processes_created(), time.perf_counter()
    if fmt:
        df.write.format(fmt).save(target)
    else:
        write_delta(df, target, "overwrite", engine, None, None, column_stats=False)
    return time.perf_counter() - started, processes_created() - before


def subprocess_seconds(spark, times: int = 20) -> float:
    """Seconds of one ``chmod`` run by Hadoop's ``Shell.execCommand`` from the driver's JVM (a Py4J call included)."""
    handle, target = tempfile.mkstemp()
    os.close(handle)
    jvm = spark.sparkContext._jvm
    command = spark.sparkContext._gateway.new_array(jvm.java.lang.String, 3)
    for i, part in enumerate(("chmod", "0644", target)):
        command[i] = part
    jvm.org.apache.hadoop.util.Shell.execCommand(command)
    started = time.perf_counter()
    for _ in range(times):
        jvm.org.apache.hadoop.util.Shell.execCommand(command)
    return (time.perf_counter() - started) / times


def run(spark, writes: int = 8, results_dir: str | Path | None = None, name: str = "delta_commit", command: str = "") -> dict:
    """Time ``writes`` one-row writes each way (after one warm-up each); writes ``<name>.{json,md}``."""
    df = spark.createDataFrame([("act", 1, ["a", "b"], "x" * 500)], "k string, o long, c array<string>, t string")
    for how in WAYS.values():
        write_once(df, how)
    samples = {way: [] for way in WAYS}
    for _ in range(writes):
        for way, how in WAYS.items():
            samples[way].append(write_once(df, how))
    ways = {way: {"median_seconds": round(statistics.median(s for s, _ in runs), 3),
                  "seconds": [round(s, 3) for s, _ in runs],
                  "median_processes_created": statistics.median(p for _, p in runs)} for way, runs in samples.items()}
    native = bool(spark.sparkContext._jvm.org.apache.hadoop.util.NativeCodeLoader.isNativeCodeLoaded())
    data = {"command": command, "machine": machine(), "writes": writes, "hadoop_native_library": native,
            "subprocess_seconds": round(subprocess_seconds(spark), 4), "ways": ways}
    write_results(name, data, markdown(data), results_dir)
    return data


def markdown(d: dict) -> str:
    rows = [f"| {way} | {w['median_seconds']} | {w['median_processes_created']} | {', '.join(map(str, w['seconds']))} |"
            for way, w in d["ways"].items()]
    return "\n".join([
        "# One small Delta write on local disk", "",
        f"Command: `python benchmarks/delta_commit.py{d['command']}`; {d['machine']['cpus']} CPUs, load "
        f"{d['machine']['load_average_1m']} at the end, {d['machine']['date']}. A one-row table, {d['writes']} writes each "
        "way, alternating, after a warm-up; each into a new folder.", "",
        "| write | median s | processes created (median) | every write, s |", "|---|---:|---:|---|", *rows, "",
        f"- Native Hadoop library loaded: **{'yes' if d['hadoop_native_library'] else 'no'}**. Without it Hadoop's local "
        "file system runs a `chmod` subprocess for every file and folder it creates, and delta-spark's commit a "
        "`readlink` for its rename.",
        f"- One such subprocess (Hadoop `Shell.execCommand`, from the driver's JVM): **{d['subprocess_seconds'] * 1000:.1f} ms**.",
        "- Processes created are the machine's (`/proc/stat`: every fork and thread), read on a quiet machine.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=8, help="writes each way after the warm-up (default 8)")
    parser.add_argument("--label", help="results file suffix")
    parser.add_argument("--results-dir", help="default: $APWA_BENCH_RESULTS or benchmarks/results")
    args = parser.parse_args()
    command = f" --writes {args.writes}" if args.writes != 8 else ""
    run(bench_session(), args.writes, args.results_dir, "delta_commit" + (f"_{args.label}" if args.label else ""), command)


if __name__ == "__main__":
    main()
