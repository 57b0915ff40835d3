"""spark-submit entry point of the summarize job.

    spark-submit --properties-file conf/apwa-defaults.conf jobs/summarize.py \
        --play romeo-and-juliet --output /tmp/apwa/romeo

The master, executors and ``--conf spark.apwa.*`` come from spark-submit; the job's own arguments
are those of ``apwa-spark summarize``.
"""

import argparse
import sys

from apwa_spark.cli import add_summarize_args, run_summarize
from apwa_spark.jobs import EXIT_CODES, add_common_args, guarded, preflight_args
from apwa_spark.plays import resolve_plays
from apwa_spark.session import get_session


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="spark-submit jobs/summarize.py",
                                     description="Summarize plays scene ──► act ──► play (──► corpus) into Delta tables.",
                                     epilog=EXIT_CODES)
    add_summarize_args(parser)
    add_common_args(parser)
    args = parser.parse_args(argv)

    def job() -> int:
        resolve_plays(args.play)
        spark = get_session(app_name="apwa-spark summarize")
        preflight_args(args, spark)
        return run_summarize(spark, args)

    return guarded(parser.prog, job)


if __name__ == "__main__":
    sys.exit(main())
