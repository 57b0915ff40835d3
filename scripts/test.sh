#!/usr/bin/env bash
# Set up, then run the test suite (real Spark local[2], real Delta tables, the real embedded model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
