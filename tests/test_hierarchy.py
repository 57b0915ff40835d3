"""The hierarchical reduce engine (apwa_spark/hierarchy.py) and its one failure policy, through each of
its three callers: the summarize job, a plan's ``reduce`` step and the SQL functions."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from apwa_spark.hierarchy import Child, pack_children, reduce_groups, reduce_to_root
from apwa_spark.llm.client import Completion
from apwa_spark.plan.ir import Plan
from apwa_spark.plan.run import run_plan
from apwa_spark.plays import parse_play
from apwa_spark.sql import ordered_texts, register
from apwa_spark.summarize import summarize_play
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

#: A completion request whose body holds this fails every attempt at the faulty proxy.
MARKER = "Zqxv-fails-here"


class Joiner:
    """The engine's reduce agent in the pure tests: joins each batch, and records what it was sent."""

    def __init__(self):
        self.sent: list[list[list[str]]] = []

    def __call__(self, batches):
        self.sent.append(batches)
        return [Completion("+".join(b), "ok", calls=1, text_tokens=len(b)) for b in batches]


def _ok(text, tokens=10):
    return Child(text, "ok", tokens)


# ---- the engine, without Spark -----------------------------------------------------------------------

def test_all_ok_children_give_an_ok_parent_from_one_call():
    call = Joiner()
    [[parent]] = reduce_groups([[_ok("a"), _ok("b"), _ok("c")]], 100, call)
    assert parent.completion.status == "ok" and parent.completion.text == "a+b+c"
    assert parent.children == [0, 1, 2] and parent.failed_inputs == 0 and call.sent == [[["a", "b", "c"]]]


def test_a_failed_child_is_left_out_counted_and_kept_in_the_lineage():
    call = Joiner()
    children = [_ok("a"), Child(None, "error", 0, 0, "HTTPError: 500"), _ok("c")]
    [[parent]] = reduce_groups([children], 100, call)
    assert call.sent == [[["a", "c"]]]  # never an empty text in its place
    assert parent.completion.status == "partial" and parent.completion.error_class == "ChildrenFailed"
    assert parent.failed_inputs == 1 and "1 failed input" in parent.completion.error
    assert parent.children == [0, 1, 2]


def test_blank_text_counts_as_a_failed_child():
    [[parent]] = reduce_groups([[_ok("a"), _ok("  "), _ok("c")]], 100, Joiner())
    assert parent.completion.status == "partial" and parent.failed_inputs == 1


def test_all_failed_children_give_one_error_parent_without_a_call():
    call = Joiner()
    [[parent]] = reduce_groups([[Child(None, "error", 0, 0, "EmptyInput: blank"), Child(None, "error", 0, 2)]], 100, call)
    assert call.sent == [] and parent.completion.status == "error" and parent.completion.calls == 0
    assert parent.completion.error.startswith("ChildrenFailed: all 2 children failed") and "EmptyInput" in parent.completion.error
    assert parent.children == [0, 1] and parent.failed_inputs == 3


def test_partial_propagates_to_the_root_with_its_count_and_groups_advance_together():
    call = Joiner()
    doc = [_ok("a", 40), Child(None, "error", 0), _ok("b", 40), _ok("c", 40), _ok("d", 40)]
    [(root, spent), (other, _), (empty, _)] = reduce_to_root([doc, [_ok("x"), _ok("y")], []], 90, call)
    assert root.status == "partial" and "1 failed input" in root.error and other.status == "ok"
    assert empty.status == "error" and empty.error_class == "EmptyInput"
    assert call.sent[0] == [["a", "b"], ["c", "d"], ["x", "y"]]  # one call per round for all groups
    assert len(call.sent) == 2 and root.text == "a+b+c+d"
    assert sum(c.calls for c in spent) == 3


def test_a_single_child_passes_up_without_a_call():
    call = Joiner()
    [(root, spent)] = reduce_to_root([[_ok("only")]], 90, call)
    assert root.status == "ok" and root.text == "only" and call.sent == [] and sum(c.calls for c in spent) == 0


def test_pack_children_budget_and_order():
    assert pack_children([40, 40, 40, 40], 90) == [[0, 1], [2, 3]]
    assert pack_children([40, 40, 40], 90) == [[0, 1, 2]]


