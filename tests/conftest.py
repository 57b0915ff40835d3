"""Shared fixtures: one local[2] Spark session and one embedded model endpoint per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from apwa_spark.config import Settings
from apwa_spark.plays import available_plays

#: Small budgets so model-backed tests stay quick (chunks of ~120 tokens, summaries of <= 40).
SMALL = {
    "spark.apwa.summarize.chunkTokens": "120",
    "spark.apwa.summarize.reduceTokens": "90",
    "spark.apwa.summarize.maxTokens": "40",
}


@pytest.fixture(scope="session")
def spark():
    from apwa_spark.session import get_session

    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = get_session(master="local[2]", conf={"spark.ui.showConsoleProgress": "false", "spark.ui.enabled": "false"})
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def endpoint(tmp_path_factory):
    """The real embedded endpoint (llama-server + Gemma 3 270M), started once."""
    from apwa_spark.endpoint import EmbeddedEndpoint

    log_file = tmp_path_factory.mktemp("endpoint") / "llama-server.log"
    with EmbeddedEndpoint(Settings.load(env={}), log_file=log_file) as running:
        yield running


@pytest.fixture(scope="session")
def settings(endpoint, tmp_path_factory) -> Settings:
    """Settings pointing at the embedded endpoint, with the small budgets and a private run registry."""
    registry = str(tmp_path_factory.mktemp("registry"))
    return endpoint.settings.with_overrides(**SMALL, **{"spark.apwa.run.registry": registry})


@pytest.fixture(scope="session")
def small_play(tmp_path_factory) -> Path:
    """A two-act slice of Romeo and Juliet (real text), plus one empty scene, as a play Markdown file.

    ACT I: the Prologue (short) and the first ~1,400 characters of Scene I (several chunks at 120
    tokens). ACT II: its Prologue and an empty SCENE I.
    """
    from apwa_spark.plays import parse_play

    source = available_plays()["romeo-and-juliet"].read_text(encoding="utf-8")
    acts = source.split("\n## ")
    act1, act2 = acts[1], acts[2]
    prologue1, scene1 = act1.split("\n### ")[1:3]
    prologue2 = act2.split("\n### ")[1]
    scene1 = scene1[: scene1.index("\n", 1400)]
    text = "\n".join([
        "# Romeo and Juliet (slice)", "", "## ACT I", "", "### " + prologue1, "### " + scene1, "",
        "## ACT II", "", "### " + prologue2, "### SCENE I. An empty scene.", "",
    ])
    path = tmp_path_factory.mktemp("plays") / "romeo-slice.md"
    path.write_text(text, encoding="utf-8")
    assert [s.scene for s in parse_play(text)] == ["PROLOGUE", "SCENE I", "PROLOGUE", "SCENE I"]
    return path


@pytest.fixture(scope="session")
def small_run(spark, settings, small_play, tmp_path_factory):
    """The summarize job on ``small_play`` with ``local[2]`` (shared by the job and cluster tests)."""
    from apwa_spark.summarize import summarize_play

    return summarize_play(str(small_play), tmp_path_factory.mktemp("run"), spark, settings)
