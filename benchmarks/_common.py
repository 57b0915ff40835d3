"""Helpers shared by the benchmark scripts: result files (JSON + Markdown), the endpoint to use, the machine.

Results go to ``benchmarks/results/`` unless ``results_dir`` is given or ``APWA_BENCH_RESULTS``
names another folder (the test suite writes to a temporary one, never over committed results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

from apwa_spark.config import Settings

RESULTS = Path(__file__).resolve().parent / "results"


def results_dir(given: str | Path | None = None) -> Path:
    """Where results go: ``given``, else ``$APWA_BENCH_RESULTS``, else ``benchmarks/results``."""
    return Path(given or os.environ.get("APWA_BENCH_RESULTS") or RESULTS)


def machine() -> dict:
    """CPU count, load average at the time (the machine is shared: timings are noisy), Python, date."""
    return {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2), "python": platform.python_version(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}


def write_results(name: str, data: dict, markdown: str, directory: str | Path | None = None) -> Path:
    """Write ``<directory>/<name>.json`` and ``<directory>/<name>.md`` (see :func:`results_dir`); returns the JSON path."""
    out = results_dir(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (out / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)
    return out / f"{name}.json"


@contextmanager
def endpoint_settings(base_url: str | None, overrides: dict | None = None, log_file: Path | None = None):
    """Settings for ``base_url``, or for the embedded endpoint started for the duration (its
    server's output to ``log_file`` when given)."""
    settings = Settings.load(overrides=overrides or {})
    if base_url:
        yield settings.with_overrides(**{"spark.apwa.llm.baseUrl": base_url})
        return
    from apwa_spark.endpoint import EmbeddedEndpoint

    with EmbeddedEndpoint(settings, log_file=log_file) as running:
        yield running.settings


def meta_column(df):
    """The ``<step>_meta`` column of a one-step plan's result (steps are named ``<kind><index>``), as a Column."""
    from pyspark.sql import functions as F

    names = [c for c in df.columns if c.endswith("_meta")]
    if len(names) != 1:
        raise ValueError(f"expected one *_meta column, got {names}")
    return F.col(names[0])


def bench_parser(doc: str, sizes) -> argparse.ArgumentParser:
    """The arguments every workload benchmark takes: ``--size``, ``--base-url``, ``--results-dir``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--size", choices=sizes, default="small")
    parser.add_argument("--base-url", help="an OpenAI-compatible endpoint (default: the embedded one)")
    parser.add_argument("--results-dir", help="default: $APWA_BENCH_RESULTS or benchmarks/results")
    return parser


def bench_session():
    """The benchmarks' Spark session (``local[2]``), without the console progress bar, logging errors only."""
    from apwa_spark.session import get_session

    spark = get_session(conf={"spark.ui.showConsoleProgress": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    return spark
