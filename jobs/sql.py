"""spark-submit entry point of the sql job.

    spark-submit --properties-file conf/apwa-defaults.conf jobs/sql.py \
        --table reviews=reviews.jsonl "SELECT apwa_classify(text, array('pos', 'neg')) FROM reviews"

The master, executors and ``--conf spark.apwa.*`` come from spark-submit; the job's own arguments
are those of ``apwa-spark sql`` (``--help`` lists them).
"""

import argparse
import sys

from apwa_spark.jobs import add_common_args, add_sql_args, run_sql
from apwa_spark.session import get_session


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="spark-submit jobs/sql.py", description="Run SQL with the apwa_* functions registered and inputs as temporary views.")
    add_sql_args(parser)
    add_common_args(parser)
    args = parser.parse_args(argv)
    return run_sql(get_session(app_name="apwa-spark sql"), args)


if __name__ == "__main__":
    sys.exit(main())
