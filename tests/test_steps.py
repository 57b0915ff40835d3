"""The step-kind registry: built-in kinds, a third-party kind through a real entry point, and the
no-LLM relational steps (where, select) compiled on real Spark."""

from __future__ import annotations

import sys
import textwrap

import pytest

from apwa_spark.plan.compiler import compile_plan
from apwa_spark.plan.estimate import estimate
from apwa_spark.plan.ir import Plan, PlanError
from apwa_spark.plan.step import Cardinality, RunContext, StepConfig, step_kinds
from apwa_spark.runs import JobContext

BUILTIN = {"map", "filter", "classify", "extract", "redact", "chunk", "reduce", "where", "select"}

THIRD_PARTY = textwrap.dedent('''
    from typing import Literal
    from pyspark.sql import functions as F
    from apwa_spark.plan.step import Estimate, RunContext, StepConfig, StepKind

    class UpperStep(StepConfig):
        kind: Literal["upper"] = "upper"
        column: str
        def reads(self): return [self.column]

    def compile_upper(df, name, step, run):
        return df.withColumn(step.column, F.upper(step.column))

    UPPER = StepKind(config=UpperStep, compile=compile_upper,
                     estimate=lambda step, stats: Estimate(0, 0, 0, stats.rows, dict(stats.chars)))
    NOT_A_KIND = object()

    class OtherMap(StepConfig):
        kind: Literal["map"] = "map"

    OTHER_MAP = StepKind(config=OtherMap, compile=compile_upper, estimate=UPPER.estimate)
''')


@pytest.fixture
def installed_package(tmp_path):
    """A real distribution on sys.path whose metadata declares ``apwa_spark.steps`` entry points."""
    def install(entries: str):
        (tmp_path / "my_steps.py").write_text(THIRD_PARTY)
        info = tmp_path / "my_steps-0.1.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-steps\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[apwa_spark.steps]\n{entries}\n")
        sys.path.insert(0, str(tmp_path))
        step_kinds.cache_clear()

    yield install
    sys.path.remove(str(tmp_path)) if str(tmp_path) in sys.path else None
    sys.modules.pop("my_steps", None)
    step_kinds.cache_clear()


def test_every_builtin_kind_is_one_module_with_config_compile_estimate():
    kinds = step_kinds()
    assert BUILTIN <= set(kinds)
    for name, kind in kinds.items():
        assert kind.name == name and issubclass(kind.config, StepConfig)
        assert isinstance(kind.config.cardinality, Cardinality)
        assert callable(kind.compile) and callable(kind.estimate)


def test_plan_json_schema_offers_every_registered_kind():
    refs = {r["$ref"].rsplit("/", 1)[1] for r in Plan.json_schema()["properties"]["steps"]["items"]["oneOf"]}
    assert refs == {k.config.__name__ for k in step_kinds().values()}


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(PlanError, match="unknown step kind 'translate'; registered kinds: .*classify"):
        Plan.parse("steps:\n  - kind: translate\n    template: '{text}'\n")


def test_a_third_party_kind_registers_through_an_entry_point_and_runs(installed_package, spark, settings):
    installed_package("upper = my_steps:UPPER")
    assert "upper" in step_kinds()
    plan = Plan.parse("steps:\n  - kind: upper\n    column: text\n  - kind: select\n    columns: [text]\n")
    assert type(plan.steps[0]).__name__ == "UpperStep" and plan.to_yaml().count("kind: upper") == 1
    df = spark.createDataFrame([(1, "to be"), (2, "or not")], "id long, text string")
    plan.check(df.columns)
    out = compile_plan(df, plan, RunContext(JobContext(settings, "test-run")))
    assert sorted(r.text for r in out.collect()) == ["OR NOT", "TO BE"]


def test_an_entry_point_that_is_not_a_step_kind_is_refused(installed_package):
    installed_package("bad = my_steps:NOT_A_KIND")
    with pytest.raises(TypeError, match="entry point 'bad' in apwa_spark.steps must name"):
        step_kinds()


def test_an_entry_point_may_not_replace_a_builtin(installed_package):
    installed_package("my_map = my_steps:OTHER_MAP")
    with pytest.raises(ValueError, match="two step kinds are called 'map'"):
        step_kinds()


def test_where_and_select_run_without_llm_calls(spark, settings):
    df = spark.createDataFrame([(1, 5, "great"), (2, 2, "bad"), (3, None, "unrated")], "id long, stars int, text string")
    plan = Plan.parse("steps:\n  - kind: where\n    predicate: stars >= 4\n  - kind: select\n    columns: [id, text]\n")
    plan.check(df.columns)
    out = compile_plan(df, plan, RunContext(JobContext(settings, "test-run")))
    assert out.columns == ["id", "text"] and [tuple(r) for r in out.collect()] == [(1, "great")]
    assert [r["llm_calls"] for r in estimate(df, plan)] == [0, 0]


