"""The code's shape: no import cycle among apwa_spark's modules (imports inside functions included),
and one module per step kind."""

from __future__ import annotations

import ast
import gc
from pathlib import Path

import apwa_spark
from apwa_spark.plan.step import step_kinds

PACKAGE = Path(apwa_spark.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("apwa_spark", *path.relative_to(PACKAGE).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _parse(source: str) -> ast.Module:
    """``ast.parse`` with the garbage collector off: CPython 3.11's AST constructor fails with
    ``SystemError: AST constructor recursion depth mismatch`` when a collection during the parse
    runs a finalizer (here, of an earlier test's asyncio coroutine), which made this test flaky."""
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        gc.enable()


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The apwa_spark modules ``path`` imports anywhere in its body (its own packages left out)."""
    names = []
    for node in ast.walk(_parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    found = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def import_cycles() -> list[list[str]]:
    """Each cycle of the module import graph, as the modules on it (Tarjan's strongly connected components)."""
    modules = _modules()
    graph = {m: {t for t in _imports(p, modules) if t != m and not m.startswith(t + ".")} for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return cycles


def test_the_import_graph_has_no_cycle():
    assert import_cycles() == []


def test_each_step_kind_lives_in_its_own_module_under_steps():
    for name, kind in step_kinds().items():
        assert kind.config.__module__ == f"apwa_spark.steps.{name}"
        assert (PACKAGE / "steps" / f"{name}.py").is_file()


def test_the_package_names_are_the_api_functions_and_a_worker_imports_only_what_its_udf_needs():
    import subprocess
    import sys

    script = ("import sys, apwa_spark.steps.chunk; lean = 'openai' not in sys.modules; "
              "import apwa_spark, apwa_spark.plan.udf, apwa_spark.plan.run; from apwa_spark import api; "
              "print(lean, apwa_spark.plan.__module__, apwa_spark.map_text is api.map_text, "
              "apwa_spark.summarize_play.__module__, sorted(apwa_spark.__all__) == sorted(set(apwa_spark.__all__)))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    # the chunk step's UDF module alone does not pull in the LLM client; `apwa_spark.plan` stays the planner
    # function (not the subpackage of the same name) whatever is imported after the package
    assert out == ["True", "apwa_spark", "True", "apwa_spark.summarize", "True"]
