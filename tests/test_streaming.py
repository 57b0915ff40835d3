"""Streaming enrichment (issue 18, item 2): a plan's row-level steps over a Structured Streaming
source into Delta exactly once, resumed from its checkpoint after a kill."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from apwa_spark.delta import read_delta
from apwa_spark.plan.ir import Plan, PlanError
from apwa_spark.streaming import CRASH_BEFORE_COMMIT, stream
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

pytestmark = pytest.mark.model

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
PLAN = "steps:\n  - {kind: classify, template: 'Review: {text}', labels: [positive, negative], output: label}\n"
REVIEWS = ["Lovely food, friendly staff.", "Cold soup and a rude waiter.", "Best pizza in town.",
           "Never again: we waited an hour.", "Great value, will come back.", "The bill was wrong twice.",
           "Fresh bread and good coffee.", "Noisy, dirty and slow.", "A perfect birthday dinner."]


def _arrive(folder: Path, n: int) -> None:
    """File n of three: three reviews as JSON lines, modified n minutes after the first (a file
    stream takes files in modification order, one per micro-batch here)."""
    rows = [{"id": 3 * n + i, "text": REVIEWS[3 * n + i]} for i in range(3)]
    path = folder / f"batch{n}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.utime(path, (1_700_000_000 + 60 * n, 1_700_000_000 + 60 * n))


def _stream_job(folder: Path, out: Path, plan: Path, proxy, registry: Path, crash: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    env.pop(CRASH_BEFORE_COMMIT, None)
    if crash is not None:
        env[CRASH_BEFORE_COMMIT] = crash
    return subprocess.run([str(BIN / "apwa-spark"), "run", "--stream", "--plan", str(plan), "--input", str(folder),
                           "--output", str(out), "--max-files-per-trigger", "1",
                           "--conf", f"spark.apwa.llm.baseUrl={proxy.base_url}", "--conf", f"spark.apwa.run.registry={registry}"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=900)


def test_a_stream_killed_before_a_commit_resumes_with_every_row_once_and_no_call_paid_twice(spark, endpoint, tmp_path):
    folder, out, plan = tmp_path / "in", tmp_path / "out", tmp_path / "plan.yaml"
    folder.mkdir()
    plan.write_text(PLAN)
    _arrive(folder, 0)
    _arrive(folder, 1)
    with FaultyEndpoint(endpoint.base_url) as proxy:
        killed = _stream_job(folder, out, plan, proxy, tmp_path / "registry", crash="1")
        assert killed.returncode == 137, killed.stderr[-2000:]
        assert "[apwa] batch 0: 3 rows" in killed.stdout and "[apwa] batch 1" not in killed.stdout
        first_calls = proxy.requests
        assert first_calls == 6  # batch 1's calls were made, its commit was not
        _arrive(folder, 2)
        resumed = _stream_job(folder, out, plan, proxy, tmp_path / "registry", crash=None)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "[apwa] batch 1: 3 rows" in resumed.stdout and "[apwa] batch 2: 3 rows" in resumed.stdout
    assert proxy.requests - first_calls == 3  # batch 1 again came from the response cache; only batch 2 called
    sink = read_delta(spark, str(out / "result")).toPandas()
    assert sorted(sink["id"]) == list(range(9))  # every input row exactly once
    batch1 = sink[sink["id"].between(3, 5)]
    assert batch1["classify0_meta"].map(lambda m: m["from_cache"]).all()
    assert set(sink["label"].dropna()) <= {"positive", "negative"}
    assert spark.sql(f"DESCRIBE HISTORY delta.`{out / 'result'}`").filter("operation = 'WRITE'").count() == 3


def test_a_delta_source_on_a_processing_time_trigger_keeps_failed_rows_as_error_rows(spark, settings, endpoint, tmp_path):
    source = str(tmp_path / "source")
    spark.createDataFrame([(i, REVIEWS[i]) for i in range(4)], "id long, text string").write.format("delta").save(source)
    with FaultyEndpoint(endpoint.base_url, fail_marker="Cold soup") as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url, "spark.apwa.llm.maxRetries": "0"})
        done = stream(spark, Plan.parse(PLAN), source, str(tmp_path / "out"), local, trigger="processingTime=1 second",
                      timeout=20)
    assert done.batches[:1] == [0] and done.rows == 4
    sink = read_delta(spark, done.sink).toPandas().set_index("id")
    assert sink.loc[1, "classify0_meta"]["status"] == "error" and sink.loc[1, "label"] is None
    assert (sink.drop(index=1)["classify0_meta"].map(lambda m: m["status"]) == "ok").all()
    dead = read_delta(spark, str(tmp_path / "out" / "_dead_letter")).toPandas()
    assert [json.loads(k)["id"] for k in dead["row_key"]] == [1]


def test_a_stream_takes_only_row_level_steps(spark, settings, tmp_path):
    reduce = Plan.parse("steps:\n  - {kind: reduce, template: '{text}'}\n")
    with pytest.raises(PlanError, match="not row-level"):
        stream(spark, reduce, str(tmp_path), str(tmp_path / "out"), settings)


def test_a_stream_from_s3_to_s3_against_a_key_checked_endpoint_writes_every_row_once_and_no_key(
        spark, keyed_endpoint, api_key, s3, tmp_path, monkeypatch):
    import boto3

    from conftest import BUCKET, SMALL

    monkeypatch.chdir(tmp_path)
    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    for n in range(2):
        body = "".join(json.dumps({"id": 3 * n + i, "text": REVIEWS[3 * n + i]}) + "\n" for i in range(3))
        client.put_object(Bucket=BUCKET, Key=f"stream/in/batch{n}.jsonl", Body=body.encode())
    settings = keyed_endpoint.settings.with_overrides(**SMALL, **{"spark.apwa.run.registry": str(tmp_path / "registry")})
    assert settings.api_key() == api_key  # the server refuses requests without it
    done = stream(spark, Plan.parse(PLAN), f"s3a://{BUCKET}/stream/in", f"s3a://{BUCKET}/stream/out", settings)
    assert done.sink == f"s3a://{BUCKET}/stream/out/result" and done.rows == 6
    sink = read_delta(spark, done.sink).toPandas()
    assert sorted(sink["id"]) == list(range(6))
    assert (sink["classify0_meta"].map(lambda m: m["status"]) == "ok").all()
    written = client.list_objects_v2(Bucket=BUCKET, Prefix="stream/out/")["Contents"]
    assert any("_checkpoint" in o["Key"] for o in written) and any("_llm_cache" in o["Key"] for o in written)
    for obj in written:  # tables, cache, checkpoint, manifests: no API key anywhere
        assert api_key.encode() not in client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read(), obj["Key"]
    assert not (tmp_path / "s3a:").exists()
