"""Incremental runs of a plan that ends in a ``reduce`` (the summarize job among them): a re-run
into the same output recomputes only the changed input rows and their ancestors, and keeps every
other node as it is. What changed is found by row key and content hash, never by sending prompts
to the response cache:

* **input rows** (:meth:`Increment.start`): each row gets ``input_key`` (its row key: the plan's
  ``--key`` column, or a source step's :meth:`~apwa_spark.plan.step.StepConfig.row_key`) and
  ``input_hash`` (sha256 of the plan's steps before the reduce, the model, and the row's values as
  JSON). The leaves of the last run whose ``(input_key, content_hash)`` is a current row's
  ``(input_key, input_hash)``, and none of whose leaves failed or was left unevaluated, are kept;
  the row-level steps run over the other rows only. An input row gone (a deleted scene) keeps no
  leaf.
* **nodes**: a leaf's ``content_hash`` is its row's ``input_hash``; a parent's is the hash of its
  level's prompt, the answer cap, the model and its children's ids, hashes and statuses
  (:func:`node_hash`). A reduce round keeps the last run's row of a node whose id and hash are
  unchanged, with no call (:func:`apwa_spark.hierarchy.reduce_groups`'s ``known``), so an edited
  leaf re-runs its own ancestors only.
* **tables**: node tables are updated with one MERGE on ``node_id`` each (inserted and updated
  rows are the ones this run made; nodes gone are deleted), and a table where nothing changed gets
  no commit (:func:`apwa_spark.runs.write_table`, ``how="merge"``). A materialized row table (a
  step with ``materialize``) is rewritten once, from its kept rows and the new ones, only when
  something changed; ``result`` likewise. An unchanged re-run writes no table version.

``spark.apwa.run.incremental=false`` recomputes every node and rewrites every table (answers then
come from the response cache). Limits: rows a ``filter``/``where`` step dropped keep no leaf, so a
re-run evaluates them again (from the cache); a change to a row's ``order_by`` value (rows inserted
before it in document order) changes its hash, so that row is recomputed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from apwa_spark.config import Settings
from apwa_spark.delta import TableStore
from apwa_spark.runs import write_table

#: Columns every input row of an incremental plan carries through its row-level steps to the leaves.
INPUT_KEY, INPUT_HASH = "input_key", "input_hash"
#: Leaf statuses whose input row is evaluated again on a re-run.
RETRIED = ("error", "unevaluated")


def node_hash(salt: str, children: Sequence[tuple[str, str | None, str | None]]) -> str:
    """A parent node's ``content_hash``: sha256 of ``salt`` (its level's prompt hash, answer cap
    and model) and its children's ``(node_id, content_hash, status)`` in document order."""
    text = salt + "".join(f"|{i}={h}:{s}" for i, h, s in children)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Increment:
    """An incremental run's view of the output's last run (see the module docstring).

    Attributes:
        prefix: sha256 of the plan's steps before its reduce and of the model (part of every ``input_hash``).
        leaf_table: the reduce's leaf table (its node ids and hashes are the last run's).
        key: the input columns whose values, joined by ``#``, are a row's ``input_key``.
        reuse: False (``spark.apwa.run.incremental=false``): hashes are written, nothing is reused.
        kept: after :meth:`start`, the last run's leaves kept as they are (None: none).
        kept_rows: after :meth:`start`, ``(input_key, input_hash)`` of the input rows kept.
    """

    prefix: str
    leaf_table: str
    key: list[str]
    reuse: bool = True
    kept: DataFrame | None = None
    kept_rows: DataFrame | None = None

    @classmethod
    def for_plan(cls, plan, settings: Settings, key: str | None) -> "Increment | None":
        """The increment of ``plan`` (a :class:`~apwa_spark.plan.ir.Plan`) whose row key column is
        ``key`` (None: its source step's row key); None for a plan that does not end in a reduce."""
        named = plan.named_steps()
        name, last = named[-1]
        if last.kind != "reduce":
            return None
        before = "".join(step.model_dump_json() for _, step in named[:-1])
        prefix = hashlib.sha256(f"{before}|{settings.llm.model}".encode("utf-8")).hexdigest()
        columns = [key] if key else named[0][1].row_key()
        return cls(prefix, last.leaf_level or f"{name}_r0", columns, settings.run.incremental)

    def start(self, df: DataFrame, store: TableStore) -> DataFrame:
        """``df`` with ``input_key`` and ``input_hash``, less the rows whose leaves the last run
        left in ``store`` and this run keeps (:attr:`kept`); all of ``df`` on a first run."""
        key = F.concat_ws("#", *[F.col(c).cast("string") for c in self.key])
        hashed = F.sha2(F.concat(F.lit(self.prefix), F.to_json(F.struct(*[F.col(c) for c in df.columns]))), 256)
        df = df.withColumn(INPUT_KEY, key).withColumn(INPUT_HASH, hashed)
        last = self._last_leaves(store)
        if last is None:
            return df
        rows = df.select(F.col(INPUT_KEY).alias("__key"), F.col(INPUT_HASH).alias("__hash")).distinct()
        retried = last.filter(F.col("status").isin(*RETRIED)).select("input_key").distinct()
        kept = (last.join(rows, (last.input_key == rows["__key"]) & (last.content_hash == rows["__hash"]), "left_semi")
                .join(retried, "input_key", "left_anti"))
        self.kept = kept.localCheckpoint()  # pinned: this run's MERGE rewrites the leaf table
        self.kept_rows = self.kept.select(F.col("input_key").alias(INPUT_KEY),
                                          F.col("content_hash").alias(INPUT_HASH)).distinct()
        return df.join(self.kept_rows, [INPUT_KEY, INPUT_HASH], "left_anti")

    def _last_leaves(self, store: TableStore) -> DataFrame | None:
        if not self.reuse or not store.exists(self.leaf_table):
            return None
        table = store.read(self.leaf_table)
        return table if {"input_key", "content_hash", "status"} <= set(table.columns) else None

    def write_rows(self, run, name: str, df: DataFrame) -> DataFrame:
        """Write a materialized step's table (``run``: the :class:`~apwa_spark.plan.step.RunContext`)
        and return the rows the steps after it work on: ``df``, the new rows only. The table holds
        the last run's rows of the kept input rows and the new ones; it is rewritten (one commit)
        only when there are new rows or rows to drop."""
        store = run.store
        if self.kept_rows is None or not store.exists(name) or INPUT_KEY not in store.read(name).columns:
            return write_table(store, run.tables, name, df)
        new = df.localCheckpoint()  # computed once
        last = store.read(name)
        if new.isEmpty() and last.join(self.kept_rows, [INPUT_KEY, INPUT_HASH], "left_anti").isEmpty():
            write_table(store, run.tables, name, new, how="keep")
            return new
        kept = last.join(self.kept_rows, [INPUT_KEY, INPUT_HASH], "left_semi").select(*last.columns)
        write_table(store, run.tables, name, kept.unionByName(new).localCheckpoint())  # read before the overwrite
        return new

    def last_round(self, store: TableStore, name: str, columns: list[str]) -> DataFrame | None:
        """The last run's rows of the round table ``name`` (their ids and hashes), to run beside this
        round's children; None on a first run, or when the table's columns differ."""
        if not self.reuse or self.kept is None or not store.exists(name):
            return None
        table = store.read(name)
        return table if table.columns == columns else None
