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
from apwa_spark.plan.ir import Cardinality, PlanError
from apwa_spark.plan.metadata import table_metadata
from apwa_spark.plan.planner import or_list_labels, plan_query, plan_schema, query_numbers, query_words
from apwa_spark.plan.run import run_plan
from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET_TAIL = "ZEBRA-7731-TAIL"  # sits past the 80-character sample cut: the planner must never see it
#: one query per step kind (the benchmark has more); none is a few-shot example of the planner.
QUERIES = {
    "classify": "Classify each review as positive or negative.",
    "filter": "Keep only the reviews that complain about service.",
    "extract": "Extract the dish and the price mentioned in each review.",
    "redact": "Redact names, e-mails and phone numbers from the reviews.",
    "map": "Translate every review into German.",
    "chunk": "Split each review into pieces of at most 200 characters.",
    "reduce": "Summarize the reviews of each author into one summary.",
}
MANGLED = {
    "thai": "จัดประเภทรีวิวแต่ละรายการว่าเป็นบวกหรือลบ",
    "noise": bytes(range(1, 255)).decode("latin-1")[::7] + " ☃ \udcff",
}


@pytest.fixture(scope="module")
def reviews(spark):
    rows = [(i, "ann" if i % 2 else "bob",
             f"Review {i}: the soup was {'great' if i % 2 else 'cold'} and the waiter was slow. Call Ann Lee at "
             f"555-201-33{i:02d} or ann{i}@example.com. " + "x" * 20 + SECRET_TAIL)
            for i in range(4)]
    return spark.createDataFrame(rows, "id long, author string, text string")


def test_schema_narrows_columns_to_the_table():
    schema = plan_schema(["id", "text"])
    redact = schema["$defs"]["RedactStep"]["properties"]["column"]
    assert redact["enum"] == ["id", "text"]


def test_query_words_numbers_and_the_or_list_rule():
    assert query_words("Is each ticket urgent or not urgent?")[:3] == ["ticket", "urgent", "not"]
    assert "not urgent" in query_words("Is each ticket urgent or not urgent?")
    assert query_numbers("pieces of 1,000 or 200 characters") == [1000, 200]
    assert or_list_labels("Classify each review as positive, neutral or negative.") == ["positive", "neutral", "negative"]


def _expected_rows(plan, df) -> tuple[int, int]:
    """(min, max) result rows the plan's cardinalities allow over ``df``."""
    n = df.count()
    lo, hi = n, n
    for step in plan.steps:
        if step.cardinality == Cardinality.SELECTION:
            lo = 0
        elif step.cardinality == Cardinality.ONE_TO_MANY:
            hi = 10 ** 6
        elif step.cardinality == Cardinality.MANY_TO_ONE:
            groups = df.select(*step.group_by).distinct().count() if step.group_by else 1
            lo, hi = groups, groups
    return lo, hi


@pytest.mark.parametrize("kind", list(QUERIES))
def test_planner_plan_validates_and_runs_end_to_end(kind, reviews, settings, endpoint, tmp_path, record_property):
    metadata = table_metadata(reviews)
    with FaultyEndpoint(endpoint.base_url) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url})
        plan = plan_query(QUERIES[kind], metadata, local)
    assert not any(SECRET_TAIL.encode() in body for body in proxy.bodies)  # metadata only, never the data
    assert 1 <= proxy.requests <= 6  # kind + fields, one repair round, each with at most one JSON repair
    plan.check(reviews.columns)
    assert plan.query == QUERIES[kind] and plan.provenance.decided_by["step0.kind"] == "model"
    assert plan.provenance.llm_calls == proxy.requests
    kinds = [s.kind for s in plan.steps]
    record_property("planned_kinds", kinds)
    print(f"{kind}: planned {kinds}, actions {plan.provenance.actions}, decided by {plan.provenance.decided_by}")
    out = run_plan(reviews, plan, tmp_path, settings)
    lo, hi = _expected_rows(plan, reviews)
    assert lo <= out.count() <= hi
    for name, step in plan.named_steps():
        assert set(step.writes()) <= set(out.columns)
        if step.kind not in ("chunk", "reduce"):
            assert f"{name}_meta" in out.columns