def test_where_with_an_unknown_column_names_the_step_and_the_columns(spark, settings):
    df = spark.createDataFrame([(1, "x")], "id long, text string")
    plan = Plan.parse("steps:\n  - kind: where\n    predicate: stars >= 4\n")
    with pytest.raises(PlanError, match=r"step 'where0' \(where\): predicate 'stars >= 4' .*columns at that point: \['id', 'text'\]"):
        compile_plan(df, plan, RunContext(JobContext(settings, "test-run")))


def test_select_of_a_missing_column_fails_the_check():
    with pytest.raises(PlanError, match=r"step 'select0' \(select\) names unknown column\(s\) \['stars'\]"):
        Plan.parse("steps:\n  - kind: select\n    columns: [stars]\n").check(["id", "text"])


def test_estimates_chain_chunk_fan_out_into_the_next_step(spark):
    df = spark.createDataFrame([(1, "x" * 1000), (2, "y" * 1000)], "id long, text string")
    plan = Plan.parse("steps:\n  - kind: chunk\n    max_chars: 100\n"
                      "  - kind: map\n    template: 'Say: {chunk}'\n    output: said\n    max_tokens: 8\n")
    chunk, mapped = estimate(df, plan)
    assert chunk["llm_calls"] == 0 and chunk["rows_out"] == 21  # 2,000 / 100 characters, plus half a piece a row
    assert mapped["llm_calls"] == 21 and mapped["completion_tokens"] == 168


def test_tool_notes_list_a_detectors_findings_and_refuse_a_splitter():
    from apwa_spark.tools import tool_notes

    notes = tool_notes("Write to ann.lee@example.com or call +1 415 555 0100.", ["pii_rules"])
    assert notes.startswith("pii_rules found: ") and "email 'ann.lee@example.com'" in notes and "phone" in notes
    assert tool_notes("nothing here", ["pii_rules"]) == "pii_rules found: nothing"
    with pytest.raises(ValueError, match="'chunk_text' \\(splitter\\) gives no findings"):
        tool_notes("text", ["chunk_text"])


@pytest.mark.model
def test_any_agent_step_can_be_equipped_with_tools(spark, settings):
    """The same map step with and without ``pii_rules``: the equipped prompt that reached the model
    (the endpoint's own prompt-token count) is longer by the tool's findings."""
    df = spark.createDataFrame([(1, "Write to ann.lee@example.com about the refund.")], "id long, text string")
    steps = "  - kind: map\n    template: 'Who is written to? {text}'\n    output: who\n    max_tokens: 8\n"
    bare, equipped = (Plan.parse(f"steps:\n{steps}{extra}") for extra in ("", "    tools: [pii_rules]\n"))
    run = RunContext(JobContext(settings.with_overrides(**{"spark.apwa.cache.enabled": "false"}), "test-run"))
    tokens = [compile_plan(df, p, run).first()["map0_meta"]["prompt_tokens"] for p in (bare, equipped)]
    assert tokens[1] > tokens[0] > 0
    with pytest.raises(PlanError, match="unknown tool 'pii_magic'"):
        Plan.parse(f"steps:\n{steps}    tools: [pii_magic]\n").check(df.columns, {"pii_rules"})


def test_a_reduce_estimate_on_measured_groups_counts_no_call_for_a_one_row_group(spark):
    from apwa_spark.plan.step import InputStats
    from apwa_spark.steps.reduce import ReduceStep, estimate_reduce

    df = spark.createDataFrame([("a", "x" * 30), ("b", "y" * 30), ("b", "z" * 30), ("b", "w" * 30)], "g string, text string")
    step = ReduceStep(template="Combine: {text}", group_by=["g"], token_budget=1000, max_tokens=16)
    stats = InputStats(rows=4, chars={"text": 120, "g": 4})
    measured = estimate_reduce(step, InputStats(rows=4, chars=stats.chars, frame=df))
    assert (measured.llm_calls, measured.rows_out) == (1, 2)  # group a passes its one row up; group b is one call
    assert "group sizes measured" in measured.assumption
    guessed = estimate_reduce(step, stats)  # without the rows: groups unknown, one row each
    assert guessed.llm_calls == 0 and "unknown" in guessed.assumption


