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


def test_an_incremental_rerun_into_a_catalog_schema_merges_only_what_changed(spark, settings, small_play, small_run, tmp_path):
    """Incremental re-runs (``test_incremental.py`` runs them on paths) into managed tables: an
    unchanged re-run commits nothing and calls nothing; an edit of ACT II's Prologue makes its
    leaves and their ancestors again, one MERGE per changed table, and keeps every other node."""
    schema, files = "apwa_test_incremental", str(tmp_path / "files")
    play = tmp_path / small_play.name  # same file name: same play id, node ids and row keys as the slice
    text = small_play.read_text(encoding="utf-8")
    play.write_text(text, encoding="utf-8")
    cached = _cached(settings, small_run)
    first = summarize_play(str(play), files, spark, cached, output_schema=schema)
    history = lambda t: spark.sql(f"DESCRIBE HISTORY {schema}.`{t}` LIMIT 1").first()  # noqa: E731
    before = {t.table: history(t.table).version for t in first.levels}
    again = summarize_play(str(play), files, spark, cached, output_schema=schema)
    assert sum(t.llm_calls for t in again.levels) == 0 and not any(t.committed for t in again.levels)
    assert {t: history(t).version for t in before} == before and again.root["node_id"] == first.root["node_id"]

    nodes = ("chunk", "scene_r1", "act_r1", "play_r1")
    rows = lambda t: {r.node_id: r.asDict(recursive=True) for r in spark.table(f"{schema}.`{t}`").collect()}  # noqa: E731
    old = {t: rows(t) for t in nodes}
    act2 = text.index("## ACT II")
    edited = text[:act2] + text[act2:].replace("love", "LOVE", 1)
    assert edited != text
    play.write_text(edited, encoding="utf-8")
    rerun = summarize_play(str(play), files, spark, cached, output_schema=schema)
    new = {t: rows(t) for t in nodes}
    remade = {t: sorted(i for i, r in new[t].items() if r["run_id"] == rerun.run_id) for t in nodes}
    prologue = f"{play.stem}/ACT II/PROLOGUE"
    assert remade["chunk"] and all(i.startswith(f"chunk:{prologue}#") for i in remade["chunk"])
    assert remade["scene_r1"] == [f"scene:{play.stem}/ACT II/{prologue}:r1"]
    assert remade["act_r1"] == [f"act:{play.stem}/ACT II:r1"] and remade["play_r1"] == [f"play:{play.stem}:r1"]
    assert sum(t.llm_calls for t in rerun.levels) == sum(new[t][i]["llm_calls"] for t in nodes for i in remade[t]) > 0
    for table in nodes:
        assert {i: r for i, r in new[table].items() if i not in remade[table]} == \
            {i: r for i, r in old[table].items() if i not in remade[table]}, table
        assert (history(table).version, history(table).operation) == (before[table] + 1, "MERGE"), table