def test_the_aggregate_orders_null_first_and_ties_in_arrival_order():
    texts = pd.Series(["t0", "t1", "t2", "t3", None, "t5"])
    order = pd.Series([3, None, 1, 1, 2, None])
    # Spark's ascending sort: NULLs first; equal keys stay in the order they came (a stable sort)
    assert ordered_texts(texts, order) == ["t1", "t5", "t2", "t3", "t0"]
    assert ordered_texts(texts, None) == ["t0", "t1", "t2", "t3", "t5"]


# ---- the same policy through each caller, with one input failing at a real faulty proxy -------------------

def _via(settings, proxy):
    return settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url, "spark.apwa.llm.maxRetries": "0",
                                      "spark.apwa.cache.enabled": "false"})


@pytest.mark.model
def test_summarize_job_parent_of_a_failed_chunk_is_partial(spark, settings, endpoint, small_play, tmp_path):
    text = small_play.read_text(encoding="utf-8")
    head, rest = text.split("### SCENE I", 1)
    cut = rest.index("\n", 700)
    play = tmp_path / "romeo-marked.md"  # one line in the middle of Act I, Scene I fails every call
    play.write_text(head + "### SCENE I" + rest[:cut] + f"\nSAMPSON: {MARKER}." + rest[cut:], encoding="utf-8")
    assert len(parse_play(play.read_text())) == 4
    with FaultyEndpoint(endpoint.base_url, fail_marker=MARKER) as proxy:
        run = summarize_play(str(play), tmp_path / "out", spark, _via(settings, proxy), max_scenes=2)
    assert proxy.faults["http_500"] == 1
    tables = {l.table: spark.read.format("delta").load(l.path) for l in run.levels}
    chunk = tables["chunk"].filter("status = 'error'").collect()
    assert len(chunk) == 1  # the marked chunk, and only it
    scene = tables["scene_r1"].filter("scene_id LIKE '%ACT I/SCENE I'").collect()
    assert [s.status for s in scene] == ["partial"] and scene[0].failed_inputs == 1
    assert chunk[0].node_id in scene[0].children  # the failed chunk stays in its parent's lineage
    assert run.root["status"] == "partial" and run.root["failed_inputs"] == 1 and run.root["summary"]
    assert run.root["error"].startswith("ChildrenFailed: 1 failed input")


@pytest.mark.model
def test_plan_reduce_parent_of_a_failed_row_is_partial(spark, settings, endpoint, tmp_path):
    rows = [(1, "a", 1, "The soup was cold and the bread was stale."), (2, "a", 2, f"Review: {MARKER} great staff."),
            (3, "a", 3, "We waited an hour for a table."), (4, "b", 1, "Lovely garden, friendly waiters."),
            (5, "b", 2, "The dessert was the best part.")]
    df = spark.createDataFrame(rows, "id long, grp string, pos int, text string")
    plan = Plan.parse("steps:\n"
                      "  - {kind: map, template: 'Shorten to five words: {text}', output: short, max_tokens: 12}\n"
                      "  - {kind: reduce, template: 'Summarize: {short}', group_by: [grp], order_by: pos, output: summary}\n")
    with FaultyEndpoint(endpoint.base_url, fail_marker=MARKER) as proxy:
        out = {r.grp: r for r in run_plan(df, plan, tmp_path / "plan", _via(settings, proxy)).collect()}
    meta = {g: r[[c for c in r.asDict() if c.startswith("reduce") and c.endswith("_meta")][0]] for g, r in out.items()}
    assert meta["a"].status == "partial" and meta["a"].error.startswith("ChildrenFailed: 1 failed input")
    assert out["a"].summary and meta["b"].status == "ok" and out["b"].summary


@pytest.mark.model
def test_sql_summary_of_a_failed_text_is_partial_and_states_it(spark, settings, endpoint):
    texts = ["The soup was cold and the bread was stale.", f"{MARKER} and the staff were kind.",
             "We waited an hour for a table."]
    array = "array(" + ", ".join(json.dumps(t) for t in texts) + ")"
    try:
        with FaultyEndpoint(endpoint.base_url, fail_marker=MARKER) as proxy:
            register(spark, _via(settings, proxy))
            [row] = spark.sql(f"SELECT apwa_summarize_texts_or_error({array}) AS r, "
                              f"apwa_summarize_texts(array('One text only.', NULL)) AS one").collect()
            spark.createDataFrame([(1, t) for t in texts], "o int, t string").createOrReplaceTempView("marked")
            [agg] = spark.sql("SELECT apwa_summarize_agg(t, o) AS s FROM marked").collect()
            register(spark, _via(settings, proxy).with_overrides(**{"spark.apwa.sql.failOnError": "true"}))
            with pytest.raises(Exception, match="ChildrenFailed: 1 failed input"):
                spark.sql("SELECT apwa_summarize_agg(t, o) FROM marked").collect()
    finally:
        register(spark, settings)
    assert row.r.result and row.r.errorMessage.startswith("ChildrenFailed: 1 failed input")
    assert row.one  # NULL elements are skipped, not failures
    assert agg.s  # the aggregate returns the summary of the rest


