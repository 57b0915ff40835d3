"""spark-submit entry point of the redact job.

    spark-submit --properties-file conf/apwa-defaults.conf jobs/redact.py \
        --input docs.jsonl --output /tmp/apwa/redacted --entities email,phone,person

The master, executors and ``--conf spark.apwa.*`` come from spark-submit; the job's own arguments
are those of ``apwa-spark redact`` (``--help`` lists them).
"""

import sys

from apwa_spark.jobs import add_redact_args, run_redact, submit_main

if __name__ == "__main__":
    sys.exit(submit_main("redact", "Redact PII in a text column (rule detectors + the model for names) into a Delta table.", add_redact_args, run_redact))
