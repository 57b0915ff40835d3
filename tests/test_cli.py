"""The three ways in: console script, spark-submit job, Python function (the last in test_summarize)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*args, env=None, timeout=600):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})


def test_help_lists_the_commands():
    out = _run(str(BIN / "apwa-spark"), "--help")
    assert out.returncode == 0
    for command in ("serve", "summarize", "plays"):
        assert command in out.stdout
    assert "--play" in _run(str(BIN / "apwa-spark"), "summarize", "--help").stdout


def test_unknown_play_exits_2_listing_the_choices(tmp_path):
    out = _run(str(BIN / "apwa-spark"), "summarize", "--play", "hamlett", "--output", str(tmp_path))
    assert out.returncode == 2
    assert "unknown play 'hamlett'" in out.stderr and "hamlet" in out.stderr
    several = _run(str(BIN / "apwa-spark"), "summarize", "--play", "macbeth", "--play", "hamlett", "--output", str(tmp_path))
    assert several.returncode == 2 and "unknown play 'hamlett'" in several.stderr


def test_bad_conf_is_a_clear_error(tmp_path):
    out = _run(str(BIN / "apwa-spark"), "summarize", "--play", "macbeth", "--output", str(tmp_path),
               "--conf", "spark.apwa.llm.concurrency=zero")
    assert out.returncode == 2 and "concurrency" in out.stderr


@pytest.mark.model
def test_spark_submit_runs_the_summarize_job(endpoint, small_play, tmp_path):
    out = _run(str(BIN / "spark-submit"), "--master", "local[2]",
               "--properties-file", "conf/apwa-defaults.conf",
               "--conf", f"spark.apwa.llm.baseUrl={endpoint.base_url}",
               "--conf", "spark.apwa.summarize.maxTokens=32",
               "jobs/summarize.py", "--play", str(small_play), "--output", str(tmp_path / "out"), "--max-scenes", "2",
               env={"PYSPARK_PYTHON": sys.executable})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| chunk |" in out.stdout and "Summary (ok)" in out.stdout
    assert DeltaTable(str(tmp_path / "out" / "chunk")).version() == 0
