"""spark-submit entry point of the sql job.

    spark-submit --properties-file conf/apwa-defaults.conf jobs/sql.py \
        --table reviews=reviews.jsonl "SELECT apwa_classify(text, array('pos', 'neg')) FROM reviews"

The master, executors and ``--conf spark.apwa.*`` come from spark-submit; the job's own arguments
are those of ``apwa-spark sql`` (``--help`` lists them).
"""

import sys

from apwa_spark.jobs import add_sql_args, run_sql, submit_main

if __name__ == "__main__":
    sys.exit(submit_main("sql", "Run SQL with the apwa_* functions registered and inputs as temporary views.", add_sql_args, run_sql))
