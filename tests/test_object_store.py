"""Tables on an object store: a real S3-compatible server (moto's server mode) on loopback, reached by
Spark through the S3A connector (hadoop-aws from Maven Central) and by delta-rs through storage options."""

import json
import tempfile
from pathlib import Path

import boto3
import pytest
from deltalake import DeltaTable

from apwa_spark.delta import read_delta, write_delta
from apwa_spark.inputs import read_input
from apwa_spark.runs import CACHE, DEAD_LETTER
from apwa_spark.storage import storage_options

from conftest import BUCKET

ROOT = Path(__file__).resolve().parent.parent


def _no_local_scheme_folders(cwd: Path, *places: Path) -> None:
    """``Path("s3a://b/x").resolve()`` makes ``<cwd>/s3a:/b/x``: no such folder anywhere under the
    working directory, nor at the top of the repository or the temporary folder."""
    assert not [p for p in cwd.rglob("*:") if p.name in ("s3:", "s3a:")]
    for place in places:
        for scheme in ("s3:", "s3a:"):
            assert not (place / scheme).exists(), place / scheme


def test_storage_options_come_from_the_sessions_s3a_settings(spark, s3):
    assert storage_options(spark, f"s3a://{BUCKET}/x") == s3
    assert storage_options(spark, "/tmp/x") == {}


@pytest.mark.parametrize("engine", ["native", "deltars"])
def test_tables_on_s3_read_back_through_spark_and_deltalake(spark, s3, engine, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"s3a://{BUCKET}/tables/{engine}"
    df = spark.range(20).selectExpr("id", "cast(id as string) as s").repartition(2)
    write_delta(df, uri, engine=engine)
    write_delta(spark.range(20, 23).selectExpr("id", "cast(id as string) as s"), uri, mode="append", engine=engine)
    assert sorted(r.id for r in read_delta(spark, uri, engine=engine).collect()) == list(range(23))
    table = DeltaTable(uri, storage_options=s3)
    assert table.version() == 1 and sorted(table.to_pandas()["id"]) == list(range(23))
    assert sorted(r.id for r in read_input(spark, uri).collect()) == list(range(23))
    _no_local_scheme_folders(tmp_path, ROOT, Path(tempfile.gettempdir()))


@pytest.mark.model
def test_summarize_slice_writes_levels_cache_and_dead_letter_to_s3(spark, settings, tiny_play, s3, tmp_path, monkeypatch):
    from apwa_spark.summarize import summarize_play

    monkeypatch.chdir(tmp_path)
    out = f"s3a://{BUCKET}/runs/slice"
    result = summarize_play(str(tiny_play), out, spark, settings)
    assert result.output == out and result.root["status"] == "partial"  # the tiny play's empty scene
    for level in result.levels:
        assert level.path == f"{out}/{level.table}"
        table = DeltaTable(level.path, storage_options=s3)
        assert len(table.to_pandas()) == level.rows == read_delta(spark, level.path).count(), level.table
    cache = DeltaTable(f"{out}/{CACHE}", storage_options=s3).to_pandas()  # appended by the executors
    assert len(cache) >= sum(level.llm_calls for level in result.levels) > 0
    dead = DeltaTable(f"{out}/{DEAD_LETTER}", storage_options=s3).to_pandas()
    assert len(dead) == sum(result.errors_by_class.values()) and "EmptyInput" in set(dead["error_class"])
    assert (dead["run_id"] == result.run_id).all()
    body = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1").get_object(
        Bucket=BUCKET, Key=f"runs/slice/_runs/{result.run_id}.json")["Body"].read()
    assert json.loads(body)["output"] == out
    # an incremental re-run on S3: no call, and the node tables above the leaves keep their version (the
    # empty scene's leaf is an error row, evaluated again without a call, so chunks and leaves get a commit)
    versions = {level.table: DeltaTable(level.path, storage_options=s3).version() for level in result.levels}
    again = summarize_play(str(tiny_play), out, spark, settings)
    assert sum(level.llm_calls for level in again.levels) == 0 and again.root["node_id"] == result.root["node_id"]
    above = [level for level in again.levels if level.table not in ("chunks", "chunk")]
    assert above and all(not level.committed and level.kept == level.rows for level in above)
    assert all(DeltaTable(level.path, storage_options=s3).version() == versions[level.table] for level in above)
    _no_local_scheme_folders(tmp_path, ROOT, Path(tempfile.gettempdir()))


def test_read_input_takes_object_store_folders_and_catalog_tables(spark, s3):
    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    for key, body in {"docs/a.md": "# A\nfirst document", "docs/b.txt": "second document", "docs/c.bin": "x"}.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body.encode())
    rows = read_input(spark, f"s3a://{BUCKET}/docs").collect()  # read by Spark's tasks, one row per file
    assert [(r.path.rsplit("/", 1)[-1], r.text) for r in rows] == [("a.md", "# A\nfirst document"),
                                                                   ("b.txt", "second document")]
    assert rows[0].path.startswith(f"s3a://{BUCKET}/docs/")
    spark.sql("CREATE SCHEMA IF NOT EXISTS apwa_test_inputs")
    spark.range(3).write.format("delta").mode("overwrite").saveAsTable("apwa_test_inputs.numbers")
    assert read_input(spark, "apwa_test_inputs.numbers").count() == 3
    with pytest.raises(FileNotFoundError, match="catalog table name"):
        read_input(spark, "apwa_test_inputs.missing")
