"""Helpers shared by the benchmark scripts: result files (JSON + Markdown) and the endpoint to use."""

from __future__ import annotations

import json
import platform
import time
from contextlib import contextmanager
from pathlib import Path

from apwa_spark.config import Settings

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import os

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d")}


def write_results(name: str, data: dict, markdown: str) -> Path:
    """Write ``results/<name>.json`` and ``results/<name>.md``; returns the JSON path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)
    return RESULTS / f"{name}.json"


@contextmanager
def endpoint_settings(base_url: str | None, overrides: dict | None = None):
    """Settings for ``base_url``, or for the embedded endpoint started for the duration."""
    settings = Settings.load(overrides=overrides or {})
    if base_url:
        yield settings.with_overrides(**{"spark.apwa.llm.baseUrl": base_url})
        return
    from apwa_spark.endpoint import EmbeddedEndpoint

    with EmbeddedEndpoint(settings) as running:
        yield running.settings
