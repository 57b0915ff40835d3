"""The leak test of issue 15: seeded Faker rows with known PII go through ``apwa-spark redact``, a
plan's ``redact`` step and ``apwa_redact`` in SQL, against the real embedded model; then every file
under each output tree (Delta tables decoded, response cache, dead letters, manifests, logs) and
the captured stdout and stderr are scanned for the known values."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from apwa_spark.testing.leaks import file_texts, scan_texts, scan_tree

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks" / "data"))
from pii_texts import generate  # noqa: E402

pytestmark = pytest.mark.model

ROWS = 12
STRUCTURED = ("email", "phone", "iban", "card_number", "national_id", "ip_address")


@pytest.fixture(scope="module")
def texts():
    rows = generate(ROWS, seed=15)
    assert {s.entity for r in rows for s in r.spans} >= set(STRUCTURED) | {"person"}
    return rows


@pytest.fixture(scope="module")
def docs(texts, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pii-input") / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": t.id, "text": t.text}) + "\n" for t in texts))
    return path


def _conf(settings, tmp_path) -> list[str]:
    keys = {"spark.apwa.llm.baseUrl": settings.llm.base_url, "spark.apwa.llm.serverSlots": str(settings.llm.server_slots),
            "spark.apwa.run.registry": str(tmp_path / "registry")}
    return [arg for k, v in keys.items() for arg in ("--conf", f"{k}={v}")]


def test_no_pii_lands_anywhere_under_the_outputs_or_on_the_console(spark, settings, texts, docs, tmp_path, capfd, caplog):
    from apwa_spark.cli import main
    from apwa_spark.inputs import read_input
    from apwa_spark.plan.ir import Plan
    from apwa_spark.steps.redact import RedactStep
    from apwa_spark.plan.run import run_plan

    caplog.set_level(logging.INFO)  # the runs' log records (INFO and up), scanned with the files
    outputs = {"job": tmp_path / "job", "plan": tmp_path / "plan", "sql": tmp_path / "sql"}
    assert main(["redact", "--input", str(docs), "--output", str(outputs["job"]), *_conf(settings, tmp_path)]) == 0
    plan = Plan(steps=[RedactStep(column="text", output="clean")])
    run_plan(read_input(spark, str(docs)), plan, outputs["plan"], settings)
    assert main(["sql", "--table", f"docs={docs}", "--output", str(outputs["sql"] / "result"), *_conf(settings, tmp_path),
                 "SELECT id, apwa_redact(text) AS redacted FROM docs"]) == 0
    console = capfd.readouterr()

    # what each run produced, per row: the redacted text (a missed name may stay only there)
    redacted = {name: {r["id"]: r[column] for r in _rows(out / "result")}
                for (name, out), column in zip(outputs.items(), ("redacted", "clean", "redacted"))}
    assert all(len(rows) == ROWS for rows in redacted.values()), {k: len(v) for k, v in redacted.items()}
    assert "text" not in _columns(outputs["job"] / "result") and "text" not in _columns(outputs["plan"] / "result")

    structured = [s.value for t in texts for s in t.spans if s.entity in STRUCTURED]
    names = {s.value for t in texts for s in t.spans if s.entity == "person"}
    # the scanner finds every value in the input: a leak would not go unseen
    assert all(scan_texts(file_texts(docs.parent), structured + sorted(names)).values())

    written = [t for out in outputs.values() for t in file_texts(out)]
    written += [("stdout", console.out), ("stderr", console.err), ("log records", caplog.text)]
    assert all(any(n.startswith(str(out / "result")) and n.endswith("#rows") for n, _ in written) for out in outputs.values())
    leaks = {v: where for v, where in scan_texts(written, structured).items() if where}
    assert leaks == {}, leaks
    # a name may appear only in the redacted text of a row where it was missed:
    # (1) only in a row whose own input held it (no name crosses rows)
    inputs = {t.id: t.text for t in texts}
    crossed = {(run, i, n) for run, rows in redacted.items() for i, text in rows.items() if text
               for n in names if n in text and n not in inputs[i]}
    assert crossed == set(), crossed
    # (2) in no other column of the results (spans, meta, ids) ...
    others = [t for (run, out), column in zip(outputs.items(), ("redacted", "clean", "redacted"))
              for t in file_texts(out / "result", skip_columns=[column]) if t[0].endswith("#rows")]
    assert {v: where for v, where in scan_texts(others, sorted(names)).items() if where} == {}
    # (3) ... and in nothing else written: side stores, manifests, dead letters, caches. (The result
    # tables' own files, raw Parquet pages and the Delta log's min/max statistics of the redacted
    # column, hold that column's text, and so does the jobs' console preview of the result, so only
    # names never missed must be absent there.)
    results = (*(str(out / "result") for out in outputs.values()), "stdout", "stderr")
    side = [t for t in written if not t[0].startswith(results)]
    assert {v: where for v, where in scan_texts(side, sorted(names)).items() if where} == {}
    missed = {n for rows in redacted.values() for text in rows.values() if text for n in names if n in text}
    in_results = [t for t in written if t[0].startswith(results)]
    assert {v: where for v, where in scan_texts(in_results, sorted(names - missed)).items() if where} == {}
    assert len(missed) <= len(names) // 4, missed  # the model finds most names


def test_keep_source_keeps_the_column_and_warns_on_stderr(spark, settings, texts, docs, tmp_path, capfd, caplog):
    from apwa_spark.inputs import read_input
    from apwa_spark.plan.ir import Plan
    from apwa_spark.steps.redact import RedactStep
    from apwa_spark.plan.run import run_plan

    plan = Plan(steps=[RedactStep(column="text", use_model=False, keep_source=True)])
    out = run_plan(read_input(spark, str(docs)), plan, tmp_path / "kept", settings)
    assert {"text", "redacted", "redacted_spans"} <= set(out.columns)
    assert "keeps the source column 'text' (keep_source)" in capfd.readouterr().err
    assert any("keep_source" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert out.schema["redacted_spans"].dataType.elementType.fieldNames() == ["start", "end", "entity"]
    # the scanner finds PII in a Delta table's decoded rows: here, the kept source column
    emails = [s.value for t in texts for s in t.spans if s.entity == "email"]
    assert emails and all(scan_tree(tmp_path / "kept" / "result", emails).values())


def _rows(table: Path) -> list[dict]:
    from deltalake import DeltaTable

    return DeltaTable(str(table)).to_pyarrow_table().to_pylist()


def _columns(table: Path) -> list[str]:
    from deltalake import DeltaTable

    return DeltaTable(str(table)).to_pyarrow_table().column_names


def test_redact_job_dead_letter_manifest_and_registry_hold_no_pii(settings, endpoint, texts, docs, tmp_path):
    from apwa_spark.cli import main
    from apwa_spark.testing.faulty_endpoint import FaultyEndpoint

    out, registry = tmp_path / "out", tmp_path / "registry"
    with FaultyEndpoint(endpoint.base_url, non_json=1.0) as broken:  # every name call fails: error rows
        keys = {"spark.apwa.llm.baseUrl": broken.base_url, "spark.apwa.llm.serverSlots": str(settings.llm.server_slots),
                "spark.apwa.llm.maxRetries": "0", "spark.apwa.run.registry": str(registry)}
        conf = [arg for k, v in keys.items() for arg in ("--conf", f"{k}={v}")]
        assert main(["redact", "--input", str(docs), "--output", str(out), *conf]) == 0
    dead = _rows(out / "_dead_letter")
    assert dead and {json.loads(r["row_key"])["id"] for r in dead} <= {t.id for t in texts}
    [manifest] = [json.loads(p.read_text()) for p in registry.glob("*.json")]
    assert manifest["job"] == "redact" and sum(manifest["errors_by_class"].values()) == len(dead)
    values = [s.value for t in texts for s in t.spans if s.entity in STRUCTURED + ("person",)]
    written = [*file_texts(out / "_dead_letter"), *file_texts(out / "_runs"), *file_texts(registry)]
    assert {v: where for v, where in scan_texts(written, values).items() if where} == {}
