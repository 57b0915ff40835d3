"""SQL functions through spark.sql, on real rows, with the embedded model."""

from __future__ import annotations

import pytest
from pyspark.errors import AnalysisException
from pyspark.sql.types import BooleanType, StringType, StructType, VariantType

from apwa_spark.plan.ir import Plan
from apwa_spark.plan.run import run_plan
from apwa_spark.sql import register

pytestmark = pytest.mark.model

ROWS = [
    (1, "a", 1, "The food was wonderful and the staff were kind. I will come back."),
    (2, "a", 2, "Terrible service, cold soup, and we waited an hour. Never again."),
    (3, "b", 1, "Contact Maria Lopez at maria.lopez@example.com or +44 20 7946 0958 about the invoice."),
    (4, "b", 2, None),
    (5, "c", 1, None),
]


@pytest.fixture(scope="module")
def reviews(spark, settings):
    register(spark, settings)
    df = spark.createDataFrame(ROWS, "id long, grp string, pos int, text string")
    df.createOrReplaceTempView("reviews")
    return df


def _one_column(spark, sql):
    df = spark.sql(sql)
    return df.schema.fields[-1].dataType, {r[0]: r[-1] for r in df.collect()}


def test_classify_returns_one_of_the_labels_and_null_for_null_text(spark, reviews):
    dtype, out = _one_column(spark, "SELECT id, apwa_classify(text, array('positive', 'negative')) FROM reviews WHERE id <= 4")
    assert dtype == StringType()
    assert out[1] in ("positive", "negative") and out[2] in ("positive", "negative") and out[4] is None


def test_filter_is_boolean(spark, reviews):
    dtype, out = _one_column(spark, "SELECT id, apwa_filter(text, 'Is this text about food or service?') FROM reviews WHERE id <= 2 OR id = 4")
    assert dtype == BooleanType()
    assert isinstance(out[1], bool) and isinstance(out[2], bool) and out[4] is None


def test_extract_is_a_variant_shaped_to_the_ddl_schema(spark, reviews):
    df = spark.sql("SELECT id, apwa_extract(text, 'name STRING, email STRING') AS r FROM reviews WHERE id IN (3, 4)")
    assert df.schema["r"].dataType == VariantType()
    typed = df.selectExpr("id", "CAST(r AS STRUCT<name: STRING, email: STRING>) AS s")
    assert typed.schema["s"].dataType == StructType.fromJson({"type": "struct", "fields": [
        {"name": "name", "type": "string", "nullable": True, "metadata": {}},
        {"name": "email", "type": "string", "nullable": True, "metadata": {}}]})
    rows = {r.id: r.s for r in typed.collect()}
    assert rows[4] is None and rows[3] is not None and set(rows[3].asDict()) == {"name", "email"}


def test_extract_takes_a_json_schema(spark, reviews):
    schema = '{"type": "object", "properties": {"rating": {"type": "integer"}}}'
    [row] = spark.sql(f"SELECT apwa_extract(text, '{schema}'):rating::int AS rating, "
                      f"apwa_extract_or_error(text, '{schema}').errorMessage AS err FROM reviews WHERE id = 1").collect()
    assert row.err is None and (row.rating is None or isinstance(row.rating, int))


def test_redact_removes_the_email_and_phone(spark, reviews):
    dtype, out = _one_column(spark, "SELECT id, apwa_redact(text, array('email', 'phone')) FROM reviews WHERE id IN (3, 4)")
    assert dtype == StringType() and out[4] is None
    assert "maria.lopez@example.com" not in out[3] and "7946" not in out[3] and "[EMAIL]" in out[3]


def test_complete_and_summarize_return_text(spark, reviews):
    [row] = spark.sql("SELECT apwa_complete('Describe this review in three words: ' || text, map('maxTokens', '24')) AS c, "
                      "apwa_summarize(text) AS s FROM reviews WHERE id = 1").collect()
    assert isinstance(row.c, str) and row.c and isinstance(row.s, str) and row.s


def test_blank_text_is_null_with_an_error_message_and_fail_on_error_raises(spark, reviews):
    [row] = spark.sql("SELECT apwa_complete('  ') AS c, apwa_complete_or_error('  ') AS e").collect()
    assert row.c is None and row.e.result is None and row.e.errorMessage.startswith("EmptyInput")
    with pytest.raises(Exception, match="apwa_complete: EmptyInput"):
        spark.sql("SELECT apwa_complete('  ', map('failOnError', 'true'))").collect()


def test_wrong_argument_types_fail_at_analysis(spark, reviews):
    with pytest.raises(AnalysisException, match="ARRAY<STRING>"):
        spark.sql("SELECT apwa_classify(text, 'positive') FROM reviews")
    with pytest.raises(AnalysisException):
        spark.sql("SELECT apwa_redact(text, map('a', 'b')) FROM reviews")


def test_malformed_schema_string_fails_the_query_naming_it(spark, reviews):
    with pytest.raises(Exception, match="malformed schema"):
        spark.sql("SELECT apwa_extract(text, 'name STRNG') FROM reviews WHERE id = 1").collect()


def test_summarize_agg_gives_one_row_per_group_like_the_plan_reduce(spark, reviews, settings, tmp_path):
    agg = spark.sql("SELECT grp, apwa_summarize_agg(text, pos) AS summary FROM reviews GROUP BY grp")
    out = {r.grp: r.summary for r in agg.collect()}
    assert set(out) == {"a", "b", "c"}
    assert isinstance(out["a"], str) and out["a"] and isinstance(out["b"], str)
    assert out["c"] is None  # the group's only text is NULL: an empty group gives NULL
    plan = Plan.parse("steps:\n  - {kind: reduce, template: 'Summarize: {text}', group_by: [grp], order_by: pos, output: summary}\n")
    planned = run_plan(reviews.filter("text IS NOT NULL"), plan, tmp_path / "plan", settings)
    assert planned.count() == agg.filter("summary IS NOT NULL").count()
    assert planned.schema["summary"].dataType == agg.schema["summary"].dataType == StringType()
