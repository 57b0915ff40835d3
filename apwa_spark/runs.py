"""Runs: identity, provenance, manifests and the dead-letter table of a job.

Every job run gets a ``run_id``. Its manifest (what ran, with which non-secret settings, and how
it ended) is written to ``<output>/_runs/<run_id>.json`` and indexed in the run registry
(``spark.apwa.run.registry``, default ``~/.apwa/runs``) so ``apwa-spark retry-failed RUN_ID``
finds it. Rows that end with ``status='error'`` are also appended to the Delta table
``<output>/_dead_letter`` with the run id, table, node id and error class.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pyspark.sql.types import BooleanType, IntegerType, LongType, StringType, StructField

from apwa_spark.config import Settings
from apwa_spark.llm.client import Completion, LLMClient

DEAD_LETTER = "_dead_letter"
CACHE = "_llm_cache"


#: Per-row bookkeeping of one LLM call, the same in every table the project writes.
CALL_FIELDS = [
    StructField("status", StringType()),
    StructField("error_class", StringType()),
    StructField("error", StringType()),
    StructField("llm_calls", IntegerType()),
    StructField("prompt_tokens", LongType()),
    StructField("completion_tokens", LongType()),
    StructField("cached_tokens", LongType()),
    StructField("from_cache", BooleanType()),
]


#: Per-row provenance: which run, plan, step, model, endpoint and template produced the row.
PROVENANCE_FIELDS = [
    StructField(name, StringType()) for name in ("run_id", "plan_id", "step", "model", "endpoint_host", "template_hash")
]


def call_fields(c: Completion) -> dict:
    """A completion's :data:`CALL_FIELDS` values."""
    return {"status": c.status, "error_class": c.error_class, "error": c.error, "llm_calls": c.calls,
            "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "cached_tokens": c.cached_tokens, "from_cache": c.from_cache}


class UnknownRunError(LookupError):
    """No manifest for the run id in the run registry."""


@dataclass(frozen=True)
class JobContext:
    """What every executor needs to know about the run; plain data, shipped inside UDF closures.

    Attributes:
        settings: the job's settings (endpoint, budgets, cache path).
        run_id: this run's id.
        tasks: Spark tasks that can run at once (``defaultParallelism``): the share of RPM/TPM.
        plan_id: identity of what runs (a plan's hash, or the summarize job's templates and budgets).
    """

    settings: Settings
    run_id: str
    tasks: int = 1
    plan_id: str = ""

    @property
    def endpoint_host(self) -> str:
        """host:port of the LLM endpoint (never the key, never the path's query)."""
        return urlsplit(self.settings.llm.base_url or "").netloc

    def client(self) -> LLMClient:
        """One LLM client for one batch of rows (a pandas UDF call)."""
        return LLMClient(self.settings, tasks=self.tasks)


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxxxx`` (UTC time and 6 random hex digits)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def write_manifest(output: Path, run_id: str, manifest: dict, settings: Settings) -> Path:
    """Write the run's manifest under ``output/_runs`` and index it in the run registry."""
    body = json.dumps({"run_id": run_id, "output": str(output), **manifest}, indent=2, default=str)
    path = output / "_runs" / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    registry = Path(settings.run.registry).expanduser()
    registry.mkdir(parents=True, exist_ok=True)
    (registry / f"{run_id}.json").write_text(body)
    return path


def load_manifest(run_id: str, settings: Settings) -> dict:
    """The manifest of ``run_id`` from the run registry.

    Raises:
        UnknownRunError: no such run; the message lists the latest runs.
    """
    registry = Path(settings.run.registry).expanduser()
    path = registry / f"{run_id}.json"
    if not path.is_file():
        known = sorted(p.stem for p in registry.glob("*.json"))[-5:]
        raise UnknownRunError(f"no run {run_id!r} in {registry}; latest runs: {', '.join(known) or 'none'}")
    return json.loads(path.read_text())
