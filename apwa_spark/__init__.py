"""apwa-spark: LLM executor agents over Spark DataFrames (the APWA pattern on Spark).

The path through the package: query ──► :mod:`~apwa_spark.plan.planner` ──► :class:`~apwa_spark.plan.ir.Plan`
──► :mod:`~apwa_spark.plan.compiler` (pandas UDFs) ──► :mod:`~apwa_spark.plan.agents` /
:mod:`~apwa_spark.agent` ──► :mod:`~apwa_spark.llm.client` ──► :mod:`~apwa_spark.delta`.

The names below are imported on first use (PEP 562), so a Spark Python worker that unpickles a
pandas UDF imports only the modules that UDF needs, not the planner, jobs and streaming.
"""

from importlib import import_module

from apwa_spark import plan as _plan_package  # noqa: F401  (the subpackage first, so that the name is the function below)

#: public name ──► the module that defines it.
_EXPORTS = {
    **{name: "apwa_spark.api" for name in ("chunk", "classify", "extract", "filter_rows", "map_text", "redact",
                                           "reduce_groups", "run")},
    "Plan": "apwa_spark.plan.ir", "PlanError": "apwa_spark.plan.ir",
    "stream": "apwa_spark.streaming",
    "summarize_play": "apwa_spark.summarize", "summarize_plays": "apwa_spark.summarize",
}

__all__ = ["plan", *_EXPORTS]


def plan(df, query: str, settings=None):
    """Plan ``query`` over ``df`` with the planner agent: :func:`apwa_spark.api.plan` (same arguments,
    return value and errors). The subpackage :mod:`apwa_spark.plan` shares the name; once the package
    is imported, ``apwa_spark.plan`` is this function, however the subpackage is imported later."""
    from apwa_spark.api import plan as planned

    return planned(df, query, settings)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'apwa_spark' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
