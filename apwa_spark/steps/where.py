"""``where``: keep the rows a SQL predicate holds for (selection); no LLM call, so the planner takes it
whenever a query's condition can be said in SQL over the columns."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator
from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from apwa_spark.plan.step import Cardinality, Estimate, InputStats, PlanError, RunContext, StepConfig, StepKind


class WhereStep(StepConfig):
    """A Spark SQL boolean expression over the columns (``year >= 2000 AND lang = 'en'``) ──► the
    rows it is true for. Rows where it is NULL are dropped, as in SQL."""

    kind: Literal["where"] = "where"
    predicate: str = Field(..., min_length=1, description="Spark SQL boolean expression over the columns")
    cardinality: ClassVar[Cardinality] = Cardinality.SELECTION

    @field_validator("predicate")
    @classmethod
    def _one_expression(cls, value: str) -> str:
        if ";" in value:
            raise ValueError(f"predicate {value!r} must be one SQL expression, without ';'")
        return value


def compile_where(df: DataFrame, name: str, step: WhereStep, run: RunContext) -> DataFrame:
    """``df.filter(predicate)``.

    Raises:
        PlanError: the predicate does not parse or names an unknown column (Spark's analysis
            message, with the columns at that point).
    """
    try:
        return df.filter(F.expr(step.predicate))
    except (AnalysisException, ParseException) as exc:
        first = str(exc).strip().splitlines()[0]
        raise PlanError(f"step {name!r} (where): predicate {step.predicate!r} is not valid Spark SQL here: {first}; "
                        f"columns at that point: {df.columns}") from None


def estimate_where(step: WhereStep, stats: InputStats) -> Estimate:
    """No call; every row assumed kept (an upper bound)."""
    return Estimate(0, 0, 0, rows_out=stats.rows, chars_out=dict(stats.chars), assumption="no call; all rows assumed kept")


KIND = StepKind(config=WhereStep, compile=compile_where, estimate=estimate_where)