def test_a_rounds_groups_are_counted_from_its_parents_ids(spark):
    """A group that overflowed the token budget has parents ``<base>.0``, ``<base>.1`` …; one that did
    not has ``<base>``: the count (``groups_left`` compares it with the rows) is one per group, even
    where a group key itself holds ``:r`` and dots."""
    from apwa_spark.steps.reduce import _groups

    ids = ["scene:rj/ACT I/SCENE I.:r1", "scene:rj/ACT I/SCENE II. A street:r1.0", "scene:rj/ACT I/SCENE II. A street:r1.1",
           "scene:rj/ACT I/SCENE II. A street:r1.10", "act:odd:r1.5 key:r2", "play:all:r12.0"]
    df = spark.createDataFrame([(i,) for i in ids], "node_id string")
    assert df.agg(_groups()).first()[0] == 4
    assert df.limit(1).agg(_groups()).first()[0] == 1


BLANK_ROWS = [(1, "Soup", "cold soup"), (2, "  ", ""), (3, "", "bread only"), (4, None, "x"), (5, "\t", " \n ")]


def test_a_row_whose_placeholders_are_all_blank_is_an_empty_input_error_without_a_call(spark, tmp_path):
    """A map step run end to end: a row whose placeholder values are all empty or whitespace is an
    ``EmptyInput`` error row and a NULL one a ``NullInput`` row, neither sent (the template's own
    words alone); a row with one value blank and the other not is sent. Against the instant endpoint
    (a real HTTP server that counts requests)."""
    from apwa_spark.config import Settings
    from apwa_spark.plan.run import execute_plan
    from apwa_spark.testing.instant_endpoint import InstantEndpoint

    df = spark.createDataFrame(BLANK_ROWS, "id long, title string, body string")
    plan = Plan.parse("steps:\n  - {kind: map, template: 'Say {title}: {body}', output: said, max_tokens: 8}\n")
    with InstantEndpoint(answer="fine.") as endpoint:
        settings = Settings.load(env={}, overrides={
            "spark.apwa.llm.baseUrl": endpoint.base_url, "spark.apwa.llm.model": "instant",
            "spark.apwa.cache.enabled": "false", "spark.apwa.run.registry": str(tmp_path / "registry")})
        run = execute_plan(spark, df, plan, tmp_path / "out", settings)
        metas = {r.id: r.map0_meta for r in run.result.collect()}
    assert {i: (m.error_class, m.llm_calls) for i, m in metas.items()} == {
        1: (None, 1), 2: ("EmptyInput", 0), 3: (None, 1), 4: ("NullInput", 0), 5: ("EmptyInput", 0)}
    assert endpoint.requests == 2  # rows 1 and 3, the second with a blank title


@pytest.mark.parametrize("kind", ["filter", "classify", "classify_batched", "extract"])
def test_every_agent_step_leaves_blank_rows_unsent(kind):
    """The other per-row agents (:mod:`apwa_spark.plan.agents`) over the same expanded rows: blank
    ones are ``EmptyInput`` and NULL ones ``NullInput`` errors with no call; the others are sent,
    every one of them, to the instant endpoint."""
    import pandas as pd

    from apwa_spark.config import Settings
    from apwa_spark.llm.client import LLMClient
    from apwa_spark.plan import agents
    from apwa_spark.plan.udf import expand
    from apwa_spark.testing.instant_endpoint import InstantEndpoint

    titles, bodies = (pd.Series([r[i] for r in BLANK_ROWS], dtype=object) for i in (1, 2))
    prompts = expand("{title}: {body}", [titles, bodies])
    with InstantEndpoint(answer="fine.") as endpoint:
        settings = Settings.load(env={}, overrides={"spark.apwa.llm.baseUrl": endpoint.base_url,
                                                    "spark.apwa.llm.model": "instant", "spark.apwa.cache.enabled": "false"})
        client = LLMClient(settings)
        call = {"filter": lambda: agents.filter_rows(prompts, settings, client),
                "classify": lambda: agents.classify_rows(prompts, ["food", "other"], settings, client),
                "classify_batched": lambda: agents.classify_batched(prompts, ["food", "other"], 4, settings, client),
                "extract": lambda: agents.extract_rows(prompts, {"type": "object", "properties": {"a": {"type": "string"}}},
                                                       32, settings, client)}[kind]
        results = call()
    classes = [r.completion.error_class if r.completion.error_class in ("EmptyInput", "NullInput") else "sent" for r in results]
    assert classes == ["sent", "EmptyInput", "sent", "NullInput", "EmptyInput"]
    assert all(results[i].completion.calls == 0 for i in (1, 3, 4))
    assert endpoint.requests == sum(r.completion.calls for r in results) >= 1
