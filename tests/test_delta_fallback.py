"""The delta-rs fallback when a task fails its first attempt and Spark retries it.

The shared session runs ``local[2]``, where Spark never retries a task, so this runs a small job in
its own Spark (``local[2,2]``: two cores, two attempts per task, no Delta jars) in a subprocess.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from deltalake import DeltaTable

ROOT = Path(__file__).resolve().parent.parent

JOB = r"""
import json, sys, time
from pathlib import Path
from pyspark import TaskContext
from pyspark.sql import SparkSession, functions as F
from apwa_spark.delta import write_delta

table, seen = Path(sys.argv[1]), Path(sys.argv[2])
spark = SparkSession.builder.master("local[2,2]").config("spark.ui.enabled", "false").getOrCreate()

@F.udf("long")
def fail_first_attempt(i):
    task = TaskContext.get()
    if task.partitionId() == 0 and task.attemptNumber() == 0 and i == 10:
        files = []
        for _ in range(300):  # both tasks' first files are open in the table folder
            files = sorted(p.name for p in table.glob("part-*.parquet"))
            if len(files) >= 2:
                break
            time.sleep(0.1)
        seen.write_text(json.dumps(files))
        raise RuntimeError("the first attempt fails")
    return i

write_delta(spark.range(0, 100, numPartitions=2).select(fail_first_attempt("id").alias("id")), str(table), engine="deltars")
"""


def test_a_task_failing_its_first_attempt_leaves_each_row_once_and_no_orphan_files(tmp_path):
    table, seen = tmp_path / "t", tmp_path / "seen.json"
    done = subprocess.run([sys.executable, "-c", JOB, str(table), str(seen)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT,
                          env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the first attempt fails" in done.stderr  # the retry really happened
    delta = DeltaTable(str(table))
    assert delta.version() == 0
    ids = delta.to_pandas()["id"].tolist()
    assert sorted(ids) == list(range(100))  # each row once
    committed = {Path(uri).name for uri in delta.file_uris()}
    on_disk = {p.name for p in table.glob("*.parquet")}
    assert on_disk == committed  # the failed attempt's file is gone
    orphans = set(json.loads(seen.read_text())) - committed
    assert orphans and not orphans & on_disk  # there was one while the job ran