@pytest.mark.parametrize("which", sorted(MANGLED))
def test_a_mangled_query_gives_a_plan_or_a_clear_error(which, reviews, settings):
    try:
        plan = plan_query(MANGLED[which], table_metadata(reviews), settings)
    except PlanError as err:
        assert "Table the planner saw" in str(err) or "has no words" in str(err)
    else:
        plan.check(reviews.columns)
        print(f"{which}: planned {[s.kind for s in plan.steps]} ({plan.provenance.decided_by})")


def test_a_query_of_no_words_is_a_clear_error(reviews, settings):
    with pytest.raises(PlanError, match="has no words"):
        plan_query("?!? 123 ...", table_metadata(reviews), settings)


def test_garbage_answers_end_in_an_error_showing_the_query_and_answer(reviews, settings, endpoint):
    metadata = table_metadata(reviews)
    with FaultyEndpoint(endpoint.base_url, bad_json_output=1.0) as proxy:
        local = settings.with_overrides(**{"spark.apwa.llm.baseUrl": proxy.base_url})
        with pytest.raises(PlanError) as err:
            plan_query("Classify each review as positive or negative.", metadata, local)
    assert proxy.requests == 2  # the kind stage: one answer and the client's one JSON repair
    assert "Classify each review" in str(err.value) and "Table the planner saw" in str(err.value)
    assert "unterminated" in str(err.value) or "InvalidJSON" in str(err.value)
    # the error echoes no row text: neither sample values (e-mails, phones, words of a row) nor the rows
    for value in ("@example.com", "555-201-33", "Ann Lee", "the soup was", SECRET_TAIL):
        assert value not in str(err.value), value


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
    docs = read_input(spark, inputs / "docs")
    assert docs.columns == ["path", "text"]
    assert [r.text for r in docs.collect()] == ["# A\nfirst document", "second document"]  # one row per file
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


def test_dry_run_prints_the_estimate_with_money_and_writes_nothing(endpoint, inputs, tmp_path):
    prices = ["--conf", "spark.apwa.price.inputPer1M=2.5", "--conf", "spark.apwa.price.outputPer1M=10",
              "--conf", "spark.apwa.price.currency=EUR"]
    with FaultyEndpoint(endpoint.base_url) as proxy:
        out = _cli("run", "--plan", str(inputs / "plan.yaml"), "--input", str(inputs / "r.csv"), "--output",
                   str(tmp_path / "out"), "--dry-run", "--conf", f"spark.apwa.llm.baseUrl={proxy.base_url}", *prices)
    assert out.returncode == 0, out.stderr[-2000:]
    assert proxy.requests == 0 and not (tmp_path / "out").exists()
    rows = {cells[0]: cells for line in out.stdout.splitlines() if line.startswith("| classify0 |") or line.startswith("| total |")
            for cells in [[c.strip() for c in line.strip().strip("|").split("|")]]}
    step, total = rows["classify0"], rows["total"]
    calls, cached, prompt, completion = int(step[2]), int(step[3]), int(step[4]), int(step[5])
    assert calls == 2 and cached == 0 and prompt > 0 and completion > 0  # two rows, one call each, no cache yet
    assert step[-1] == total[-1] == f"{(prompt * 2.5 + completion * 10) / 1e6:.4f} EUR"
    assert total[2:6] == step[2:6] and "2.5 in, 10 out" in total[7]


def test_plan_file_from_a_newer_ir_version_is_refused(inputs, tmp_path):
    newer = tmp_path / "newer.yaml"
    newer.write_text("version: 7\nsteps:\n  - {kind: chunk}\n")
    out = _cli("explain", "--plan", str(newer), "--input", str(inputs / "r.csv"))
    assert out.returncode == 2 and "version 7 is newer" in out.stderr
