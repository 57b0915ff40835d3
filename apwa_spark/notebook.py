"""Databricks source-format notebooks, converted to nbformat and run locally in a fresh kernel.

A Databricks *source* notebook is a ``.py`` file that starts with ``# Databricks notebook source``;
``# COMMAND ----------`` lines separate its cells; a cell whose lines all start with ``# MAGIC``
is a magic cell (``%md`` markdown, ``%sql`` SQL, ``%python`` Python). Such a file imports into
Databricks as it is. Locally::

    from apwa_spark.notebook import run_notebook
    nb = run_notebook("notebooks/01_quickstart.py", env={"APWA_LLM_BASE_URL": "http://127.0.0.1:8080/v1"})

converts it (markdown cells stay markdown; a ``%sql`` cell becomes ``display(spark.sql(...))``),
puts a first cell in front that gives the notebook what Databricks gives it (``spark`` from
:func:`apwa_spark.session.get_session`, and ``display``), and executes it with ``nbclient`` in a
fresh ipykernel running this interpreter (``sys.executable``). A failing cell raises
:class:`NotebookCellError` naming the notebook, the cell and the error.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Mapping

HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"
MAGIC = "# MAGIC"
TITLE = re.compile(r"^# DBTITLE \d+,(.*)$")
#: magics that mean "this cell is markdown" / "SQL" / "plain Python"; any other is refused.
MARKDOWN_MAGICS = ("%md", "%md-sandbox")
SQL_MAGICS = ("%sql",)
PYTHON_MAGICS = ("%python",)

#: The runner's first cell: what a Databricks notebook finds already defined (``spark``, ``display``).
PREAMBLE = '''\
# apwa-spark local notebook runner: define what Databricks provides (spark, display).
import tempfile as _tempfile
from apwa_spark.session import get_session as _get_session

spark = _get_session(conf={"spark.ui.showConsoleProgress": "false", "spark.ui.enabled": "false",
                           "spark.sql.warehouse.dir": _tempfile.mkdtemp(prefix="apwa-notebook-warehouse-")})
spark.sparkContext.setLogLevel("ERROR")


def display(obj, n: int = 20, truncate: int = 100):
    """Databricks' display(), locally: a Spark DataFrame is shown as text (first n rows)."""
    from pyspark.sql import DataFrame
    if isinstance(obj, DataFrame):
        obj.show(n=n, truncate=truncate)
    else:
        from IPython.display import display as _display
        _display(obj)
