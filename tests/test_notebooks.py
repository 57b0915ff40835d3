"""Notebooks: Databricks source format ──► nbformat, and every notebook in notebooks/ run in a fresh kernel.

Each model-backed run starts its own kernel (and so its own Spark JVM, ~15-25 s) and reuses the test
session's embedded endpoint through ``APWA_LLM_BASE_URL``, with small budgets.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest

from apwa_spark.config import env_name
from apwa_spark.notebook import (EPILOGUE, PREAMBLE, NotebookCellError, NotebookFormatError, notebook_outputs,
                                 parse_source, run_notebook, sql_statements, to_notebook)

from conftest import SMALL

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.py"))

SOURCE = '''\
# Databricks notebook source
# MAGIC %md
# MAGIC # Title
# MAGIC
# MAGIC Some *markdown*.

# COMMAND ----------

# DBTITLE 1,Parameters
import os
N = int(os.environ.get("N", "3"))

# COMMAND ----------

# MAGIC %sql
# MAGIC CREATE OR REPLACE TEMP VIEW t AS SELECT 'a;b' AS s; -- a comment; with a semicolon
# MAGIC SELECT s FROM t

# COMMAND ----------



# COMMAND ----------

# MAGIC %python
# MAGIC print(N)
'''


# ---- the source format (no kernel) ------------------------------------------------------------------

def test_source_cells_kinds_lines_and_titles():
    cells = parse_source(SOURCE, "demo.py")
    assert [c.kind for c in cells] == ["markdown", "code", "sql", "code"]  # the empty cell is dropped
    assert cells[0].source == "# Title\n\nSome *markdown*."
    assert cells[1].title == "Parameters" and cells[1].source.startswith("import os") and cells[1].line == 10
    assert cells[2].line == 15 and cells[3].source == "print(N)"
    assert sql_statements(cells[2].source) == [
        "CREATE OR REPLACE TEMP VIEW t AS SELECT 'a;b' AS s", "-- a comment; with a semicolon\nSELECT s FROM t"]


def test_conversion_to_nbformat(tmp_path):
    path = tmp_path / "demo.py"
    path.write_text(SOURCE)
    nb = to_notebook(path)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.metadata.kernelspec.language == "python"
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code", "code"]
    assert [c.metadata.apwa.cell for c in nb.cells] == [1, 2, 3, 4]
    sql = nb.cells[2]
    assert sql.metadata.apwa.kind == "sql" and sql.metadata.apwa.first_line.startswith("CREATE OR REPLACE TEMP VIEW t")
    assert sql.source.count("spark.sql(") == 2 and sql.source.startswith("spark.sql(")
    assert sql.source.splitlines()[-1] == '"""))' and "display(spark.sql(" in sql.source
    compile(sql.source, "<sql cell>", "exec")  # valid Python
    with_runner = to_notebook(path, preamble=True)
    assert len(with_runner.cells) == 6
    assert with_runner.cells[0].source == PREAMBLE and with_runner.cells[-1].source == EPILOGUE


def test_unsupported_magic_names_the_notebook_cell_and_magic():
    text = SOURCE.replace("# MAGIC %python", "# MAGIC %sh")
    with pytest.raises(NotebookFormatError, match=r"demo\.py: cell 4 \(line 25\) uses the magic '%sh'"):
        parse_source(text, "demo.py")


def test_not_a_databricks_notebook(tmp_path):
    path = tmp_path / "plain.py"
    path.write_text("print('hello')\n")
    with pytest.raises(NotebookFormatError, match=r"plain\.py: not a Databricks source notebook"):
        to_notebook(path)