@pytest.mark.model
def test_sql_aggregate_with_null_and_repeated_order_summarizes_every_text(spark, settings, endpoint):
    rows = [(1, "The soup was cold."), (None, "The bread was stale."), (1, "The staff were kind."),
            (None, "We waited an hour."), (2, "The garden was lovely.")]
    spark.createDataFrame(rows, "o int, t string").createOrReplaceTempView("unordered")
    try:
        with FaultyEndpoint(endpoint.base_url) as proxy:  # no faults: it records what was sent
            register(spark, _via(settings, proxy))
            [row] = spark.sql("SELECT apwa_summarize_agg(t, o) AS s FROM unordered").collect()
    finally:
        register(spark, settings)
    sent = [b.decode() for b in proxy.bodies]
    for _, text in rows:  # every text was summarized once: none dropped by NULL or repeated orders
        assert sum(json.dumps(text)[1:-1] in body for body in sent) >= 1, text
    assert row.s


@pytest.mark.model
def test_sql_summarize_texts_composes_with_a_built_in_aggregate_in_one_select(spark, settings, endpoint):
    """The README's query: ``apwa_summarize_texts`` over an ordered ``collect_list`` beside
    ``count(*)``, which a pandas aggregate (``apwa_summarize_agg``) cannot sit next to."""
    register(spark, settings)
    rows = [("I", 2, "Romeo is sad about Rosaline."), ("I", 1, "Servants of two houses fight in the street."),
            ("II", 1, "Romeo climbs the orchard wall.")]
    spark.createDataFrame(rows, "act string, scene_no int, text string").createOrReplaceTempView("acts")
    try:
        out = {r.act: r for r in spark.sql(
            "SELECT act, count(*) AS scenes, apwa_summarize_texts(transform(array_sort(collect_list(struct(scene_no, text))), "
            "x -> x.text)) AS summary, apwa_summarize_texts_or_error(array_sort(collect_list(struct(scene_no, text))).text) "
            "AS checked FROM acts GROUP BY act").collect()}
    finally:
        spark.catalog.dropTempView("acts")
    assert {a: r.scenes for a, r in out.items()} == {"I": 2, "II": 1}
    assert out["I"].summary and out["II"].summary  # one summary per act, built in the same SELECT
    assert all(r.checked.result and r.checked.errorMessage is None for r in out.values())


def test_a_round_whose_calls_fit_one_tasks_calls_in_flight_runs_as_one_partition_without_a_shuffle(spark):
    """The top of a hierarchy (one group of five rows: at most 2 calls) is one task, with no shuffle;
    a round with more calls than one task keeps in flight is spread by its group keys
    (``test_concurrency.py``: its groups' calls then go together per partition). No model needed."""
    from apwa_spark.config import Settings
    from apwa_spark.runs import JobContext
    from apwa_spark.steps.reduce import Level, _spread

    # 4 server slots over 2 tasks: 2 calls in flight per task
    job = JobContext(Settings.load(env={}, overrides={"spark.apwa.llm.serverSlots": "4"}), "run", tasks=2)
    acts = spark.createDataFrame([("rj", a) for a in range(5)], "play string, act long").repartition(2).localCheckpoint()
    top = _spread(acts, Level(name="play", group_by=["play"]), 5, job)
    assert top.rdd.getNumPartitions() == 1 and "Exchange" not in top._jdf.queryExecution().executedPlan().toString()
    scenes = spark.createDataFrame([("rj", s % 5, s) for s in range(26)], "play string, act long, scene long")
    spread = _spread(scenes, Level(name="act", group_by=["play", "act"]), 26, job)
    assert spread.rdd.getNumPartitions() == 2 and "hashpartitioning(play" in spread._jdf.queryExecution().executedPlan().toString()
    whole = _spread(scenes, Level(name="all"), 26, job)  # no group keys: one group, one task
    assert whole.rdd.getNumPartitions() == 1
