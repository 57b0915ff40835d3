"""The hard budget per job (issue 17, item 2): the driver's budget server, plan runs and the summarize
job against the real embedded model behind the real proxy, which counts every request it gets."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from apwa_spark.config import ConfigError, Settings
from apwa_spark.delta import read_delta
from apwa_spark.llm.budget import BudgetServer
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

REVIEWS = [{"id": i, "text": t} for i, t in enumerate([
    "The soup was cold and the waiter never came back.", "Great pasta, friendly staff, we will return.",
    "Parking was impossible on a Friday night.", "The dessert menu had only two choices.",
    "Our table by the window had a lovely view.", "The bill took forty minutes to arrive."], 1)]
PLAN = "steps:\n  - {kind: map, template: 'Name the topic in two words: {text}', output: topic, max_tokens: 8}\n"


def test_the_budget_server_grants_until_a_limit_then_refuses_and_settles_real_usage():
    s = Settings.load(env={}, overrides={"spark.apwa.budget.maxTokens": "100", "spark.apwa.budget.maxCalls": "5"})
    with BudgetServer(s.budget, s.price) as budget:
        assert budget.reserve(30, 20) is None and budget.reserve(30, 20) is None
        assert budget.reserve(1, 1) == "spark.apwa.budget.maxTokens=100"  # 102 > 100
        budget.settle({"prompt_tokens": 30, "completion_tokens": 20}, {"calls": 2, "prompt_tokens": 25, "completion_tokens": 5})
        assert budget.spent == {"calls": 3, "prompt_tokens": 55, "completion_tokens": 25} and budget.refused == 1
        # over HTTP, only with the secret in the URL
        assert httpx.post(budget.url + "/reserve", json={"prompt_tokens": 1, "completion_tokens": 1}).json()["granted"]
        secretless = budget.url.rsplit("/", 1)[0]
        assert httpx.post(secretless + "/reserve", json={}).status_code == 404
        assert budget.spent["calls"] == 4


def test_max_cost_needs_prices_and_counts_money():
    with pytest.raises(ConfigError, match="maxCost needs prices"):
        Settings.load(env={}, overrides={"spark.apwa.budget.maxCost": "1"})
    s = Settings.load(env={}, overrides={"spark.apwa.budget.maxCost": "0.001", "spark.apwa.price.inputPer1M": "10",
                                         "spark.apwa.price.outputPer1M": "10"})
    with BudgetServer(s.budget, s.price) as budget:  # 0.001 at 10 per 1M tokens: 100 tokens
        assert budget.reserve(60, 40) is None
        assert budget.reserve(1, 0) == "spark.apwa.budget.maxCost=0.001"


def _conf(settings, base_url: str, registry: Path, **extra: str) -> list[str]:
    keys = {"spark.apwa.llm.baseUrl": base_url, "spark.apwa.llm.serverSlots": str(settings.llm.server_slots),
            "spark.apwa.run.registry": str(registry), **extra}
    return [arg for k, v in keys.items() for arg in ("--conf", f"{k}={v}")]


@pytest.mark.model
def test_a_spent_budget_leaves_rows_unevaluated_and_a_larger_rerun_pays_only_for_them(
        spark, settings, endpoint, tmp_path, capsys):
    from apwa_spark.cli import main

    docs, plan, out, registry = tmp_path / "docs.jsonl", tmp_path / "plan.yaml", tmp_path / "out", tmp_path / "registry"
    docs.write_text("".join(json.dumps(d) + "\n" for d in REVIEWS))
    plan.write_text(PLAN)
    with FaultyEndpoint(endpoint.base_url) as proxy:
        args = ["run", "--plan", str(plan), "--input", str(docs), "--output", str(out)]
        assert main([*args, *_conf(settings, proxy.base_url, registry, **{"spark.apwa.budget.maxCalls": "3"})]) == 0
        first_requests = proxy.requests
        printed = capsys.readouterr().out
        result = read_delta(spark, str(out / "result")).toPandas()
        status = result["map0_meta"].map(lambda m: m["status"])
        # the 3 paid calls are answers: ok, or the 270M model's own empty answer on some machines ("EmptyCompletion")
        empty = sum(result["map0_meta"].map(lambda m: m["error_class"] == "EmptyCompletion"))
        assert first_requests == 3 and sorted(status) == ["error"] * empty + ["ok"] * (3 - empty) + ["unevaluated"] * 3
        unevaluated = result[status == "unevaluated"]
        assert unevaluated["topic"].isna().all()
        assert unevaluated["map0_meta"].map(lambda m: m["error_class"] == "BudgetExhausted" and m["llm_calls"] == 0).all()
        assert "3 rows left unevaluated" in printed and "spent 3 calls of 3" in printed
        [manifest] = [json.loads(p.read_text()) for p in registry.glob("*.json")]
        assert manifest["budget"]["calls"] == 3 and manifest["budget"]["refused"] == 3
        assert manifest["status_counts"]["map0"]["unevaluated"] == 3
        assert manifest["errors_by_class"] == ({"EmptyCompletion": empty} if empty else {})  # BudgetExhausted is no error
        paid = set(result.loc[status == "ok", "id"])

        assert main([*args, *_conf(settings, proxy.base_url, registry, **{"spark.apwa.budget.maxCalls": "10"})]) == 0
    # only the rows left undone (and any empty answer, which is not cached); the paid answers came from the cache
    assert proxy.requests - first_requests == 3 + empty
    result = read_delta(spark, str(out / "result")).toPandas().set_index("id")
    meta = result["map0_meta"]
    assert all(m["status"] == "ok" or m["error_class"] == "EmptyCompletion" for m in meta)  # none left unevaluated
    assert {i for i, m in meta.items() if m["from_cache"]} == paid


@pytest.mark.model
def test_summarize_under_a_small_budget_leaves_parents_unevaluated_without_paying_for_partial_ones(
        spark, settings, endpoint, small_play, tmp_path):
    from apwa_spark.summarize import summarize_play

    with FaultyEndpoint(endpoint.base_url) as proxy:
        budgeted = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url, "spark.apwa.budget.maxCalls": "2"})
        run = summarize_play(str(small_play), tmp_path, spark, budgeted)
        paid = proxy.requests
        level0 = read_delta(spark, tmp_path / "chunk").toPandas()
        assert paid == 2 and (level0["status"] == "ok").sum() == 2 and (level0["status"] == "unevaluated").sum() >= 1
        assert run.root["status"] == "unevaluated" and run.root["summary"] is None
        # no reduce was paid for: every reduce table's rows are unevaluated ones or calls-free pass-throughs
        for level in run.levels[2:]:
            rows = read_delta(spark, level.path).toPandas()
            assert rows["llm_calls"].sum() == 0, level.table

        again = summarize_play(str(small_play), tmp_path, spark, settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url}))
    level0 = read_delta(spark, tmp_path / "chunk").toPandas()
    assert again.root["status"] in ("ok", "partial") and again.root["summary"]  # partial: the slice's empty scene
    assert again.levels[1].cache_hits == 2  # the two paid answers were not paid again
    assert (level0["status"] != "unevaluated").all()


@pytest.mark.model
def test_on_a_local_cluster_the_whole_job_stays_within_max_calls(endpoint, tmp_path):
    """Two executor JVMs, each with its own Python workers, draw on the one budget of the driver."""
    from test_jobs import ROOT, spark_submit

    docs, plan = tmp_path / "docs.jsonl", tmp_path / "plan.yaml"
    docs.write_text("".join(json.dumps({"id": i, "text": f"{r['text']} (visit {i})"}) + "\n"
                            for i, r in enumerate(REVIEWS + REVIEWS, 1)))
    plan.write_text(PLAN)
    with FaultyEndpoint(endpoint.base_url) as proxy:
        done = spark_submit(["--master", "local-cluster[2,1,1024]", "--conf", "spark.executor.memory=1g",
                             "--conf", "spark.sql.files.maxPartitionBytes=256",  # several partitions, on both executors
                             "--conf", f"spark.apwa.llm.baseUrl={proxy.base_url}", "--conf", "spark.apwa.budget.maxCalls=5",
                             "--conf", f"spark.apwa.run.registry={tmp_path / 'registry'}",
                             str(ROOT / "jobs/query.py"), "--plan", str(plan), "--input", str(docs),
                             "--output", str(tmp_path / "out")], {}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert proxy.requests == 5
    assert "7 rows left unevaluated" in done.stdout and "spent 5 calls of 5" in done.stdout


@pytest.mark.model
def test_in_a_plan_of_two_steps_a_row_left_unevaluated_stays_unevaluated_in_the_next_step(spark, settings, endpoint, tmp_path):
    from apwa_spark.plan.ir import Plan
    from apwa_spark.plan.run import run_plan

    plan = Plan.parse(PLAN + "  - {kind: map, template: 'Say in one word if this is good or bad: {topic}', output: verdict, "
                             "max_tokens: 4}\n")
    df = spark.createDataFrame([(d["id"], d["text"]) for d in REVIEWS], "id long, text string")
    with FaultyEndpoint(endpoint.base_url) as proxy:
        budgeted = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url, "spark.apwa.budget.maxCalls": "3"})
        rows = run_plan(df, plan, tmp_path, budgeted).collect()
        assert proxy.requests == 3
        for r in rows:  # never an error: a row the first step left undone is undone in the second too (was NullInput)
            assert r.map0_meta.status in ("ok", "unevaluated") and r.map1_meta.status in ("ok", "unevaluated")
            if r.map0_meta.status == "unevaluated":
                assert r.map1_meta.status == "unevaluated" and r.map1_meta.error_class == "BudgetExhausted"
                assert r.map1_meta.llm_calls == 0
        assert sum(r.map0_meta.status == "unevaluated" for r in rows) >= 1
        paid = proxy.requests
        rows = run_plan(df, plan, tmp_path, budgeted.with_overrides(**{"spark.apwa.budget.maxCalls": "100"})).collect()
    assert not any("unevaluated" in (r.map0_meta.status, r.map1_meta.status) for r in rows)
    assert proxy.requests - paid <= 2 * len(REVIEWS) - paid  # the paid answers came from the cache


@pytest.mark.model
def test_two_executors_keep_every_60_second_window_under_the_rpm(endpoint, tmp_path):
    """local-cluster[2,1,1024]: each executor's Python workers take their share of spark.apwa.llm.rpm;
    the proxy's arrival times show no sliding minute with more requests than the job's rpm."""
    from test_jobs import ROOT, spark_submit

    rpm, rows = 12, 15
    docs, plan = tmp_path / "docs.jsonl", tmp_path / "plan.yaml"
    docs.write_text("".join(json.dumps({"id": i, "text": f"Review {i}: the soup was cold."}) + "\n" for i in range(rows)))
    plan.write_text(PLAN)
    with FaultyEndpoint(endpoint.base_url) as proxy:
        done = spark_submit(["--master", "local-cluster[2,1,1024]", "--conf", "spark.executor.memory=1g",
                             "--conf", "spark.sql.files.maxPartitionBytes=256",  # several partitions, on both executors
                             "--conf", f"spark.apwa.llm.baseUrl={proxy.base_url}", "--conf", f"spark.apwa.llm.rpm={rpm}",
                             "--conf", "spark.apwa.cache.enabled=false",
                             "--conf", f"spark.apwa.run.registry={tmp_path / 'registry'}",
                             str(ROOT / "jobs/query.py"), "--plan", str(plan), "--input", str(docs),
                             "--output", str(tmp_path / "out")], {}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    arrivals = [t for t, _ in proxy.arrivals]
    assert len(arrivals) >= rows > rpm  # the job outlasted a minute at that rate
    assert max(sum(1 for t in arrivals if s <= t < s + 60) for s in arrivals) <= rpm, [round(t - arrivals[0], 1) for t in arrivals]
    assert arrivals[-1] - arrivals[0] >= 60


@pytest.mark.model
def test_a_sql_job_under_a_budget_leaves_rows_null_without_failing_and_a_larger_rerun_pays_only_for_them(
        spark, settings, endpoint, tmp_path, capsys, request):
    from apwa_spark.cli import main

    docs, out, registry = tmp_path / "docs.jsonl", tmp_path / "out", tmp_path / "registry"
    docs.write_text("".join(json.dumps(d) + "\n" for d in REVIEWS))
    from apwa_spark.sql import register

    query = ("SELECT id, apwa_classify_or_error(text, array('positive', 'negative')) AS label FROM docs")
    with FaultyEndpoint(endpoint.base_url) as proxy:
        args = ["sql", "--table", f"docs={docs}", "--output", str(out), query]
        request.addfinalizer(lambda: (spark.catalog.dropTempView("docs"), register(spark, settings)))  # the shared session as it was
        assert main([*args, *_conf(settings, proxy.base_url, registry, **{"spark.apwa.budget.maxCalls": "2",
                                                                          "spark.apwa.sql.failOnError": "true"})]) == 0
        first = proxy.requests
        printed = capsys.readouterr().out
        result = read_delta(spark, str(out)).toPandas()
        refused = result[result["label"].map(lambda v: (v["errorMessage"] or "").startswith("BudgetExhausted"))]
        assert first == 2 and len(refused) == 4 and refused["label"].map(lambda v: v["result"] is None).all()
        assert "4 calls refused" in printed and "spent 2 calls of 2" in printed
        assert not (out / "_dead_letter").exists() or read_delta(spark, str(out / "_dead_letter")).count() == 0

        assert main([*args, *_conf(settings, proxy.base_url, registry, **{"spark.apwa.budget.maxCalls": "10"})]) == 0
    assert proxy.requests - first == 4  # the 2 paid answers came from the response cache
    result = read_delta(spark, str(out)).toPandas()
    assert result["label"].map(lambda v: v["result"] in ("positive", "negative")).all()


@pytest.mark.model
def test_sql_functions_registered_with_a_budget_share_it_for_the_session(spark, settings, endpoint):
    from apwa_spark.sql import register

    with FaultyEndpoint(endpoint.base_url) as proxy:
        try:
            register(spark, settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url,
                                                       "spark.apwa.budget.maxCalls": "1"}))
            texts = ", ".join(f"({r['id']}, '{r['text']}')" for r in REVIEWS[:3])
            query = f"SELECT id, apwa_classify_or_error(text, array('positive', 'negative')) AS label FROM VALUES {texts} AS t(id, text)"
            first = spark.sql(query).toPandas()
            again = spark.sql(query.replace("positive', 'negative", "good', 'bad")).toPandas()  # new prompts, same session budget
        finally:
            register(spark, settings)  # the shared session's functions without a budget again
    messages = [v["errorMessage"] or "" for v in [*first["label"], *again["label"]]]
    assert proxy.requests == 1 and sum(m.startswith("BudgetExhausted") for m in messages) == 5
