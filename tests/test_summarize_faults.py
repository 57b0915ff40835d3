"""The summarize job against a down endpoint and one that answers garbage."""

import pytest

from apwa_spark.config import Settings
from apwa_spark.delta import read_delta
from apwa_spark.llm.client import EndpointUnavailableError
from apwa_spark.summarize import summarize_play
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

pytestmark = pytest.mark.model


def test_down_endpoint_fails_fast_naming_the_url(spark, small_play, tmp_path):
    down = Settings.load(env={}, overrides={"spark.apwa.llm.baseUrl": "http://127.0.0.1:9/v1"})
    with pytest.raises(EndpointUnavailableError, match=r"127\.0\.0\.1:9/v1.*apwa-spark serve"):
        summarize_play(str(small_play), tmp_path, spark, down)


def test_non_json_answers_become_error_rows_and_the_job_finishes(spark, settings, endpoint, small_play, tmp_path):
    with FaultyEndpoint(endpoint.base_url, non_json=1.0) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url, "spark.apwa.llm.maxRetries": "0"})
        run = summarize_play(str(small_play), tmp_path, spark, local, max_scenes=2)
    chunks = read_delta(spark, tmp_path / "chunks").count()
    level0 = read_delta(spark, tmp_path / "chunk").toPandas()
    assert len(level0) == chunks  # no row lost
    assert (level0["status"] == "error").all()
    assert proxy.requests == chunks  # each chunk's UDF ran once: no duplicate evaluation
    assert run.root["status"] == "error" and "ChildrenFailed" in run.root["error"]
    assert run.levels[1].errors == chunks
