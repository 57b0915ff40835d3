"""Plans of several steps: clause splitting, the cheap relational path (where / select), chaining,
the whole-plan planner, and compound queries planned and run end to end with the real model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from apwa_spark.plan.metadata import table_metadata
from apwa_spark.plan.planner import plan_query, split_clauses, whole_plan
from apwa_spark.plan.run import run_plan
from apwa_spark.plan.step import PlanningContext, step_kinds
from apwa_spark.steps.where import build_where, route_where
from apwa_spark.steps.select import route_select
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks" / "data"))
from compound_queries import QUERIES  # noqa: E402

REVIEWS = [(i, "ann" if i % 2 else "bob",
            f"Review {i}: the soup was {'great and hot' if i % 2 else 'cold and bland'}, and the waiter was "
            f"{'kind' if i % 2 else 'rude'}. Call Ann Lee at 555-201-33{i:02d} or ann{i}@example.com.")
           for i in range(4)]


def _ctx(clause: str, columns: dict[str, str], text: str = "text", values: dict | None = None) -> PlanningContext:
    return PlanningContext(query=clause, words=[], numbers=[], columns=columns, text_column=text, free=False,
                           values=values or {})


def test_compound_queries_split_into_their_clauses():
    assert split_clauses("Keep only the scenes in which someone dies, then summarize all of them.") == [
        "Keep only the scenes in which someone dies", "Summarize all of them."]
    assert split_clauses("Redact the names, classify each message as complaint or praise, then keep only the complaints.") == [
        "Redact the names", "Classify each message as complaint or praise", "Keep only the complaints."]
    assert split_clauses("Split each scene into chunks of 1500 characters and write a summary of each chunk.") == [
        "Split each scene into chunks of 1500 characters", "Write a summary of each chunk."]
    # one clause: a list joined by "and", a verb used as a noun before "columns", a question without a verb
    assert split_clauses("Redact names, e-mail addresses and phone numbers.") == ["Redact names, e-mail addresses and phone numbers."]
    assert len(split_clauses("Classify each message, then keep only the id and label columns.")) == 2
    assert split_clauses("Which scenes take place at night? Keep those.") == ["Which scenes take place at night? Keep those."]


def test_the_query_set_has_30_compound_queries_over_four_inputs_with_known_kinds():
    kinds = set(step_kinds())
    assert len(QUERIES) >= 30 and {source for source, _, _ in QUERIES} == {"play", "pii", "docs", "modules"}
    for _, query, expected in QUERIES:
        assert len(expected) >= 2 and set(expected) <= kinds, query
        assert len(split_clauses(query)) == len(expected), query  # one clause per expected step


def test_keep_clauses_the_columns_answer_become_where_predicates_that_spark_runs(spark):
    df = spark.createDataFrame([(1, "pyarrow", "complaint"), (12, "Pandas", "praise"), (30, "pytest", "not spam")],
                               "id long, name string, label string")
    columns = {"id": "bigint", "name": "string", "label": "string", "text": "string"}
    values = {"label": ["complaint", "praise", "spam", "not spam"]}
    cases = {
        "Keep only the complaints.": ("label IN ('complaint')", [1]),
        "Drop the complaints.": ("NOT (label IN ('complaint'))", [12, 30]),
        "Keep the not spam ones.": ("label IN ('not spam')", [30]),  # "spam" inside "not spam" is not a second hit
        "Keep the rows with an id below 10.": ("id < 10", [1]),
        "Drop the rows with an id of at least 20.": ("NOT (id >= 20)", [1, 12]),
        "Keep the packages whose name starts with py.": ("lower(name) LIKE 'py%'", [1, 30]),
        "Keep the packages whose name is pandas.": ("lower(name) = 'pandas'", [12]),
    }
    for clause, (predicate, ids) in cases.items():
        ctx = _ctx(clause, columns, values=values)
        assert route_where(ctx, "filter"), clause
        step = build_where(ctx, {})
        assert step == {"kind": "where", "predicate": predicate}, clause
        assert sorted(r.id for r in df.filter(step["predicate"]).collect()) == ids, clause
    # nothing the columns can answer: the LLM filter keeps the clause; other kinds are never re-routed
    assert not route_where(_ctx("Keep only the reviews that complain about service.", columns), "filter")
    assert not route_where(_ctx("Classify each row by its id over 10.", columns), "classify")
    assert route_select(_ctx("Keep only the id and label columns.", columns), "filter")
    assert not route_select(_ctx("Keep only the complaints.", columns), "filter")


def test_planner_mode_auto_writes_whole_plans_for_chat_endpoints_only(settings):
    assert not whole_plan(settings)  # the embedded server: completion style
    assert whole_plan(settings.with_overrides(**{"spark.apwa.llm.promptStyle": "chat"}))
    assert whole_plan(settings.with_overrides(**{"spark.apwa.planner.mode": "whole"}))
    assert not whole_plan(settings.with_overrides(**{"spark.apwa.llm.promptStyle": "chat", "spark.apwa.planner.mode": "staged"}))


@pytest.fixture(scope="module")
def reviews(spark):
    return spark.createDataFrame(REVIEWS, "id long, author string, text string").cache()


def _plan(query: str, reviews, settings):
    plan = plan_query(query, table_metadata(reviews), settings)
    print(f"{query}\n  planned {[s.kind for s in plan.steps]}; {plan.provenance.decided_by}")
    plan.check(reviews.columns)
    assert plan.provenance.planner == "staged" and plan.provenance.clauses == split_clauses(query)
    return plan


def _run(reviews, plan, settings, endpoint, tmp_path):
    """The plan run through a counting proxy: (result rows, LLM requests the run made)."""
    with FaultyEndpoint(endpoint.base_url) as proxy:
        out = run_plan(reviews, plan, tmp_path, settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url}))
        return out.collect(), proxy.requests


@pytest.mark.model
def test_classify_then_keep_a_label_takes_the_cheap_path(reviews, settings, endpoint, tmp_path):
    plan = _plan("Classify each review as positive or negative, then keep only the negative ones.", reviews, settings)
    assert [s.kind for s in plan.steps] == ["classify", "where"]
    assert plan.steps[1].predicate == "label IN ('negative')"
    assert plan.provenance.decided_by["step1.kind"] == "rule:where-instead-of-filter"
    rows, requests = _run(reviews, plan, settings, endpoint, tmp_path)
    assert all(r.label == "negative" and r.classify0_meta.status == "ok" for r in rows)
    assert requests == len(REVIEWS)  # one classify call per review; the where step calls nothing


@pytest.mark.model
def test_a_step_reads_the_text_the_step_before_wrote(reviews, settings, endpoint, tmp_path):
    plan = _plan("Describe each review in one sentence, then label it as food or service.", reviews, settings)
    assert [s.kind for s in plan.steps] == ["map", "classify"]
    assert plan.steps[1].reads() == [plan.steps[0].output]  # the description, not the source text
    rows, _ = _run(reviews, plan, settings, endpoint, tmp_path)
    assert len(rows) == len(REVIEWS) and any(r.map0_meta.status == "ok" for r in rows)
    for r in rows:  # errors stay data down the chain: a row the first step failed is an error row of the second
        if r.map0_meta.status == "ok":
            assert r.classify1_meta.status == "ok" and r.label in ("food", "service")
        else:
            assert r.classify1_meta.status == "error" and r.classify1_meta.error_class == "NullInput"


@pytest.mark.model
def test_a_reduce_after_a_classify_groups_by_its_label(reviews, settings, endpoint, tmp_path):
    plan = _plan("Classify each review as positive or negative, then summarize the reviews of each label in one sentence.",
                 reviews, settings)
    assert [s.kind for s in plan.steps] == ["classify", "reduce"] and plan.steps[1].group_by == ["label"]
    rows, _ = _run(reviews, plan, settings, endpoint, tmp_path)
    labelled = reviews.sparkSession.createDataFrame([(r.label,) for r in rows], "label string")
    assert len({r.label for r in rows}) == len(rows) == labelled.count() >= 1  # one row per label
    for r in rows:  # a summary, or an error row that says why (the 270M model sometimes answers nothing)
        assert (r.reduce1_meta.status == "ok" and r.summary) or (r.reduce1_meta.status == "error" and r.reduce1_meta.error_class)


@pytest.mark.model
def test_three_steps_where_redact_classify_end_to_end(reviews, settings, endpoint, tmp_path):
    plan = _plan("Keep only the reviews with an id below 2, then redact the names, e-mails and phone numbers, "
                 "then label each as food or service.", reviews, settings)
    assert [s.kind for s in plan.steps] == ["where", "redact", "classify"]
    assert plan.steps[0].predicate == "id < 2" and plan.steps[2].reads() == [plan.steps[1].output]
    rows, _ = _run(reviews, plan, settings, endpoint, tmp_path)
    assert sorted(r.id for r in rows) == [0, 1] and "text" not in rows[0].asDict()  # the source text is dropped
    assert not any("555-201" in r.redacted or "@example.com" in r.redacted for r in rows)
    assert all(r.label in ("food", "service") for r in rows)


@pytest.mark.model
def test_chunk_then_filter_the_pieces(reviews, settings, endpoint, tmp_path):
    plan = _plan("Split each review into pieces of at most 80 characters, then keep only the pieces that mention soup.",
                 reviews, settings)
    assert [s.kind for s in plan.steps] == ["chunk", "filter"] and plan.steps[0].max_chars == 80
    assert plan.steps[1].reads() == [plan.steps[0].output]
    rows, requests = _run(reviews, plan, settings, endpoint, tmp_path)
    assert requests > len(REVIEWS)  # more pieces than reviews, one check each
    # the kept pieces (answered yes) and the failed checks; how many the 270M model keeps differs by machine
    assert all(r.filter1_meta.status in ("ok", "error") for r in rows)


@pytest.mark.model
def test_whole_plan_mode_sends_the_plan_schema_and_returns_a_checked_plan(reviews, settings, endpoint):
    with FaultyEndpoint(endpoint.base_url) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url, "spark.apwa.planner.mode": "whole"})
        plan = plan_query("Classify each review as positive or negative.", table_metadata(reviews), local)
    first = json.loads(proxy.bodies[0])
    assert "steps" in json.dumps(first) and "ClassifyStep" in json.dumps(first)  # the whole plan's schema went out
    plan.check(reviews.columns)
    if plan.provenance.planner == "staged":  # the 270M base model's whole plan may be rejected: then it says so
        assert plan.provenance.decided_by["planner"].startswith("rule:staged-after-whole-plan-rejected")
    else:
        assert plan.provenance.decided_by["planner"] == "model"


@pytest.mark.model
def test_a_failed_reduce_group_over_a_not_null_text_column_is_an_error_row(spark, settings, endpoint, tmp_path):
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    from apwa_spark.plan.ir import Plan

    schema = StructType([StructField("id", LongType(), False), StructField("text", StringType(), False)])
    df = spark.createDataFrame([(1, "The soup was cold."), (2, "The waiter was rude.")], schema)
    plan = Plan(steps=[{"kind": "reduce", "template": "Combine into one sentence:\n{text}", "max_tokens": 16}])
    with FaultyEndpoint(endpoint.base_url, non_json=1.0) as proxy:
        out = run_plan(df, plan, tmp_path, settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url,
                                                                       "spark.apwa.cache.enabled": "false"}))
        [row] = out.collect()
    assert row.summary is None and row.reduce0_meta.status == "error"  # was: a NullPointerException writing the round
