"""spark-submit entry point of the extract job.

    spark-submit --properties-file conf/apwa-defaults.conf jobs/extract.py \
        --input docs.jsonl --output /tmp/apwa/extracted --schema 'title STRING, year INT'

The master, executors and ``--conf spark.apwa.*`` come from spark-submit; the job's own arguments
are those of ``apwa-spark extract`` (``--help`` lists them).
"""

import sys

from apwa_spark.jobs import add_extract_args, run_extract, submit_main

if __name__ == "__main__":
    sys.exit(submit_main("extract", "Extract a typed struct column (Spark DDL or JSON schema) from each row into a Delta table.", add_extract_args, run_extract))
