# Databricks notebook source
# MAGIC %md
# MAGIC # Typed extraction: a pydantic model as the output schema
# MAGIC
# MAGIC `apwa_spark.extract(df, template, schema)` fills `template` (`{column}` placeholders) for each row, asks the
# MAGIC model for JSON constrained to `schema` (a pydantic model or a JSON schema), validates the answer and returns
# MAGIC it as a typed Spark **struct** column: nested fields are ordinary columns to select, filter and group by.
# MAGIC A row whose answer does not validate gets a NULL struct and `extract0_meta.status = 'error'`.

# COMMAND ----------

# Parameters: plain variables (no widgets); the local runner may override them through env vars.
import os

OUTPUT = os.path.join(os.environ.get("APWA_NOTEBOOK_OUTPUT", "/tmp/apwa-notebooks"), "typed_extraction")  # on Databricks: a /Volumes/... or dbfs:/ path

# COMMAND ----------

from apwa_spark.sql import register

settings = register(spark)  # one endpoint for the whole notebook (the embedded one unless spark.apwa.llm.baseUrl is set)
print("endpoint:", settings.llm.base_url)

# COMMAND ----------

# MAGIC %md
# MAGIC ## The schema: a pydantic model

# COMMAND ----------

from pydantic import BaseModel, Field


class Paper(BaseModel):
    """One bibliography entry."""

    title: str = Field(max_length=120)
    first_author: str = Field(max_length=60)
    year: int


# COMMAND ----------

references = spark.createDataFrame(
    [
        (1, "Vaswani, A. et al. (2017). Attention Is All You Need. NeurIPS."),
        (2, "Zaharia, M. et al. (2012). Resilient Distributed Datasets. NSDI."),
        (3, "Dean, J. and Ghemawat, S. (2004). MapReduce: Simplified Data Processing on Large Clusters. OSDI."),
    ],
    "id long, text string",
)
display(references)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Extract

# COMMAND ----------

import apwa_spark

papers = apwa_spark.extract(references, "Reference: {text}", Paper, output="paper", path=OUTPUT)
papers.printSchema()

# COMMAND ----------

# MAGIC %md
# MAGIC ## The struct column, and its nested fields as columns

# COMMAND ----------

display(papers.select("id", "paper", "extract0_meta.status").orderBy("id"))

# COMMAND ----------

display(papers.select("id", "paper.title", "paper.first_author", "paper.year").where("paper.year IS NOT NULL").orderBy("paper.year"))

# COMMAND ----------

# Checks: the struct is typed by the model, and no row is lost.
from pyspark.sql.types import LongType, StringType, StructType

paper_type = papers.schema["paper"].dataType
assert isinstance(paper_type, StructType), paper_type
assert [(f.name, f.dataType) for f in paper_type.fields] == [("title", StringType()), ("first_author", StringType()), ("year", LongType())], paper_type
rows = papers.collect()
assert sorted(r.id for r in rows) == [1, 2, 3]
assert all((r.paper is None) == (r.extract0_meta.status == "error") for r in rows)
assert any(r.extract0_meta.status == "ok" for r in rows)
print("checks passed")
