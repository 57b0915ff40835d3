"""spark-submit entry point of the redact job.

    spark-submit --properties-file conf/apwa-defaults.conf jobs/redact.py \
        --input docs.jsonl --output /tmp/apwa/redacted --entities email,phone,person

The master, executors and ``--conf spark.apwa.*`` come from spark-submit; the job's own arguments
are those of ``apwa-spark redact`` (``--help`` lists them).
"""

import argparse
import sys

from apwa_spark.jobs import add_common_args, add_redact_args, run_redact
from apwa_spark.session import get_session


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="spark-submit jobs/redact.py", description="Redact PII in a text column (rule detectors + the model for names) into a Delta table.")
    add_redact_args(parser)
    add_common_args(parser)
    args = parser.parse_args(argv)
    return run_redact(get_session(app_name="apwa-spark redact"), args)


if __name__ == "__main__":
    sys.exit(main())