'''
#: The runner's last cell: stop the notebook's Spark session (its JVM) before the kernel goes.
EPILOGUE = "spark.stop()"


class NotebookFormatError(ValueError):
    """A file is not a Databricks source notebook, or uses a magic that cannot run locally."""


class NotebookCellError(RuntimeError):
    """A cell of a notebook failed while it ran.

    Attributes:
        notebook: path of the source notebook.
        cell: the failing cell's number in the source file, counting from 1 (markdown cells
            included, as Databricks numbers them); 0 for the runner's own set-up cell.
        line: line of the source file where the cell starts (1-based).
        first_line: the first non-blank line of the cell's source.
        ename, evalue: the exception's class name and message in the kernel.
        traceback: the kernel's traceback, plain text.
    """

    def __init__(self, notebook: str, cell: int, line: int, first_line: str, ename: str, evalue: str, traceback: str):
        self.notebook, self.cell, self.line, self.first_line = notebook, cell, line, first_line
        self.ename, self.evalue, self.traceback = ename, evalue, traceback
        where = "the runner's set-up cell" if cell == 0 else f"cell {cell} (line {line}: {first_line!r})"
        super().__init__(f"notebook {notebook}: {where} failed: {ename}: {evalue}")


@dataclass(frozen=True)
class SourceCell:
    """One cell of a Databricks source notebook.

    ``kind`` is ``code`` (Python), ``markdown`` or ``sql``; ``source`` has the ``# MAGIC`` prefixes
    and the magic line removed; ``line`` is where the cell starts in the file (1-based);
    ``title`` comes from a ``# DBTITLE`` line, if any.
    """

    kind: Literal["code", "markdown", "sql"]
    source: str
    line: int
    title: str = ""


def parse_source(text: str, name: str = "<notebook>") -> list[SourceCell]:
    """Split Databricks source-format ``text`` into cells, in file order (empty cells dropped).

    Raises:
        NotebookFormatError: ``text`` does not start with ``# Databricks notebook source``, or a
            cell uses a magic other than ``%md``, ``%md-sandbox``, ``%sql``, ``%python``
            (e.g. ``%sh``, ``%pip``, ``%run``, ``%scala``); the message names the notebook,
            the cell and its line.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != HEADER:
        raise NotebookFormatError(f"{name}: not a Databricks source notebook: the first line must be {HEADER!r}")
    cells: list[SourceCell] = []
    block: list[tuple[int, str]] = []
    for number, line in list(enumerate(lines, start=1))[1:] + [(len(lines) + 1, SEPARATOR)]:
        if line.rstrip() != SEPARATOR:
            block.append((number, line))
            continue
        cell = _cell(block, name, len(cells) + 1)
        if cell is not None:
            cells.append(cell)
        block = []
    return cells


def _cell(block: list[tuple[int, str]], name: str, number: int) -> SourceCell | None:
    title = ""
    while block and not block[0][1].strip():
        block = block[1:]
    if block and (m := TITLE.match(block[0][1])):
        title, block = m.group(1).strip(), block[1:]
    while block and not block[0][1].strip():
        block = block[1:]
    while block and not block[-1][1].strip():
        block = block[:-1]
    if not block:
        return None
    start = block[0][0]
    if not all(line.startswith(MAGIC) for _, line in block):
        return SourceCell("code", "\n".join(line for _, line in block), start, title)
    body = [line[len(MAGIC):][1:] if line[len(MAGIC):].startswith(" ") else line[len(MAGIC):] for _, line in block]
    magic, _, rest = body[0].strip().partition(" ")
    content = "\n".join(([rest] if rest.strip() else []) + body[1:]).strip("\n")
    if magic in MARKDOWN_MAGICS:
        return SourceCell("markdown", content, start, title)
    if magic in SQL_MAGICS:
        return SourceCell("sql", content, start, title)
    if magic in PYTHON_MAGICS:
        return SourceCell("code", content, start, title)
    raise NotebookFormatError(
        f"{name}: cell {number} (line {start}) uses the magic {magic!r}, which cannot run locally; "
        f"supported: {', '.join(MARKDOWN_MAGICS + SQL_MAGICS + PYTHON_MAGICS)}")


def sql_statements(sql: str) -> list[str]:
    """Split a SQL cell into statements at ``;`` outside quotes and ``--`` comments (empty ones dropped)."""
    statements, current, quote, i = [], [], "", 0
    while i < len(sql):
        ch = sql[i]
        if quote:
            current.append(ch)
            if ch == "\\" and i + 1 < len(sql):
                current.append(sql[i + 1])
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
            current.append(ch)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = len(sql) if end < 0 else end
            current.append(sql[i:end])
            i = end - 1
        elif ch == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if _without_comments(s).strip()]


def _without_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))


def sql_to_python(sql: str) -> str:
    """A ``%sql`` cell ──► Python: every statement through ``spark.sql``, the last one ``display``-ed
    (as Databricks shows the last statement's result)."""
    statements = sql_statements(sql)
    if not statements:
        return "pass  # empty %sql cell"
    code = [f"spark.sql({_literal(s)})" for s in statements[:-1]]
    code.append(f"display(spark.sql({_literal(statements[-1])}))")
    return "\n".join(code)


def _literal(text: str) -> str:
    if '"""' not in text and "\\" not in text and not text.endswith('"'):
        return '"""\n' + text + '\n"""'
    return repr(text)


def to_notebook(path: str | Path, preamble: bool = False):
    """Convert a Databricks source notebook file into an nbformat v4 notebook.

    Each source cell becomes one cell (``sql`` cells become code cells, see :func:`sql_to_python`);
    each cell's metadata ``apwa`` holds ``{"cell": n, "line": l, "kind": k, "first_line": s}`` (``n``
    counting from 1; ``s`` the first non-blank line of the cell as written, SQL for a ``%sql`` cell).
    With ``preamble``, a first code cell defines ``spark`` and ``display`` (:data:`PREAMBLE`, cell 0)
    and a last one stops the session (:data:`EPILOGUE`).

    Returns:
        ``nbformat.NotebookNode`` (v4, Python 3 kernel metadata).

    Raises:
        FileNotFoundError: no such file.
        NotebookFormatError: see :func:`parse_source`.
    """
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    path = Path(path)
    cells = parse_source(path.read_text(encoding="utf-8"), str(path))
    nb = new_notebook(metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "apwa": {"source": str(path)},
    })
    if preamble:
        nb.cells.append(new_code_cell(PREAMBLE, metadata={"apwa": {"cell": 0, "line": 0, "kind": "preamble"}}))
    for number, cell in enumerate(cells, start=1):
        first = next((line for line in cell.source.splitlines() if line.strip()), "")
        meta = {"apwa": {"cell": number, "line": cell.line, "kind": cell.kind, "first_line": first}}
        if cell.title:
            meta["title"] = cell.title
        if cell.kind == "markdown":
            nb.cells.append(new_markdown_cell(cell.source, metadata=meta))
        else:
            nb.cells.append(new_code_cell(cell.source if cell.kind == "code" else sql_to_python(cell.source), metadata=meta))
    if preamble:
        nb.cells.append(new_code_cell(EPILOGUE, metadata={"apwa": {"cell": len(cells) + 1, "line": 0, "kind": "epilogue"}}))
    nbformat.validate(nb)
    return nb


def run_notebook(
    path: str | Path,
    timeout: int = 900,
    env: Mapping[str, str] | None = None,
    save_to: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
    cwd: str | Path | None = None,
    kernel_log: str | Path | None = None,
):
    """Execute a Databricks source notebook locally, in a fresh ipykernel running ``sys.executable``.

    Args:
        path: the ``.py`` source notebook.
        timeout: seconds allowed per cell (nbclient's per-cell timeout; the Spark start-up in the
            set-up cell counts as one cell).
        env: variables added to this process's environment for the kernel (e.g.
            ``APWA_LLM_BASE_URL`` to reuse a running endpoint, ``APWA_SUMMARIZE_CHUNK_TOKENS``,
            the notebooks' ``APWA_NOTEBOOK_*`` parameters). ``PYSPARK_PYTHON`` defaults to
            ``sys.executable``.
        save_to: if given, the executed notebook (outputs included, also on failure) is written
            there as ``.ipynb``.
        echo: if given, called after each cell with a text rendering of it and its outputs
            (``print`` suits a CLI).
        cwd: the kernel's working directory; default: the notebook's folder.
        kernel_log: if given, the kernel process's own stdout/stderr (the JVM's log lines, output
            written outside a cell) go to this file instead of this process's; a dead kernel's
            error then ends with the file's last lines.

    Returns:
        the executed ``nbformat.NotebookNode``; the first cell is the runner's set-up cell.

    Raises:
        FileNotFoundError, NotebookFormatError: see :func:`to_notebook`.
        NotebookCellError: a cell raised, or ran past ``timeout``; names the notebook, the cell
            (number, line, first line) and the error.
    """
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path)
    nb = to_notebook(path, preamble=True)
    kernel_env = {**os.environ, "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable), **(env or {})}
    kernel_env.pop("PYSPARK_GATEWAY_PORT", None)  # never attach to the caller's JVM
    kernel_env.pop("PYSPARK_GATEWAY_SECRET", None)
    specs = Path(tempfile.mkdtemp(prefix="apwa-kernelspec-"))
    started = time.monotonic()

    current = {"index": 0}

    def cell_start(cell, cell_index, **_):
        current["index"] = cell_index

    def cell_done(cell, cell_index, **_):
        if echo is not None:
            echo(render_cell(cell, str(path)))

    try:
        km = KernelManager(kernel_name=_write_kernelspec(specs), kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]))
        client = NotebookClient(nb, km=km, timeout=timeout, kernel_name=km.kernel_name, allow_errors=False,
                                resources={"metadata": {"path": str(Path(cwd or path.resolve().parent))}},
                                on_cell_execute=cell_start, on_cell_executed=cell_done)
        log = open(kernel_log, "ab") if kernel_log is not None else None
        try:
            client.execute(env=kernel_env, **({"stdout": log, "stderr": log} if log else {}))
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
            error = _cell_error(nb.cells[current["index"]], path, exc)
            if log is not None and isinstance(exc, DeadKernelError):
                log.flush()
                tail = Path(kernel_log).read_text(errors="replace").splitlines()[-20:]
                error.traceback += f"\n-- last lines of {kernel_log} --\n" + "\n".join(tail)
            raise error from None
        finally:
            if km.has_kernel:  # nbclient leaves a kernel it was handed running: stop it, and with it its JVM
                km.shutdown_kernel(now=False)
            if log is not None:
                log.close()
            if save_to is not None:
                Path(save_to).parent.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, str(save_to))
    finally:
        shutil.rmtree(specs, ignore_errors=True)
    nb.metadata["apwa"]["seconds"] = round(time.monotonic() - started, 1)
    return nb


def _write_kernelspec(folder: Path) -> str:
    """A kernelspec whose argv runs ipykernel with this interpreter (not whatever ``python`` is on PATH)."""
    import json

    name = "apwa-python3"
    (folder / name).mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python 3 ({sys.executable})", "language": "python"}
    (folder / name / "kernel.json").write_text(json.dumps(spec))
    return name


def _cell_error(cell, path: Path, exc: Exception) -> NotebookCellError:
    info = cell.metadata.get("apwa", {})
    first = info.get("first_line") or next((line for line in cell.source.splitlines() if line.strip()), "")
    ename = getattr(exc, "ename", None) or type(exc).__name__
    message = _strip_ansi(str(exc)).strip()
    evalue = getattr(exc, "evalue", None)
    if evalue is None:
        evalue = message.splitlines()[-1] if message else ""
    return NotebookCellError(str(path), info.get("cell", 0), info.get("line", 0), first, ename, evalue, message)


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def render_cell(cell, notebook: str = "") -> str:
    """A text rendering of one executed cell: a header line, its source, its text outputs."""
    info = cell.metadata.get("apwa", {})
    label = {"preamble": "set-up", "epilogue": "tear-down"}.get(info.get("kind"), f"cell {info.get('cell')}")
    lines = [f"── {notebook} {label} ".ljust(80, "─"), cell.source]
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            lines.append(out.get("text", "").rstrip("\n"))
        elif kind in ("execute_result", "display_data"):
            lines.append(str(out.get("data", {}).get("text/plain", "")).rstrip("\n"))
        elif kind == "error":
            lines.append(_strip_ansi("\n".join(out.get("traceback", []))))
    return "\n".join(lines)


def notebook_outputs(nb) -> str:
    """All stream and text/plain outputs of an executed notebook, in cell order (for tests and logs)."""
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append(out.get("text", ""))
            elif out.get("output_type") in ("execute_result", "display_data"):
                texts.append(str(out.get("data", {}).get("text/plain", "")))
    return "".join(t if t.endswith("\n") else t + "\n" for t in texts)