def test_repository_notebooks_are_databricks_source():
    names = [p.name for p in NOTEBOOKS]
    assert names == ["01_quickstart.py", "02_pii_redaction.py", "03_typed_extraction.py", "04_sql_functions.py"]
    for path in NOTEBOOKS:
        cells = parse_source(path.read_text(), path.name)
        assert cells[0].kind == "markdown" and cells[0].source.startswith("# "), path.name
        code = [c for c in cells if c.kind == "code"]
        assert "SparkSession" not in path.read_text(), path.name  # uses the `spark` it is given
        assert any(c.source.startswith("from apwa_spark.sql import register") for c in code[:2]), path.name  # one endpoint
        if "OUTPUT" in path.read_text():
            assert "APWA_NOTEBOOK_OUTPUT" in code[0].source, path.name  # parameters first, overridable by env
    assert any(c.kind == "sql" for c in parse_source(NOTEBOOKS[3].read_text(), NOTEBOOKS[3].name))


# ---- running in a fresh kernel ----------------------------------------------------------------------

BAD = '''\
# Databricks notebook source
# MAGIC %md
# MAGIC A notebook whose third cell fails.

# COMMAND ----------

spark.range(3).createOrReplaceTempView("three")
print("rows:", spark.table("three").count())

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT * FROM no_such_table

# COMMAND ----------

open(MARKER, "w").write("ran")
'''


def test_failing_cell_names_the_notebook_and_the_cell(tmp_path):
    path = tmp_path / "bad_notebook.py"
    marker = tmp_path / "marker"
    path.write_text(BAD.replace("MARKER", repr(str(marker))))
    saved = tmp_path / "bad_notebook.ipynb"
    with pytest.raises(NotebookCellError) as info:
        run_notebook(path, timeout=300, save_to=saved, kernel_log=tmp_path / "kernel.log")
    error = info.value
    assert (error.notebook, error.cell, error.line, error.first_line) == (str(path), 3, 12, "SELECT * FROM no_such_table")
    assert error.ename == "AnalysisException" and "no_such_table" in error.evalue
    assert str(error).startswith(f"notebook {path}: cell 3 (line 12: 'SELECT * FROM no_such_table') failed: AnalysisException")
    assert not marker.exists()  # nothing after the failing cell ran
    executed = nbformat.read(saved, 4)  # the executed notebook is kept, outputs included
    assert "rows: 3" in notebook_outputs(executed)
    assert any(o.output_type == "error" for o in executed.cells[3].outputs)
    # the kernel, and with it the notebook's Spark JVM, is gone once the run ends, failed or not
    assert _kernels() == [], _kernels()


def _kernels() -> list[str]:
    """This process's child ipykernel processes still running."""
    import psutil

    running = []
    for child in psutil.Process().children(recursive=True):
        try:
            line = " ".join(child.cmdline())
            if "ipykernel_launcher" in line and child.status() != psutil.STATUS_ZOMBIE:
                running.append(line)
        except psutil.Error:  # gone meanwhile
            pass
    return running


@pytest.mark.model
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_green(path, endpoint, tmp_path):
    env = {
        env_name("spark.apwa.llm.baseUrl"): endpoint.settings.llm.base_url,  # reuse the session's endpoint
        **{env_name(key): value for key, value in SMALL.items()},
        env_name("spark.apwa.run.registry"): str(tmp_path / "registry"),
        "APWA_NOTEBOOK_OUTPUT": str(tmp_path / "out"),
        "APWA_NOTEBOOK_MAX_SCENES": "1",
    }
    started = time.monotonic()
    nb = run_notebook(path, timeout=400, env=env, save_to=tmp_path / f"{path.stem}.ipynb", kernel_log=tmp_path / "kernel.log")
    print(f"{path.name}: {time.monotonic() - started:.0f} s")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)  # every cell ran
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    outputs = notebook_outputs(nb)
    assert "checks passed" in outputs  # the notebook's own checks of its results
    assert endpoint.settings.llm.base_url in outputs  # it used the test session's endpoint, not a new one
    if "APWA_NOTEBOOK_OUTPUT" in path.read_text():
        assert any((tmp_path / "out").iterdir())  # wrote its tables under the output it was given
