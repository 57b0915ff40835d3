"""spark-submit entry point of the extract job.

    spark-submit --properties-file conf/apwa-defaults.conf jobs/extract.py \
        --input docs.jsonl --output /tmp/apwa/extracted --schema 'title STRING, year INT'

The master, executors and ``--conf spark.apwa.*`` come from spark-submit; the job's own arguments
are those of ``apwa-spark extract`` (``--help`` lists them).
"""

import argparse
import sys

from apwa_spark.jobs import add_common_args, add_extract_args, run_extract
from apwa_spark.session import get_session


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="spark-submit jobs/extract.py", description="Extract a typed struct column (Spark DDL or JSON schema) from each row into a Delta table.")
    add_extract_args(parser)
    add_common_args(parser)
    args = parser.parse_args(argv)
    return run_extract(get_session(app_name="apwa-spark extract"), args)


if __name__ == "__main__":
    sys.exit(main())
