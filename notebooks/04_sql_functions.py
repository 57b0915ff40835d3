# Databricks notebook source
# MAGIC %md
# MAGIC # SQL functions: executor agents from Spark SQL
# MAGIC
# MAGIC `register(spark)` adds LLM functions to the session, named like Databricks AI Functions:
# MAGIC
# MAGIC | function | returns |
# MAGIC |---|---|
# MAGIC | `apwa_complete(prompt [, options map])` | the model's answer (`options`: `maxTokens`, `failOnError`) |
# MAGIC | `apwa_classify(text, array(labels))` | one of the labels |
# MAGIC | `apwa_filter(text, predicate)` | boolean: does the yes/no question hold for the text |
# MAGIC | `apwa_extract(text, schema)` | a VARIANT shaped to the schema (Spark DDL or JSON schema); read fields with `:name::type` |
# MAGIC | `apwa_redact(text [, array(entity types)])` | the text with `[ENTITY]` markers |
# MAGIC | `apwa_summarize(text)` | a summary (long text is chunked and reduced hierarchically) |
# MAGIC | `apwa_summarize_agg(text [, order_col])` | an **aggregate**: one hierarchical summary per `GROUP BY` group |
# MAGIC
# MAGIC A failed row gives NULL and the query goes on (`spark.apwa.sql.failOnError true` makes it fail instead);
# MAGIC every scalar function also has an `_or_error` variant returning `struct<result, errorMessage>`. NULL text
# MAGIC gives NULL without an LLM call.
# MAGIC
# MAGIC The functions are non-deterministic (they call a model), so this notebook materializes each result once
# MAGIC with `CACHE TABLE … AS SELECT …` and queries the cached table.

# COMMAND ----------

from apwa_spark.sql import register

settings = register(spark)  # registers the functions; starts the embedded endpoint once unless spark.apwa.llm.baseUrl is set
print("endpoint:", settings.llm.base_url)

# COMMAND ----------

reviews = spark.createDataFrame(
    [
        (1, "bakery", "The croissants were wonderful and the staff were kind. I will come back."),
        (2, "bakery", "Terrible service, cold coffee, and we waited an hour. Never again."),
        (3, "hotel", "Lovely room with a view of the sea; ask for Anna at anna@seaview.example.com or +33 1 23 45 67 89."),
        (4, "hotel", "The bed was broken and nobody answered the phone at reception."),
        (5, "hotel", None),
    ],
    "id long, product string, text string",
)
reviews.createOrReplaceTempView("reviews")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Classify, filter, redact, extract: one scalar function per column
# MAGIC
# MAGIC `apwa_extract` takes the schema as a Spark DDL string (or a JSON schema) and returns a VARIANT shaped to it.

# COMMAND ----------

# MAGIC %sql
# MAGIC CACHE TABLE answers AS
# MAGIC SELECT
# MAGIC   id,
# MAGIC   text,
# MAGIC   apwa_classify(text, array('positive', 'negative')) AS sentiment,
# MAGIC   apwa_filter(text, 'Does the review complain about something?') AS complaint,
# MAGIC   apwa_redact(text, array('email', 'phone')) AS redacted,
# MAGIC   apwa_extract(text, 'place STRING, stars INT') AS fields
# MAGIC FROM reviews;
# MAGIC
# MAGIC SELECT id, sentiment, complaint, redacted FROM answers ORDER BY id

# COMMAND ----------

# MAGIC %sql
# MAGIC -- typed fields out of the VARIANT: path:field::type
# MAGIC SELECT id, fields, fields:place::string AS place, fields:stars::int AS stars FROM answers ORDER BY id

# COMMAND ----------

# MAGIC %md
# MAGIC ## Free completion, and errors as data with `_or_error`

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT id, apwa_complete('Give a title for this review: ' || text, map('maxTokens', '24')) AS title
# MAGIC FROM reviews WHERE id <= 2

# COMMAND ----------

# MAGIC %sql
# MAGIC -- NULL text: NULL result, no call; a blank text: an error row, with the reason
# MAGIC SELECT t AS text, apwa_summarize_or_error(t) AS answer
# MAGIC FROM VALUES (CAST(NULL AS STRING)), ('   ') AS v(t)

# COMMAND ----------

# MAGIC %md
# MAGIC ## `apwa_summarize_agg`: one summary per group
# MAGIC
# MAGIC An aggregate, usable with `GROUP BY`: the group's texts (in `id` order here) are summarized hierarchically;
# MAGIC NULL texts are skipped. (Spark does not allow a pandas aggregate beside built-in aggregates such as
# MAGIC `count` in one `SELECT`; join them if you need both.)

# COMMAND ----------

# MAGIC %sql
# MAGIC CACHE TABLE by_product AS
# MAGIC SELECT product, apwa_summarize_agg(text, id) AS summary
# MAGIC FROM reviews GROUP BY product;
# MAGIC
# MAGIC SELECT * FROM by_product ORDER BY product

# COMMAND ----------

# Checks: types, NULL behaviour, and what the functions promise.
from pyspark.sql.types import BooleanType, StringType, VariantType

answers = spark.table("answers")
labelled = {r.id: r for r in answers.collect()}
assert sorted(labelled) == [1, 2, 3, 4, 5]  # one row out per row in
assert answers.schema["sentiment"].dataType == StringType()
assert answers.schema["complaint"].dataType == BooleanType()
assert {r.sentiment for r in labelled.values()} <= {"positive", "negative", None}
assert labelled[5].sentiment is None and labelled[5].complaint is None and labelled[5].redacted is None  # NULL in, NULL out
assert "anna@seaview.example.com" not in labelled[3].redacted and "[EMAIL]" in labelled[3].redacted
assert answers.schema["fields"].dataType == VariantType() and labelled[5].fields is None
groups = {r.product: r for r in spark.table("by_product").collect()}
assert sorted(groups) == ["bakery", "hotel"]  # one row per group
assert all(isinstance(g.summary, str) and g.summary.strip() for g in groups.values()), groups
print("checks passed")
