"""Plan IR, table metadata, tools, and each step kind run from a hand-written plan with the real model."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from pyspark.sql.types import ArrayType, LongType, StringType, StructField, StructType

from apwa_spark.llm.json_schema import BOUNDED_ARRAY_ITEMS, bounded_by_tokens
from apwa_spark.plan.udf import META_SCHEMA
from apwa_spark.plan.ir import Cardinality, Plan, PlanError
from apwa_spark.steps.chunk import ChunkStep
from apwa_spark.plan.metadata import table_metadata
from apwa_spark.plan.run import run_plan
from apwa_spark.plan.schema import SchemaError, json_schema_to_spark
from apwa_spark.tools import find_pii, split_text

REVIEWS = [
    (1, "The food was wonderful and the staff were kind. I will come back."),
    (2, "Terrible service, cold soup, and we waited an hour. Never again."),
    (3, None),
    (4, "Contact Maria Lopez at maria.lopez@example.com or +44 20 7946 0958 about the invoice."),
]


@pytest.fixture(scope="module")
def reviews(spark):
    return spark.createDataFrame(REVIEWS, "id long, text string")


# ---- IR, schema, tools (no model) ----------------------------------------------------------------------

def test_plan_round_trips_through_yaml_and_json():
    plan = Plan.parse("steps:\n  - kind: map\n    template: 'Shorten: {text}'\n    output: short\n")
    assert Plan.parse(plan.to_yaml()) == plan == Plan.parse(plan.to_json())
    assert plan.steps[0].cardinality == Cardinality.ONE_TO_ONE and ChunkStep().cardinality == Cardinality.ONE_TO_MANY


def test_unknown_placeholder_names_it_and_lists_the_columns():
    plan = Plan.parse("steps:\n  - kind: map\n    template: 'Shorten: {body}'\n    output: short\n")
    with pytest.raises(PlanError, match=r"\['body'\].*\['id', 'text'\]"):
        plan.check(["id", "text"])


def test_later_steps_see_earlier_outputs():
    plan = Plan.parse("steps:\n  - {kind: map, template: '{text}', output: short}\n"
                      "  - {kind: classify, template: '{short}', labels: [a, b]}\n")
    plan.check(["text"])


def test_unknown_tool_and_newer_version_are_rejected():
    plan = Plan.parse("steps:\n  - {kind: redact, column: text, tools: [no_such_tool]}\n")
    with pytest.raises(PlanError, match="no_such_tool.*registered tools"):
        plan.check(["text"], {"pii_rules", "chunk_text"})
    with pytest.raises(PlanError, match="version 99 is newer"):
        Plan.parse("version: 99\nsteps:\n  - {kind: chunk}\n")


def test_template_without_placeholder_and_invalid_schema_are_errors():
    with pytest.raises(PlanError, match="names no column"):
        Plan.parse("steps:\n  - {kind: map, template: 'hello', output: x}\n")
    with pytest.raises(PlanError, match="unsupported or missing type"):
        Plan.parse("steps:\n  - {kind: extract, template: '{text}', output_schema: "
                   "{type: object, properties: {a: {type: date}}}}\n")


def test_json_schema_maps_to_spark_struct_with_nesting():
    class Author(BaseModel):
        name: str
        born: int | None = None

    class Book(BaseModel):
        title: str
        authors: list[Author]
        tags: list[str]

    struct = json_schema_to_spark(Book)
    assert struct["title"].dataType == StringType()
    assert struct["authors"].dataType == ArrayType(StructType([StructField("name", StringType()), StructField("born", LongType())]))
    with pytest.raises(SchemaError):
        json_schema_to_spark({"type": "string"})


def test_token_bounded_schema_caps_every_unbounded_string_and_array():
    class Author(BaseModel):
        name: str
        born: int | None = None

    class Book(BaseModel):
        title: str | None = None
        authors: list[Author]
        tags: list[str]

    original = Book.model_json_schema()
    bounded = bounded_by_tokens(Book, 400)
    assert "maxLength" not in str(original) and original == Book.model_json_schema()  # a copy, not in place
    # fixed: braces 2 + keys (5+4, 7+4, 4+4) + title's null-or-quotes 4 + authors 2 + 8 * (2 + (4+4) + (4+4) + 8 + 1)
    # + tags 2 + 8 * (2 + 1) = 2 + 32 + 4 + 2 + 200 + 2 + 24 = 266; free strings: 1 + 8 + 8 = 17 ──► (400 - 266) // 17 = 7 ──► min 8
    title = bounded["properties"]["title"]["anyOf"][0]
    assert title == {"type": "string", "maxLength": 8}
    assert bounded["$defs"]["Author"]["properties"]["name"]["maxLength"] == 8
    assert bounded["properties"]["tags"]["maxItems"] == BOUNDED_ARRAY_ITEMS
    assert bounded["properties"]["tags"]["items"]["maxLength"] == 8
    roomy = bounded_by_tokens({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string", "maxLength": 3},
                                                                 "c": {"enum": ["x", "yy"]}}}, 100)
    # fixed 2 + (1+4)*3 + a's quotes 2 + (2+3) + len('"yy"') = 28 ──► a gets 100 - 28 = 72; b and c keep their bounds
    assert roomy["properties"] == {"a": {"type": "string", "maxLength": 72}, "b": {"type": "string", "maxLength": 3},
                                   "c": {"enum": ["x", "yy"]}}
    with pytest.raises(SchemaError):
        bounded_by_tokens("not a schema", 100)


def test_rule_detectors_and_chunker():
    spans = find_pii("Mail a.b@example.org, call +1 415 555 0100, IP 10.0.0.1.", ["email", "phone", "ip_address"])
    assert [s.entity for s in spans] == ["email", "phone", "ip_address"]
    text = "# A\nfirst\n\n# B\n" + "x" * 50 + "\n"
    assert "".join(split_text(text, 20, by_headings=True)) == text
    assert all(len(p) <= 20 for p in split_text(text, 20))


def test_table_metadata_stays_small_on_a_large_table(spark):
    big = spark.range(200_000).selectExpr("id", "repeat('word ', cast(id % 500 as int)) as text")
    meta = table_metadata(big)
    assert meta.rows == 200_000
    text = next(c for c in meta.columns if c.name == "text")
    assert len(text.samples) == 3 and all(len(s) <= 80 for s in text.samples)
    assert text.length_quantiles and text.distinct_estimate > 100
    assert len(meta.render()) < 1000


# ---- each step kind from a hand-written plan, with the real model -----------------------------------------



def _run(spark, reviews, settings, tmp_path, yaml_text):
    return run_plan(reviews, Plan.parse(yaml_text), tmp_path, settings).orderBy("id")


@pytest.mark.model
def test_map_step(spark, reviews, settings, tmp_path):
    out = _run(spark, reviews, settings, tmp_path, "steps:\n  - {kind: map, template: 'Shorten to five words: {text}', output: short, max_tokens: 16}\n")
    assert out.columns == ["id", "text", "short", "map0_meta"]
    assert out.schema["map0_meta"].dataType == META_SCHEMA
    rows = out.collect()
    assert len(rows) == 4
    assert [r.map0_meta.status for r in rows] == ["ok", "ok", "error", "ok"]
    assert rows[2].map0_meta.error_class == "NullInput" and rows[2].short is None


@pytest.mark.model
def test_classify_step_answers_only_allowed_labels(spark, reviews, settings, tmp_path):
    out = _run(spark, reviews, settings, tmp_path,
               "steps:\n  - {kind: classify, template: 'Review: {text}', labels: [positive, negative], output: sentiment}\n")
    rows = out.collect()
    assert len(rows) == 4
    assert {r.sentiment for r in rows if r.classify0_meta.status == "ok"} <= {"positive", "negative"}
    assert sum(r.classify0_meta.status == "ok" for r in rows) == 3


@pytest.mark.model
def test_extract_step_gives_a_typed_struct(spark, reviews, settings, tmp_path):
    out = _run(spark, reviews, settings, tmp_path,
               "steps:\n  - kind: extract\n    template: '{text}'\n    output: fields\n"
               "    output_schema: {type: object, properties: {mood: {type: string, maxLength: 20}, stars: {type: integer}}}\n")
    assert out.schema["fields"].dataType == StructType([StructField("mood", StringType()), StructField("stars", LongType())])
    rows = out.collect()
    assert len(rows) == 4 and sum(r.extract0_meta.status == "ok" for r in rows) == 3


@pytest.mark.model
def test_filter_step_keeps_answered_and_failed_rows_only(spark, reviews, settings, tmp_path):
    out = _run(spark, reviews, settings, tmp_path, "steps:\n  - {kind: filter, template: 'Is this review about food? {text}'}\n")
    rows = out.collect()
    assert 1 <= len(rows) <= 4
    assert any(r.id == 3 and r.filter0_meta.status == "error" for r in rows)  # NULL text is kept, marked error
    assert "filter0_meta" in out.columns


@pytest.mark.model
def test_redact_step_removes_rule_entities(spark, reviews, settings, tmp_path):
    out = _run(spark, reviews, settings, tmp_path,
               "steps:\n  - {kind: redact, column: text, entities: [person, email, phone], output: clean}\n")
    row = next(r for r in out.collect() if r.id == 4)
    assert "maria.lopez@example.com" not in row.clean and "7946" not in row.clean
    assert "[EMAIL]" in row.clean and "[PHONE]" in row.clean
    assert {s.entity for s in row.clean_spans} >= {"email", "phone"}


@pytest.mark.model
def test_chunk_step_explodes_in_order(spark, reviews, settings, tmp_path):
    out = _run(spark, reviews, settings, tmp_path, "steps:\n  - {kind: chunk, column: text, max_chars: 20, output: piece}\n")
    pieces = out.filter("id = 1").orderBy("piece_index").collect()
    assert "".join(p.piece for p in pieces) == REVIEWS[0][1]
    assert [p.piece_index for p in pieces] == list(range(len(pieces)))
    assert out.filter("id = 3").count() == 1  # a NULL text still yields a row


@pytest.mark.model
def test_reduce_step_one_row_per_group_over_delta_rounds(spark, settings, tmp_path):
    df = spark.createDataFrame([(g, i, f"Part {i} of story {g}: the hero walks to town number {i}.")
                                for g in ("a", "b") for i in range(6)], "g string, i long, text string")
    plan = Plan.parse("steps:\n  - {kind: reduce, template: 'Summarize these parts: {text}', group_by: [g], "
                      "order_by: i, token_budget: 64, output: summary}\n")
    out = run_plan(df, plan, tmp_path, settings)
    assert sorted(out.columns) == ["g", "reduce0_meta", "summary"]
    assert out.count() == 2
    assert (tmp_path / "reduce0_r2").is_dir()  # a 64-token budget forces more than one round


@pytest.mark.model
def test_empty_table_runs_to_an_empty_result(spark, settings, tmp_path):
    empty = spark.createDataFrame([], "id long, text string")
    out = run_plan(empty, Plan.parse("steps:\n  - {kind: map, template: '{text}', output: o}\n"), tmp_path, settings)
    assert out.count() == 0 and "o" in out.columns
