"""Run bookkeeping for every job (issue 16, item 5): plan runs (``run``, ``redact``, ``extract``, the
API) and ``sql --output`` write a manifest, index it in the run registry, append their error rows to
``<output>/_dead_letter`` and can be re-driven with ``apwa-spark retry-failed``. Faults come from the
real faulty proxy in front of the real embedded model; the NULL and blank rows make no call at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apwa_spark.delta import read_delta
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

pytestmark = pytest.mark.model

DOCS = [{"id": 1, "text": "The soup was cold and the waiter never came back."},
        {"id": 2, "text": "Great pasta, friendly staff, we will return."},
        {"id": 3, "text": "Parking was impossible on a Friday night."},
        {"id": 4, "text": "The dessert menu had only two choices."},
        {"id": 5, "text": None}]
PLAN = "steps:\n  - {kind: map, template: 'Name the topic in two words: {text}', output: topic, max_tokens: 8}\n"


def _conf(settings, base_url: str, registry: Path, **extra: str) -> list[str]:
    keys = {"spark.apwa.llm.baseUrl": base_url, "spark.apwa.llm.serverSlots": str(settings.llm.server_slots),
            "spark.apwa.run.registry": str(registry), **extra}
    return [arg for k, v in keys.items() for arg in ("--conf", f"{k}={v}")]


def _manifests(registry: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(registry.glob("*.json"))]


def test_plan_run_writes_manifest_and_dead_letter_and_retry_failed_redrives_the_failed_rows(
        spark, settings, endpoint, tmp_path):
    from apwa_spark.cli import main

    docs, plan, out, registry = tmp_path / "docs.jsonl", tmp_path / "plan.yaml", tmp_path / "out", tmp_path / "registry"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    plan.write_text(PLAN)
    with FaultyEndpoint(endpoint.base_url, seed=3, non_json=0.5) as faulty:
        conf = _conf(settings, faulty.base_url, registry, **{"spark.apwa.llm.maxRetries": "0"})
        assert main(["run", "--plan", str(plan), "--input", str(docs), "--output", str(out), *conf]) == 0
    failed_calls = faulty.faults["non_json"]
    assert faulty.requests == 4 and 1 <= failed_calls <= 3, faulty.faults  # the NULL row made no call

    [first] = _manifests(registry)
    assert json.loads((out / "_runs" / f"{first['run_id']}.json").read_text()) == first
    assert first["job"] == "run" and first["input"] == str(docs) and first["key"] == "id" and first["rows"] == 5
    assert first["plan"]["steps"][0]["template"].startswith("Name the topic") and len(first["plan_id"]) == 16
    # the proxy's garbage bodies, the NULL row, and any row the model itself answered with no text (the 270M
    # model's answers differ from machine to machine: "EmptyCompletion" on one, a topic on another)
    errors = first["errors_by_class"]
    empty = errors.get("EmptyCompletion", 0)
    assert errors["NullInput"] == 1 and sum(errors.values()) == failed_calls + 1 + empty
    assert set(errors) <= {"NullInput", "EmptyCompletion", "MalformedResponse"} and errors.get("MalformedResponse") == failed_calls, errors
    assert first["status_counts"] == {"map0": {"ok": 4 - failed_calls - empty, "partial": 0,
                                               "error": failed_calls + 1 + empty, "unevaluated": 0}}
    assert first["embedded"] is False and "spark.apwa.llm.apiKey" not in first["settings"]
    dead = read_delta(spark, str(out / "_dead_letter")).toPandas()
    assert list(dead.columns) == ["run_id", "step", "row_key", "error_class", "error"]
    assert (dead["run_id"] == first["run_id"]).all() and (dead["step"] == "map0").all() and len(dead) == sum(errors.values())
    result = read_delta(spark, str(out / "result")).toPandas()
    failed_ids = set(result.loc[result["map0_meta"].map(lambda m: m["status"] == "error"), "id"])
    assert {json.loads(k)["id"] for k in dead["row_key"]} == failed_ids  # the key finds each row in the result

    with FaultyEndpoint(endpoint.base_url) as healthy:
        assert main(["retry-failed", first["run_id"], *_conf(settings, healthy.base_url, registry)]) == 0
    assert healthy.requests == failed_calls + empty  # ok rows came from the cache; the NULL row still makes no call
    result = read_delta(spark, str(out / "result")).toPandas().set_index("id")
    meta = result["map0_meta"]
    assert meta[5]["error_class"] == "NullInput"
    # every row the proxy broke was sent again and answered by the model: ok, or the model's own empty answer
    assert all(m["status"] == "ok" or m["error_class"] == "EmptyCompletion" for m in meta.drop(5))
    assert meta.map(lambda m: m["from_cache"]).sum() == 4 - failed_calls - empty
    retry = next(m for m in _manifests(registry) if m["run_id"] != first["run_id"])
    assert set(retry["errors_by_class"]) <= {"NullInput", "EmptyCompletion"} and retry["plan_id"] == first["plan_id"]


def test_api_run_keys_rows_by_hash_and_retry_failed_says_it_cannot_reread_a_dataframe(
        spark, settings, tmp_path, capsys, monkeypatch):
    from apwa_spark import runs
    from apwa_spark.cli import main
    from apwa_spark.plan.ir import Plan
    from apwa_spark.plan.run import run_plan

    def read_back(*_):
        raise AssertionError("the dead letter read the result table back; its write job observed the error rows")

    monkeypatch.setattr(runs, "plan_failures", read_back)  # the run's own dead letter must not need it
    registry = tmp_path / "registry"
    df = spark.createDataFrame([(None, "x"), (None, "y")], "text string, tag string")  # NullInput rows: no calls
    local = settings.with_overrides(**{"spark.apwa.run.registry": str(registry)})
    result = run_plan(df, Plan.parse(PLAN), tmp_path / "out", local).toPandas()
    [manifest] = _manifests(registry)
    assert manifest["job"] == "plan" and manifest["input"] is None and manifest["key"] == "row_key"
    assert manifest["errors_by_class"] == {"NullInput": 2}
    dead = read_delta(spark, str(tmp_path / "out" / "_dead_letter")).toPandas()
    assert sorted(json.loads(k)["row_key"] for k in dead["row_key"]) == sorted(result["row_key"])
    assert result["row_key"].str.fullmatch("[0-9a-f]{16}").all() and result["row_key"].is_unique
    capsys.readouterr()
    assert main(["retry-failed", manifest["run_id"], "--conf", f"spark.apwa.run.registry={registry}"]) == 2
    error = capsys.readouterr().err
    assert "no source" in error and "apwa_spark.run(df, plan, output=" in error


def test_sql_job_writes_manifest_cache_and_dead_letter_of_or_error_columns_and_retries(spark, settings, endpoint, tmp_path):
    from apwa_spark.cli import main

    docs, out, registry = tmp_path / "docs.jsonl", tmp_path / "labels", tmp_path / "registry"
    docs.write_text(json.dumps({"id": 1, "text": "Describe this review in three words: The soup was cold."}) + "\n" + json.dumps({"id": 2, "text": ""}) + "\n")
    statement = "SELECT id, apwa_complete_or_error(text, map('maxTokens', '16')) AS answer FROM docs"  # '' : EmptyInput
    with FaultyEndpoint(endpoint.base_url) as proxy:
        conf = _conf(settings, proxy.base_url, registry)
        assert main(["sql", "--table", f"docs={docs}", "--output", str(out), *conf, statement]) == 0
        calls = proxy.requests
        [manifest] = _manifests(registry)
        assert main(["retry-failed", manifest["run_id"], *conf]) == 0
    assert calls == 1 and proxy.requests == calls  # the blank row makes no call; the retry's ok row is cached
    assert manifest["job"] == "sql" and manifest["statements"] == [statement] and manifest["rows"] == 2
    assert manifest["tables"] == {"docs": str(docs)} and manifest["errors_by_class"] == {"EmptyInput": 1}
    assert (out / "_llm_cache" / "_delta_log").is_dir() and (out / "_runs" / f"{manifest['run_id']}.json").is_file()
    dead = read_delta(spark, str(out / "_dead_letter")).toPandas()
    first = dead[dead["run_id"] == manifest["run_id"]]
    assert list(first["row_key"]) == ['{"id":2}'] and list(first["step"]) == ["answer"]
    assert read_delta(spark, str(out)).count() == 2


@pytest.mark.parametrize("observed_max", [1_000, 2])
def test_a_plan_runs_dead_letter_comes_from_its_result_write_and_is_read_back_only_past_the_observed_bound(
        spark, tmp_path, monkeypatch, observed_max):
    import shutil

    from apwa_spark import runs
    from apwa_spark.config import Settings
    from apwa_spark.delta import TableStore
    from apwa_spark.plan.ir import Plan
    from apwa_spark.runs import (JobContext, close_plan_run, failure_columns, failure_keys, observed, plan_failures,
                                 status_columns)

    monkeypatch.setattr(runs, "OBSERVED_FAILURES_MAX", observed_max)
    plan = Plan.parse(PLAN)
    meta = "struct<status: string, error_class: string, error: string>"
    result = spark.createDataFrame(
        [(1, ("ok", None, None)), (2, ("error", "EmptyCompletion", "EmptyCompletion: the model answered nothing")),
         (3, ("error", "NullInput", "NullInput: text is NULL; no LLM call made")), (4, ("ok", None, None)),
         (5, ("error", "EndpointError", "EndpointError: 500 from the endpoint"))], f"id long, map0_meta {meta}")
    store = TableStore.create(spark, str(tmp_path / "out"), "native")
    watched, counted = observed(result, status_columns(result.columns, ["map0"]))
    watched, seen = observed(watched, failure_columns(watched, ["map0"], failure_keys(plan, "id")))
    store.write(watched, "result")
    expected = plan_failures(store.read("result"), "r1", ["map0"], ["id"]).toPandas()
    if observed_max == 1_000:  # every error row was observed: the result is not read again, so it may be gone
        shutil.rmtree(tmp_path / "out" / "result")
    assert len(seen()["failed.map0"]) == min(3, observed_max)

    settings = Settings.load(env={}).with_overrides(**{"spark.apwa.run.registry": str(tmp_path / "registry"),
                                                       "spark.apwa.cache.enabled": "false"})
    job = JobContext(settings, "r1", 2, plan.plan_id)
    errors = close_plan_run(store, job, plan, {"key": "id"}, 1.0, None, (), counted(), seen())
    assert errors == {"EmptyCompletion": 1, "NullInput": 1, "EndpointError": 1}
    dead = store.read("_dead_letter").toPandas()
    if observed_max == 1_000:  # the observed rows went to Spark as one local partition: one file
        assert len(store.files("_dead_letter")) == 1
    assert list(dead.columns) == list(expected.columns)
    assert sorted(map(tuple, dead.values.tolist())) == sorted(map(tuple, expected.values.tolist()))
    assert {json.loads(k)["id"] for k in dead["row_key"]} == {2, 3, 5}


def test_a_failing_plan_on_the_delta_rs_fallback_writes_its_observed_dead_letter_beside_the_cache_compaction(
        spark, settings, tmp_path, monkeypatch):
    """The fallback writes the run's tables, its dead letter (the failed rows its result write
    observed, never read back from the result) and, on a thread beside it, the compacted response cache."""
    from deltalake import DeltaTable

    from apwa_spark import runs
    from apwa_spark.plan.ir import Plan
    from apwa_spark.plan.run import run_plan

    def read_back(*_):
        raise AssertionError("the dead letter read the result table back; its write job observed the error rows")

    monkeypatch.setattr(runs, "plan_failures", read_back)
    df = spark.createDataFrame(DOCS + [{"id": 6, "text": "   "}], "id long, text string")
    fallback = settings.with_overrides(**{"spark.apwa.delta.engine": "deltars"})
    rows = run_plan(df, Plan.parse(PLAN), str(tmp_path / "out"), fallback).collect()
    failed = {r.id: r.map0_meta.error_class for r in rows if r.map0_meta.status == "error"}
    assert failed[5] == "NullInput" and failed[6] == "EmptyInput"  # the NULL row and the blank one, neither sent
    dead = DeltaTable(str(tmp_path / "out" / "_dead_letter"))
    assert "delta-rs" in dead.history()[0].get("clientVersion", "")  # written by the fallback, not delta-spark
    letters = dead.to_pandas()
    assert len(letters) == len(failed)
    assert {json.loads(k)["id"]: c for k, c in zip(letters["row_key"], letters["error_class"])} == failed
    assert len(dead.file_uris()) == 1  # the observed rows went to Spark as one local partition: one file
    cache = DeltaTable(str(tmp_path / "out" / "_llm_cache"))
    assert cache.history()[0]["operation"] == "OPTIMIZE"  # compacted at the run's end
    assert len(cache.file_uris()) == 1 and len(cache.to_pandas()) == sum(r.map0_meta.status == "ok" for r in rows)


def test_a_tables_figures_count_this_runs_calls_only_whatever_characters_its_run_id_holds(spark, tmp_path):
    from apwa_spark.delta import TableStore
    from apwa_spark.runs import write_table

    run_id = "r'1\\x"  # a quote and a backslash: the figures' SQL must not take them for its own
    df = spark.createDataFrame(
        [(run_id, "ok", 1, 10, 5, 2, False), ("r2", "error", 1, 3, 0, 0, True), (None, "unevaluated", 0, 0, 0, 0, None)],
        "run_id string, status string, llm_calls long, prompt_tokens long, completion_tokens long, cached_tokens long, "
        "from_cache boolean")
    tables = []
    write_table(TableStore.create(spark, str(tmp_path / "out"), "native"), tables, "t", df, run_id=run_id)
    stats = tables[0]
    assert (stats.rows, stats.llm_calls, stats.prompt_tokens, stats.completion_tokens, stats.cached_tokens) == (3, 1, 10, 5, 2)
    assert (stats.errors, stats.unevaluated, stats.cache_hits, stats.kept) == (1, 1, 0, 2)  # kept: r2's row and the NULL one
