"""Jobs on the delta-rs fallback and into a catalog schema, with the real embedded model. The summarize
runs reuse the shared native run's response cache, so they make no LLM calls."""

import json

import pytest
from deltalake import DeltaTable

from apwa_spark.cli import main
from apwa_spark.delta import CDF, read_delta
from apwa_spark.runs import CACHE, DEAD_LETTER
from apwa_spark.summarize import summarize_play

pytestmark = pytest.mark.model


def _cached(settings, small_run, **keys):
    return settings.with_overrides(**{"spark.apwa.cache.path": f"{small_run.output}/{CACHE}", **keys})


def test_summarize_slice_on_the_delta_rs_fallback_matches_the_native_run(spark, settings, small_play, small_run, tmp_path):
    fallback = _cached(settings, small_run, **{"spark.apwa.delta.engine": "deltars"})
    result = summarize_play(str(small_play), str(tmp_path / "out"), spark, fallback)
    assert [level.table for level in result.levels] == [level.table for level in small_run.levels]
    assert sum(level.llm_calls for level in result.levels) == 0
    for mine, native in zip(result.levels, small_run.levels):
        assert "delta-rs" in DeltaTable(mine.path).history()[0].get("clientVersion", ""), mine.table
        assert "Delta-Lake" in DeltaTable(native.path).history()[0].get("engineInfo", ""), native.table
        rows = lambda path: sorted((f"{r.scene_id}#{r.chunk_index}", r.chunk) if mine.table == "chunks" else (r.node_id, r.summary)
                                   for r in read_delta(spark, path).collect())
        assert rows(mine.path) == rows(native.path), mine.table
    dead = DeltaTable(str(tmp_path / "out" / DEAD_LETTER)).to_pandas()  # appended by the fallback
    native_dead = DeltaTable(f"{small_run.output}/{DEAD_LETTER}").to_pandas()
    node_ids = lambda table: sorted(json.loads(k)["node_id"] for k in table["row_key"])
    assert node_ids(dead) == node_ids(native_dead) and "EmptyInput" in set(dead["error_class"])


def test_summarize_into_a_catalog_schema_makes_one_managed_table_per_level(spark, settings, small_play, small_run, tmp_path):
    result = summarize_play(str(small_play), str(tmp_path / "files"), spark, _cached(settings, small_run),
                            output_schema="apwa_test_runs")
    tables = {t.name: t.tableType for t in spark.catalog.listTables("apwa_test_runs") if not t.isTemporary}
    assert tables == {**{level.table: "MANAGED" for level in result.levels}, "result": "MANAGED", DEAD_LETTER: "MANAGED"}
    for level in result.levels:
        assert level.path == f"apwa_test_runs.`{level.table}`"
        assert spark.table(level.path).count() == level.rows
        assert spark.sql(f"DESCRIBE HISTORY {level.path}").count() == 1  # one commit per table write
        assert spark.sql(f"DESCRIBE DETAIL {level.path}").first().properties[CDF] == "true"
    assert not (tmp_path / "files" / "chunk").exists()
    assert list((tmp_path / "files" / "_runs").glob("*.json"))  # the manifest stays with the run's files


def test_job_output_schema_flag_writes_the_result_as_a_managed_table(spark, settings, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": 1, "text": "Mail maria.lopez@example.com today."}) + "\n")
    code = main(["redact", "--input", str(docs), "--output", str(tmp_path / "run"), "--output-schema", "apwa_test_cli",
                 "--no-model", "--entities", "email", "--conf", f"spark.apwa.llm.baseUrl={settings.llm.base_url}"])
    assert code == 0
    [row] = spark.table("apwa_test_cli.result").collect()
    assert "[EMAIL]" in row.redacted
    assert {t.name: t.tableType for t in spark.catalog.listTables("apwa_test_cli") if not t.isTemporary} == {"result": "MANAGED"}
