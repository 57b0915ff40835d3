#!/usr/bin/env bash
# Set up, then summarize Romeo and Juliet scene ──► act ──► play with the embedded model (no API key, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/apwa-spark summarize --play "${PLAY:-romeo-and-juliet}" --output "runs/${PLAY:-romeo-and-juliet}" "$@"
