# Databricks notebook source
# MAGIC %md
# MAGIC # PII redaction with `apwa_spark.redact`
# MAGIC
# MAGIC `redact` replaces personal data with `[ENTITY]` markers and lists what it found as spans
# MAGIC (`start`, `end`, `entity`; never the matched text). Structured entities (e-mail, phone, IBAN, card and ID numbers, …)
# MAGIC are found by rule tools from the capability registry; names of people are the model's job. It runs as a
# MAGIC pandas UDF, one executor agent per batch of rows, and writes its result as a Delta table under `OUTPUT`.
# MAGIC
# MAGIC Every input row comes out exactly once: a row the agent could not handle (here: the NULL text) is kept with
# MAGIC `redact0_meta.status = 'error'` and the reason.

# COMMAND ----------

# Parameters: plain variables (no widgets); the local runner may override them through env vars.
import os

OUTPUT = os.path.join(os.environ.get("APWA_NOTEBOOK_OUTPUT", "/tmp/apwa-notebooks"), "pii_redaction")  # on Databricks: a /Volumes/... or dbfs:/ path
ENTITIES = ["person", "email", "phone", "iban", "id_number"]

# COMMAND ----------

from apwa_spark.sql import register

settings = register(spark)  # one endpoint for the whole notebook (the embedded one unless spark.apwa.llm.baseUrl is set)
print("endpoint:", settings.llm.base_url)

# COMMAND ----------

# MAGIC %md
# MAGIC ## A few support tickets with personal data

# COMMAND ----------

tickets = spark.createDataFrame(
    [
        (1, "Please call Maria Lopez on +44 20 7946 0958 or write to maria.lopez@example.com about invoice 4471."),
        (2, "Refund to IBAN DE89 3704 0044 0532 0130 00 for customer John Smith, SSN 123-45-6789."),
        (3, "The printer on the third floor is jammed again."),
        (4, None),
        (5, "Contact: jane.doe@mail.example.org, 555-867-5309. Jane prefers e-mail."),
    ],
    "id long, text string",
)
display(tickets)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Redact

# COMMAND ----------

import apwa_spark

redacted = apwa_spark.redact(tickets, column="text", entities=ENTITIES, output="clean", path=OUTPUT)
redacted.printSchema()

# COMMAND ----------

# MAGIC %md
# MAGIC ## Redacted text and the spans found

# COMMAND ----------

display(redacted.select("id", "clean").orderBy("id"))

# COMMAND ----------

from pyspark.sql import functions as F

spans = redacted.select("id", F.explode("clean_spans").alias("span")).select("id", "span.entity", "span.start", "span.end")
display(spans.orderBy("id", "start"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Rows by status
# MAGIC
# MAGIC One row out per row in; the NULL text is an `error` row, not a lost one.

# COMMAND ----------

display(redacted.groupBy("redact0_meta.status").count().orderBy("status"))
display(redacted.filter("redact0_meta.status = 'error'").select("id", "redact0_meta.error_class", "redact0_meta.error"))

# COMMAND ----------

# Checks: what this notebook promises.
rows = {r.id: r for r in redacted.collect()}
assert sorted(rows) == [1, 2, 3, 4, 5]  # no row lost
assert rows[4].redact0_meta.status == "error"  # the NULL text
for secret in ["maria.lopez@example.com", "7946 0958", "DE89 3704", "123-45-6789", "jane.doe@mail.example.org", "867-5309"]:
    assert not any(secret in (r.clean or "") for r in rows.values()), secret
assert "[EMAIL]" in rows[1].clean and "[PHONE]" in rows[1].clean
assert {s.entity for s in rows[2].clean_spans} >= {"iban", "id_number"}
print("checks passed")
