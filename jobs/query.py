"""spark-submit entry point of the query job.

    spark-submit --properties-file conf/apwa-defaults.conf jobs/query.py \
        'classify each review as positive or negative' --input reviews.jsonl --output /tmp/apwa/reviews

The master, executors and ``--conf spark.apwa.*`` come from spark-submit; the job's own arguments
are those of ``apwa-spark query`` (``--help`` lists them).
"""

import argparse
import sys

from apwa_spark.jobs import add_common_args, add_query_args, run_query
from apwa_spark.session import get_session


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="spark-submit jobs/query.py", description="Plan a plain-language query (or load --plan) and run it into Delta tables.")
    add_query_args(parser)
    add_common_args(parser)
    args = parser.parse_args(argv)
    return run_query(get_session(app_name="apwa-spark query"), args)


if __name__ == "__main__":
    sys.exit(main())
