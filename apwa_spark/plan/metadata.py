"""Table metadata: what the planner may see of a DataFrame (APWA's data-table abstraction).

Compact and bounded whatever the data size: columns and types, the row count, per column the null
count, an approximate distinct count (HyperLogLog++, ``approx_count_distinct``), text length
quantiles (``percentile_approx``), and up to ``samples`` sample values cut to ``max_chars``
characters. Two Spark jobs compute it (one aggregate, one ``limit``), never a collect of the data.
"""

from __future__ import annotations

from pydantic import BaseModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType


class ColumnInfo(BaseModel):
    name: str
    type: str
    nulls: int
    distinct_estimate: int
    samples: list[str]
    length_quantiles: list[int] | None = None  # 10th, 50th, 90th percentile of text length, characters


class TableMetadata(BaseModel):
    rows: int
    columns: list[ColumnInfo]

    def render(self, samples: bool = True) -> str:
        """A few lines for a prompt: ``name (type): nulls, ~distinct, lengths, samples``.

        ``samples=False`` leaves the sample values out (error messages: they are row text)."""
        lines = [f"rows: {self.rows}"]
        for c in self.columns:
            lengths = f", text length p10/p50/p90 {c.length_quantiles}" if c.length_quantiles else ""
            shown = "; e.g. " + "; ".join(repr(s) for s in c.samples) if samples else ""
            lines.append(f"- {c.name} ({c.type}): {c.nulls} nulls, ~{c.distinct_estimate} distinct{lengths}{shown}")
        return "\n".join(lines)


def table_metadata(df: DataFrame, samples: int = 3, max_chars: int = 80) -> TableMetadata:
    """Bounded metadata of ``df``: size O(columns × samples × max_chars), not O(rows)."""
    aggs = [F.count(F.lit(1)).alias("__rows")]
    text_cols = [f.name for f in df.schema.fields if isinstance(f.dataType, StringType)]
    for f in df.schema.fields:
        aggs += [F.sum(F.col(f.name).isNull().cast("long")).alias(f"{f.name}__nulls"),
                 F.approx_count_distinct(f.name).alias(f"{f.name}__distinct")]
        if f.name in text_cols:
            aggs.append(F.percentile_approx(F.length(f.name), [0.1, 0.5, 0.9]).alias(f"{f.name}__lengths"))
    stats = df.agg(*aggs).first().asDict()
    head = df.limit(samples).collect()
    columns = []
    for f in df.schema.fields:
        values = [str(r[f.name])[:max_chars] for r in head if r[f.name] is not None]
        columns.append(ColumnInfo(
            name=f.name, type=f.dataType.simpleString(), nulls=int(stats[f"{f.name}__nulls"] or 0),
            distinct_estimate=int(stats[f"{f.name}__distinct"] or 0), samples=values,
            length_quantiles=[int(x) for x in stats[f"{f.name}__lengths"]] if stats.get(f"{f.name}__lengths") else None,
        ))
    return TableMetadata(rows=int(stats["__rows"]), columns=columns)
