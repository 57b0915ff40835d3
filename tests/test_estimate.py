"""The measured estimate (issue 17, item 1): the plan runs over its input under a budget of 0 calls,
so answers already in the response cache count as free, a filter's selectivity comes from the
answers the cache holds, and chunk fan-out and a reduce's groups are measured. Against the real
embedded model behind the proxy that counts every completion request."""

from __future__ import annotations

import shutil

import pytest

from apwa_spark.plan.explain import explain
from apwa_spark.plan.ir import Plan
from apwa_spark.plan.run import execute_plan
from apwa_spark.runs import CACHE
from apwa_spark.summarize import summarize_plan
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

pytestmark = pytest.mark.model

REVIEWS = [(i, t) for i, t in enumerate([
    "The soup was cold and the pasta was bland.", "Parking was impossible on a Friday night.",
    "Great pizza with a crisp, thin crust.", "The waiter was rude and the music too loud.",
    "The dessert was the best chocolate cake I have had.", "We waited forty minutes for the bill.",
    "Fresh bread, good olive oil, lovely salad.", "The toilets were dirty."], 1)]
PLAN = ("steps:\n  - {kind: filter, template: 'Is this review about food? {text}'}\n"
        "  - {kind: map, template: 'Name the dish in two words: {text}', output: dish, max_tokens: 8}\n")


def _table(text: str) -> dict[str, dict]:
    """The estimate table of ``explain``'s text: step ──► calls, cached, prompt, completion, rows out."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 9 and cells[2].isdigit():
            rows[cells[0]] = dict(zip(["calls", "cached", "prompt", "completion"], map(int, cells[2:6])),
                                  rows=int(cells[6]) if cells[6] else None, assumption=cells[7])
    return rows


def test_cached_answers_cost_nothing_and_a_filter_keeps_the_share_its_cached_answers_kept(spark, settings, endpoint, tmp_path):
    df = spark.createDataFrame(REVIEWS, "id long, text string")
    plan, out = Plan.parse(PLAN), tmp_path / "out"
    with FaultyEndpoint(endpoint.base_url) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url})
        fresh = _table(explain(df, plan, local, str(out)))
        assert proxy.requests == 0 and not out.exists()  # explain spends nothing and writes nothing
        assert (fresh["filter0"]["calls"], fresh["filter0"]["cached"], fresh["map1"]["calls"]) == (8, 0, 8)
        assert "all rows assumed kept" in fresh["filter0"]["assumption"]

        half = execute_plan(spark, df.filter("id <= 4"), plan, str(out), local)
        kept = half.result.filter("map1_meta.status = 'ok'").count()  # rows the filter kept and the map answered
        paid = proxy.requests
        mixed = _table(explain(df, plan, local, str(out)))
        assert proxy.requests == paid
        assert (mixed["filter0"]["calls"], mixed["filter0"]["cached"]) == (4, 4)  # only the 4 new rows call
        assert mixed["map1"]["cached"] == kept
        assert mixed["map1"]["calls"] == kept  # the 4 new rows, kept at the share the cached answers were
        assert mixed["filter0"]["rows"] == 2 * kept and f"kept {kept / 4:.0%}" in mixed["filter0"]["assumption"]

        execute_plan(spark, df, plan, str(out), local)
        done = _table(explain(df, plan, local, str(out)))
    assert done["total"]["calls"] == 0 and done["filter0"]["cached"] == 8  # a re-run would cost nothing


def test_summarize_estimate_measures_chunks_and_counts_a_cached_tree_as_free(spark, settings, endpoint, small_play, small_run, tmp_path):
    output = tmp_path / "run"
    shutil.copytree(small_run.output, output)  # the job's tables and response cache
    plan = summarize_plan([str(small_play)], settings)
    table = {level.table: level for level in small_run.levels}
    chunks, chunk_calls = table["chunks"].rows, table["chunk"].llm_calls
    with FaultyEndpoint(endpoint.base_url) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url})
        fresh = _table(explain(spark.range(0), plan, local, str(tmp_path / "new")))
        rerun = _table(explain(spark.range(0), plan, local, str(output)))
    assert proxy.requests == 0
    assert fresh["chunks"]["rows"] == chunks  # pieces cut by the endpoint's tokenizer, as the job cut them
    assert fresh["chunk"]["calls"] == chunk_calls < chunks  # the empty scene's piece costs no call
    assert fresh["summaries"]["calls"] > 0
    assert rerun["chunk"]["calls"] == 0 and rerun["chunk"]["cached"] == chunk_calls
    assert rerun["summaries"]["calls"] == 0 and rerun["summaries"]["cached"] > 0
    assert (output / CACHE).exists()


def test_sample_calls_measure_a_filter_and_the_run_does_not_pay_for_them_again(spark, settings, endpoint, tmp_path):
    df = spark.createDataFrame(REVIEWS, "id long, text string")
    plan, out = Plan.parse(PLAN), tmp_path / "out"
    with FaultyEndpoint(endpoint.base_url) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url, "spark.apwa.estimate.sampleCalls": "3"})
        sampled = _table(explain(df, plan, local, str(out)))
        spent = proxy.requests
        run = execute_plan(spark, df, plan, str(out), local)
    filter_meta = run.result.select("filter0_meta.*").toPandas()
    answered = sampled["filter0"]["cached"]
    assert 0 < answered <= 3 and spent <= 6  # at most 3 sample calls per LLM step
    assert sampled["filter0"]["calls"] == 8 - answered and "sample calls" in sampled["filter0"]["assumption"]
    assert "all rows assumed kept" not in sampled["filter0"]["assumption"]  # the share kept is measured
    kept_sampled = int(filter_meta["from_cache"].sum())  # the run took the sampled answers it kept from the cache
    assert kept_sampled <= answered and proxy.requests - spent == int(run.result.selectExpr("sum(map1_meta.llm_calls)").first()[0] or 0) + 8 - answered
