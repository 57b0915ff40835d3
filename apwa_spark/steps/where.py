"""``where``: keep the rows a SQL predicate holds for (selection); no LLM call, so the planner takes it
whenever a query's condition can be said in SQL over the columns."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator
from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from apwa_spark.plan.step import (Cardinality, Estimate, InputStats, PlanError, PlannerSpec, PlanningContext, RunContext,
                                  StepConfig, StepKind)

NUMERIC = ("tinyint", "smallint", "int", "bigint", "float", "double", "decimal")
#: Words of a clause that turn "keep" into "drop".
NEGATION = re.compile(r"\b(drop|remove|exclude|excluding|without|not|except|other than)\b", re.I)
#: Comparison words ──► the operator they ask for, first match wins; none: equality.
COMPARISONS = (
    (r"\bat least\b|\bor more\b|\bno fewer than\b|\bno less than\b", ">="),
    (r"\bat most\b|\bor less\b|\bor fewer\b|\bno more than\b", "<="),
    (r"\bmore than\b|\bover\b|\babove\b|\bafter\b|\bgreater than\b|\blater than\b|\bhigher than\b", ">"),
    (r"\bless than\b|\bfewer than\b|\bunder\b|\bbelow\b|\bbefore\b|\bearlier than\b|\blower than\b", "<"),
    (r"\bstarts? with\b|\bbegins? with\b", "prefix"),
    (r"\bcontains?\b|\bincludes?\b|\bmentions?\b|\bhas\b|\bhave\b", "contains"),
)
OPERATOR_WORDS = set("is are was equals equal to with whose where of in at least most more less than fewer over above after "
                     "before under below greater later earlier higher lower starts start begins begin contains contain "
                     "includes include mentions mention has have no or not keep only drop remove the rows row".split())


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


def known_value_hits(ctx: PlanningContext) -> dict[str, list[str]]:
    """Known values of earlier steps' key columns (a classify step's labels) that the clause names,
    longest first, a shorter one inside a longer one left out (``not spam`` holds ``spam``)."""
    text, hits = ctx.query.lower(), {}
    for column, values in ctx.values.items():
        for value in sorted(values, key=len, reverse=True):
            pattern = rf"(?<!\w){re.escape(value.lower())}(?:e?s)?(?!\w)"  # plurals too: "the complaints"
            if re.search(pattern, text):
                hits.setdefault(column, []).append(value)
                text = re.sub(pattern, " ", text)
    return hits


def named_columns(ctx: PlanningContext) -> list[str]:
    """Columns other than the text column that the clause names; struct and array columns left out."""
    return [c for c in ctx.named_columns() if c != ctx.text_column and not ctx.columns[c].startswith(("struct", "array"))]


def value_candidates(ctx: PlanningContext, column: str) -> list[str]:
    """What the clause compares ``column`` with: the clause's numbers for a numeric column (``more than
    500 lines``), else the words and numbers after its name, comparison words and other column
    names left out."""
    after = ctx.query.lower()[ctx.mention(column).end():]
    if ctx.columns[column] in NUMERIC or ctx.columns[column].startswith("decimal"):
        return list(dict.fromkeys(re.findall(r"-?\d+(?:\.\d+)?", ctx.query)))
    numbers = re.findall(r"-?\d+(?:\.\d+)?", after)
    words = [w for w in re.findall(r"[\w-]+", after) if w not in OPERATOR_WORDS and w not in ctx.columns]
    phrases = [" ".join(words[:n]) for n in (2, 1) if len(words) >= n]
    return list(dict.fromkeys(phrases + numbers))


def route_where(ctx: PlanningContext, chosen: str) -> bool:
    """A "keep" clause the columns answer goes to ``where`` (no LLM call): it names a known value
    of an earlier step's key column, or a column and what to compare it with."""
    if chosen != "filter":
        return False
    return bool(known_value_hits(ctx)) or any(value_candidates(ctx, c) for c in named_columns(ctx))


def field_schema(ctx: PlanningContext) -> dict | None:
    """Which column and value, when the clause leaves more than one of either; None: the rule decides."""
    if known_value_hits(ctx):
        return None
    columns = [c for c in named_columns(ctx) if value_candidates(ctx, c)]
    values = list(dict.fromkeys(v for c in columns for v in value_candidates(ctx, c)))
    if len(columns) == 1 and len(values) == 1:
        return None
    props = {"column": {"type": "string", "enum": columns}, "value": {"type": "string", "enum": values}}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def build_where(ctx: PlanningContext, fields: dict) -> dict:
    """The predicate, from the known values the clause names (``label IN (...)``) or from a column,
    a comparison read off the clause's words (:data:`COMPARISONS`) and a value; string equality and
    ``contains`` ignore case. A clause with a negation word keeps the other rows."""
    hits = known_value_hits(ctx)
    rest = ctx.query
    if hits:
        ctx.decide("predicate", "rule:known-values")
        for values in hits.values():
            for v in values:
                rest = re.sub(re.escape(v), " ", rest, flags=re.I)
        predicate = " AND ".join(f"{c} IN ({', '.join(_literal(v) for v in vs)})" for c, vs in hits.items())
    else:
        columns = [c for c in named_columns(ctx) if value_candidates(ctx, c)]
        column = fields.get("column") if fields.get("column") in columns else columns[0]
        values = value_candidates(ctx, column)
        value = fields.get("value") if fields.get("value") in values else values[0]
        ctx.decide("predicate", "model" if fields else "rule:named-column")
        predicate = _comparison(column, ctx.columns[column], _operator(ctx.query), value)
    if NEGATION.search(rest):
        predicate = f"NOT ({predicate})"
    return {"kind": "where", "predicate": predicate}


def _operator(clause: str) -> str:
    return next((op for pattern, op in COMPARISONS if re.search(pattern, clause, re.I)), "=")


def _comparison(column: str, type_: str, op: str, value: str) -> str:
    if type_ in NUMERIC or type_.startswith("decimal"):
        return f"{column} {op if op in ('=', '>', '>=', '<', '<=') else '='} {value}"
    lowered = f"lower({column})"
    if op == "contains":
        return f"{lowered} LIKE {_literal(f'%{value.lower()}%')}"
    if op == "prefix":
        return f"{lowered} LIKE {_literal(f'{value.lower()}%')}"
    return f"{lowered} {op} {_literal(value.lower())}"


def _literal(value: str) -> str:
    """A Spark SQL string literal (backslash escapes, as Spark's parser reads them)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


KIND = StepKind(
    config=WhereStep, compile=compile_where, estimate=estimate_where,
    planner=PlannerSpec(
        actions=(), examples=(), route=route_where, field_schema=field_schema, build=build_where, rank=9,
        field_examples=(("Keep the rows whose year is after 2000.", {"column": "year", "value": "2000"}),
                        ("Only keep the orders whose country is France.", {"column": "country", "value": "france"})),
        description="keep the rows a SQL predicate over the columns holds for (no LLM call)"),
)
