"""spark-submit jobs, the `apwa-spark sql` command, and the summarize job on a local cluster of
separate executor JVMs (``local-cluster[2,1,1024]``), all with the real embedded model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from apwa_spark.cli import main
from apwa_spark.delta import read_delta

from conftest import SMALL

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
DOCS = [
    {"id": 1, "text": "Write to Maria Lopez at maria.lopez@example.com or call +44 20 7946 0958."},
    {"id": 2, "text": "The meeting moved to Tuesday; bring the slides."},
    {"id": 3, "text": None},
]


def spark_submit(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """pyspark's bundled spark-submit as a subprocess, with this interpreter for driver and executors."""
    bin_dir = Path(sys.executable).parent
    full_env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYSPARK_PYTHON": sys.executable,
                "PYSPARK_DRIVER_PYTHON": sys.executable, **env}
    return subprocess.run([str(bin_dir / "spark-submit"), "--properties-file", str(ROOT / "conf/apwa-defaults.conf"),
                           "--conf", "spark.ui.enabled=false", "--conf", "spark.ui.showConsoleProgress=false", *args],
                          env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    return path


def _small_conf(tmp_path) -> list[str]:
    """The test budgets as spark-submit ``--conf`` flags: they must beat ``--properties-file``, whose
    values are Spark conf (which ranks above ``APWA_*`` env vars)."""
    pairs = {**SMALL, "spark.apwa.run.registry": str(tmp_path / "registry")}
    return [flag for key, value in pairs.items() for flag in ("--conf", f"{key}={value}")]


def test_every_job_has_help():
    for job in ("summarize", "redact", "extract", "query", "sql"):
        out = subprocess.run([sys.executable, str(ROOT / "jobs" / f"{job}.py"), "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "--output" in out.stdout and "--conf" in out.stdout, (job, out.stderr)


def test_redact_job_runs_under_spark_submit(spark, settings, docs, tmp_path):
    out = tmp_path / "redacted"
    done = spark_submit(["--master", "local[2]", "--conf", f"spark.apwa.llm.baseUrl={settings.llm.base_url}",
                         *_small_conf(tmp_path), str(ROOT / "jobs/redact.py"), "--input", str(docs), "--output", str(out),
                         "--entities", "email,phone,person"], {}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = read_delta(spark, out / "result")
    assert result.count() == 3 and {"redacted", "redacted_spans", "redact0_meta"} <= set(result.columns)
    rows = {r.id: r for r in result.collect()}
    assert "maria.lopez@example.com" not in rows[1].redacted and "[EMAIL]" in rows[1].redacted
    assert rows[3].redacted is None and rows[3].redact0_meta.status == "error"


def test_sql_command_registers_functions_and_views_and_writes_delta(spark, settings, docs, tmp_path, capsys):
    out = tmp_path / "sql_out"
    code = main(["sql", "--table", f"docs={docs}", "--output", str(out),
                 "--conf", f"spark.apwa.llm.baseUrl={settings.llm.base_url}",
                 "SELECT id, apwa_redact(text, array('email')) AS redacted FROM docs"])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"] == 3
    rows = {r.id: r.redacted for r in read_delta(spark, out).collect()}
    assert "[EMAIL]" in rows[1] and rows[2] == DOCS[1]["text"] and rows[3] is None


def test_sql_command_rejects_a_bad_table_spec(capsys):
    assert main(["sql", "--table", "no-equals-sign", "SELECT 1"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err


def test_summarize_on_a_local_cluster_matches_the_local_run(spark, small_play, small_run, tmp_path):
    """Two executor JVMs and their own Python workers; the job starts its own embedded endpoint, so
    its address, the settings and the clients must reach the executors through the UDF closures."""
    out = tmp_path / "cluster"
    done = spark_submit(["--master", "local-cluster[2,1,1024]", "--conf", "spark.executor.memory=1g", *_small_conf(tmp_path),
                         str(ROOT / "jobs/summarize.py"), "--play", str(small_play), "--output", str(out)], {}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    local = {level.table.rstrip("0123456789"): level for level in small_run.levels}
    for name, level in local.items():
        tables = sorted(p.name for p in out.iterdir() if p.name.rstrip("0123456789") == name)
        assert tables, f"no {name}* table in the cluster run"
        cluster = read_delta(spark, out / tables[-1])
        mine = read_delta(spark, level.path)
        assert cluster.schema == mine.schema, name
        if name in ("chunks", "chunk", "play_r"):
            assert cluster.count() == mine.count(), name
        if name == "chunk":  # the slice's empty scene is the one error row, as in the local run
            assert cluster.filter("status = 'error'").count() == mine.filter("status = 'error'").count() == 1
    [root] = read_delta(spark, out / sorted(p.name for p in out.iterdir() if p.name.startswith("play_r"))[-1]).collect()
    assert root.status == "partial" and root.failed_inputs == 1 and root.summary  # the empty scene, stated
