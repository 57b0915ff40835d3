"""Per-partition classify (mapInPandas batches), a third-party tool from the entry-point group, and
reduce packing by the endpoint's token counts, with the real embedded model."""

from __future__ import annotations

import textwrap

import pytest
from pyspark.sql.types import StringType

from apwa_spark.llm.client import LLMClient
from apwa_spark.plan import agents
from apwa_spark.plan.udf import META_SCHEMA
from apwa_spark.plan.ir import Plan, PlanError
from apwa_spark.plan.run import run_plan
from apwa_spark.tools import ENTRY_POINT_GROUP, registry

pytestmark = pytest.mark.model

ROWS = [
    (1, "The food was wonderful and the staff were kind."),
    (2, "Terrible service, cold soup, we waited an hour."),
    (3, None),
    (4, "Lovely dessert, friendly waiter, fair prices."),
    (5, "Dirty tables and a rude manager."),
]


def test_classify_batch_rows_runs_per_partition_one_call_per_batch(spark, settings, tmp_path):
    df = spark.createDataFrame(ROWS, "id long, text string").coalesce(1)
    plan = Plan.parse("steps:\n  - {kind: classify, template: 'Review: {text}', labels: [positive, negative], "
                      "output: sentiment, batch_rows: 3}\n")
    out = run_plan(df, plan, tmp_path, settings).orderBy("id")
    assert out.columns == ["id", "text", "sentiment", "classify0_meta"]
    assert out.schema["sentiment"].dataType == StringType() and out.schema["classify0_meta"].dataType == META_SCHEMA
    rows = out.collect()
    assert [r.id for r in rows] == [1, 2, 3, 4, 5]  # one row per input row, in or out of a batch
    assert rows[2].classify0_meta.error_class == "NullInput" and rows[2].sentiment is None
    live = [r for r in rows if r.id != 3]
    assert {r.sentiment for r in live if r.classify0_meta.status == "ok"} <= {"positive", "negative"}
    # 4 non-null rows in one partition, 3 per call: 2 calls, each booked on its batch's first row
    assert sum(r.classify0_meta.llm_calls > 0 for r in live) == 2
    assert all(r.classify0_meta.step == "classify0" for r in rows)


def test_explain_shows_map_in_pandas_for_a_batched_classify(spark, settings):
    from apwa_spark.plan.explain import explain

    df = spark.createDataFrame(ROWS, "id long, text string")
    plan = Plan.parse("steps:\n  - {kind: classify, template: '{text}', labels: [a, b], batch_rows: 4}\n")
    assert "MapInPandas" in explain(df, plan, settings)


@pytest.fixture
def third_party_tool(tmp_path, monkeypatch):
    """A real installed distribution in a tmp dir: a module and a ``*.dist-info`` whose
    ``entry_points.txt`` registers a tool under ``apwa_spark.tools``; on sys.path of the driver."""
    (tmp_path / "apwa_demo_tools.py").write_text(textwrap.dedent('''
        import re
        from apwa_spark.tools import Span, Tool

        def find_ticket_ids(text, entities):
            return [Span(m.start(), m.end(), "ticket", m.group()) for m in re.finditer(r"TCK-\\d{4}", text or "")]

        TICKET_IDS = Tool("ticket_ids", "ticket numbers such as TCK-1234", find_ticket_ids)
    '''))
    info = tmp_path / "apwa_demo_tools-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: apwa-demo-tools\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nticket_ids = apwa_demo_tools:TICKET_IDS\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.cache_clear()
    yield "ticket_ids"
    monkeypatch.undo()
    registry.cache_clear()


def test_a_third_party_tool_from_the_entry_point_group_is_accepted_and_runs(third_party_tool, settings):
    """Driver only: the plan check and the redact agent run in this process (Spark's python workers,
    started before the tmp dir existed, would need it on their PYTHONPATH)."""
    assert registry()[third_party_tool].description.startswith("ticket numbers")
    plan = Plan.parse("steps:\n  - {kind: redact, column: text, entities: [email], tools: [pii_rules, ticket_ids], "
                      "use_model: false}\n")
    plan.check(["id", "text"], set(registry()))
    step = plan.steps[0]
    [result] = agents.redact_rows(["Ticket TCK-1234 from bo@example.com"], step.entities, step.tools, step.use_model, settings)
    assert result.value == "Ticket [TICKET] from [EMAIL]"
    assert [s.entity for s in result.extra] == ["ticket", "email"]


def test_without_the_distribution_the_tool_is_unknown():
    registry.cache_clear()
    plan = Plan.parse("steps:\n  - {kind: redact, column: text, tools: [ticket_ids]}\n")
    with pytest.raises(PlanError, match="unknown tool 'ticket_ids'"):
        plan.check(["text"], set(registry()))


def test_reduce_packs_by_the_endpoints_token_counts(settings):
    """The reduce step counts with LLMClient.count_tokens: llama.cpp's /tokenize, not chars / 3."""
    text = "Two households, both alike in dignity, in fair Verona, where we lay our scene."
    [tokens] = LLMClient(settings).count_tokens([text])
    assert 0 < tokens < len(text) / 3  # Gemma's tokenizer: fewer tokens than the chars/3 estimate
