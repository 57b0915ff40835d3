"""spark-submit entry point of the query job.

    spark-submit --properties-file conf/apwa-defaults.conf jobs/query.py \
        'classify each review as positive or negative' --input reviews.jsonl --output /tmp/apwa/reviews

The master, executors and ``--conf spark.apwa.*`` come from spark-submit; the job's own arguments
are those of ``apwa-spark query`` (``--help`` lists them).
"""

import sys

from apwa_spark.jobs import add_query_args, run_query, submit_main

if __name__ == "__main__":
    sys.exit(submit_main("query", "Plan a plain-language query (or load --plan) and run it into Delta tables.", add_query_args, run_query))
