"""The planner agent and the plan / run / explain commands, with the real embedded model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

from apwa_spark.inputs import read_input
from apwa_spark.plan.ir import PlanError
from apwa_spark.plan.metadata import table_metadata
from apwa_spark.plan.planner import plan_query, plan_schema
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET_TAIL = "ZEBRA-7731-TAIL"  # sits past the 80-character sample cut: the planner must never see it
QUERIES = {
    "classify": "Classify each review as positive or negative.",
    "filter": "Keep only the reviews that complain about service.",
    "extract": "Extract the dish and the price mentioned in each review.",
    "redact": "Redact names, e-mails and phone numbers from the reviews.",
    "map": "Translate every review into German.",
    "chunk": "Split each review into pieces of at most 200 characters.",
    "mangled": "Luokittele jokainen arvostelu myönteiseksi tai kielteiseksi ☃ ïñ 日本語で",  # Finnish + noise
}


@pytest.fixture(scope="module")
def reviews(spark):
    rows = [(i, f"Review {i}: the soup was {'great' if i % 2 else 'cold'} and the waiter was slow. " + "x" * 60 + SECRET_TAIL)
            for i in range(8)]
    return spark.createDataFrame(rows, "id long, text string")


def test_schema_narrows_columns_to_the_table():
    schema = plan_schema(["id", "text"])
    redact = schema["$defs"]["RedactStep"]["properties"]["column"]
    assert redact["enum"] == ["id", "text"]


@pytest.mark.parametrize("kind", sorted(QUERIES))
def test_planner_returns_a_checked_plan_or_says_what_it_saw(kind, reviews, settings, endpoint):
    metadata = table_metadata(reviews)
    with FaultyEndpoint(endpoint.base_url) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url})
        try:
            plan = plan_query(QUERIES[kind], metadata, local)
        except PlanError as err:
            message = str(err)
            assert QUERIES[kind] in message and "Table the planner saw" in message and "rows: 8" in message
            plan = None
    assert not any(SECRET_TAIL.encode() in body for body in proxy.bodies)  # metadata only, never the data
    assert 1 <= proxy.requests <= 4  # one answer, one repair round (each with at most one JSON repair)
    if plan is not None:
        plan.check(["id", "text"])
        assert plan.query == QUERIES[kind]
        print(f"{kind}: planned {[s.kind for s in plan.steps]}")


def test_garbage_answers_end_in_an_error_showing_the_query_and_answer(reviews, settings, endpoint):
    metadata = table_metadata(reviews)
    with FaultyEndpoint(endpoint.base_url, bad_json_output=1.0) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url})
        with pytest.raises(PlanError) as err:
            plan_query("Classify each review as positive or negative.", metadata, local)
    assert proxy.requests == 4  # two planner rounds, each with the client's one JSON repair
    assert "Classify each review" in str(err.value) and "unterminated" in str(err.value)


def test_one_function_per_step_kind_skips_the_planner(reviews, settings, tmp_path):
    import apwa_spark

    out = apwa_spark.classify(reviews.limit(2), "Review: {text}", ["positive", "negative"], output="sentiment",
                              path=tmp_path, settings=settings)
    assert out.count() == 2 and {"sentiment", "classify0_meta"} <= set(out.columns)
    pieces = apwa_spark.chunk(reviews.limit(1), max_chars=50, path=tmp_path / "c", settings=settings)
    assert pieces.count() >= 3


def test_empty_query_is_a_clear_error(reviews, settings):
    with pytest.raises(PlanError, match="query is empty"):
        plan_query("  ", table_metadata(reviews), settings)


# ---- inputs and the CLI ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    (root / "r.jsonl").write_text("\n".join(json.dumps({"id": i, "text": f"The soup was cold, review {i}."}) for i in range(3)))
    (root / "r.csv").write_text('id,text\n1,"Great, kind staff."\n2,"Slow service."\n')
    docs = root / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\nfirst document")
    (docs / "b.txt").write_text("second document")
    (root / "plan.yaml").write_text("steps:\n  - {kind: classify, template: 'Review: {text}', labels: [positive, negative], output: sentiment}\n")
    return root


def test_every_input_format_reads(spark, inputs, tmp_path):
    assert read_input(spark, inputs / "r.jsonl").count() == 3
    assert read_input(spark, inputs / "r.csv").columns == ["id", "text"]
    assert read_input(spark, inputs / "docs").columns == ["path", "text"]
    read_input(spark, inputs / "r.jsonl").write.parquet(str(tmp_path / "p"))
    assert read_input(spark, tmp_path / "p").count() == 3
    with pytest.raises(FileNotFoundError):
        read_input(spark, tmp_path / "missing.csv")


def _cli(*args, timeout=600):
    return subprocess.run([str(BIN / "apwa-spark"), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYSPARK_PYTHON": sys.executable})


def test_run_with_a_hand_written_plan_writes_delta(endpoint, inputs, tmp_path):
    out = _cli("run", "--plan", str(inputs / "plan.yaml"), "--input", str(inputs / "r.jsonl"), "--output", str(tmp_path),
               "--conf", f"spark.apwa.llm.baseUrl={endpoint.base_url}")
    assert out.returncode == 0, out.stderr[-2000:]
    table = DeltaTable(str(tmp_path / "result")).to_pandas()
    assert len(table) == 3 and set(table["sentiment"].dropna()) <= {"positive", "negative"}


def test_explain_spends_nothing_and_shows_plan_physical_plan_and_estimate(endpoint, inputs):
    with FaultyEndpoint(endpoint.base_url) as proxy:
        out = _cli("explain", "--plan", str(inputs / "plan.yaml"), "--input", str(inputs / "r.csv"),
                   "--conf", f"spark.apwa.llm.baseUrl={proxy.base_url}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "# Spark physical plan" in out.stdout and "ArrowEvalPython" in out.stdout
    assert "| classify0 | classify | 2 |" in out.stdout
    assert proxy.requests == 0


def test_plan_file_from_a_newer_ir_version_is_refused(inputs, tmp_path):
    newer = tmp_path / "newer.yaml"
    newer.write_text("version: 7\nsteps:\n  - {kind: chunk}\n")
    out = _cli("explain", "--plan", str(newer), "--input", str(inputs / "r.csv"))
    assert out.returncode == 2 and "version 7 is newer" in out.stderr
