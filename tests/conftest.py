"""Shared fixtures: one local[2] Spark session and one embedded model endpoint per test session."""

from __future__ import annotations

import os
import sys
import time
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
def spark(tmp_path_factory):
    from apwa_spark.session import get_session

    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = get_session(master="local[2]", conf={"spark.ui.showConsoleProgress": "false", "spark.ui.enabled": "false",
                                                   **delta_test_conf(tmp_path_factory)})
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


# ---- endpoints (issue 13) ----

@pytest.fixture(scope="session")
def api_key() -> str:
    """The key of the key-checked test server (random per session; the secret scans look for it)."""
    import secrets

    return "sk-apwa-test-" + secrets.token_hex(12)


@pytest.fixture(scope="session")
def keyed_endpoint(tmp_path_factory, api_key):
    """The embedded llama-server started with an API key: a key-checked endpoint like hosted ones."""
    from apwa_spark.endpoint import EmbeddedEndpoint

    log_file = tmp_path_factory.mktemp("keyed-endpoint") / "llama-server.log"
    with EmbeddedEndpoint(Settings.load(env={}), log_file=log_file, api_key=api_key) as running:
        yield running


@pytest.fixture(scope="session")
def gateway(keyed_endpoint, api_key, tmp_path_factory):
    """A real LiteLLM proxy on 127.0.0.1 in front of ``keyed_endpoint``, with its own master key;
    it serves chat completions and no ``/tokenize``: a :class:`~apwa_spark.testing.gateway.LiteLLMGateway`."""
    from apwa_spark.testing.gateway import LiteLLMGateway

    folder = tmp_path_factory.mktemp("gateway")
    with LiteLLMGateway(keyed_endpoint.base_url, keyed_endpoint.settings.llm.model, api_key, folder) as running:
        yield running


# ---- delta (issue 14) ----

BUCKET = "apwa-test"


def hadoop_aws_package() -> str:
    """``org.apache.hadoop:hadoop-aws`` at the Hadoop version bundled in pyspark's jars (S3A connector)."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    [client] = jars.glob("hadoop-client-api-*.jar")
    return "org.apache.hadoop:hadoop-aws:" + client.stem.removeprefix("hadoop-client-api-")


def delta_test_conf(tmp_path_factory) -> dict[str, str]:
    """The shared session's extras: a private warehouse for managed tables, the S3A connector
    (hadoop-aws and its AWS SDK bundle, resolved by Ivy once and cached) for the object-store tests,
    and small-data partition counts: Delta rebuilds a table's snapshot in 50 partitions by default
    (``snapshotPartitions``; Delta's own test suites use 2), and test tables have a few rows."""
    return {"spark.sql.warehouse.dir": str(tmp_path_factory.mktemp("warehouse")),
            "spark.jars.packages": hadoop_aws_package(),
            "spark.databricks.delta.snapshotPartitions": "2",
            "spark.sql.shuffle.partitions": "2"}


@pytest.fixture(scope="session")
def s3(spark, tmp_path_factory):
    """A real S3-compatible server (moto's server mode, its own process) on loopback with bucket
    ``apwa-test``; the shared session's S3A settings point at it. Yields delta-rs storage options for it.

    Its own process, not moto's in-process thread: delta-rs calls from this process that hold the GIL
    while they wait for the server would stall a server thread in the same process.
    """
    import subprocess

    import boto3
    import httpx

    from apwa_spark.endpoint import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    s3a = {"fs.s3a.endpoint": url, "fs.s3a.access.key": "testing", "fs.s3a.secret.key": "testing",
           "fs.s3a.path.style.access": "true", "fs.s3a.connection.ssl.enabled": "false",
           "fs.s3a.endpoint.region": "us-east-1"}
    for key, value in s3a.items():
        spark.conf.set(key, value)
    yield {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    for key in s3a:
        spark.conf.unset(key)
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="session")
def tiny_play(tmp_path_factory) -> Path:
    """Real text, two scenes: Romeo and Juliet's Prologue (one chunk) and an empty scene (an error row)."""
    source = available_plays()["romeo-and-juliet"].read_text(encoding="utf-8")
    prologue = source.split("\n## ")[1].split("\n### ")[1]
    path = tmp_path_factory.mktemp("plays") / "romeo-tiny.md"
    path.write_text("\n".join(["# Romeo and Juliet (tiny)", "", "## ACT I", "", "### " + prologue, "",
                               "### SCENE I. An empty scene.", ""]), encoding="utf-8")
    return path
