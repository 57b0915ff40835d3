"""Incremental runs of a plan that ends in a ``reduce`` (the summarize job among them): a re-run
into the same output recomputes only the changed input rows and their ancestors, and keeps every
other node as it is. What changed is found by row key and content hash, never by sending prompts
to the response cache:

* **input rows** (:meth:`Increment.start`): each row gets ``input_key`` (its row key: the plan's
  ``--key`` column, or a source step's :meth:`~apwa_spark.plan.step.StepConfig.row_key`) and
  ``input_hash`` (sha256 of the plan's row-level steps before the reduce, the model, and the row's
  values as JSON). Where the input is a native Delta table with Change Data Feed on, the rows
  changed since the version the last run read (its leaf table's commit metadata) are read from
  the feed; elsewhere the leaves of the last run whose ``(input_key, content_hash)`` is a current
  row's ``(input_key, input_hash)`` are the unchanged rows. Leaves of unchanged rows, none of
  which failed or was left unevaluated, are kept; the row-level steps run over the other rows
  only. A leaf whose text was NULL or blank (``NullInput``, ``EmptyInput``) is kept too: the same
  row would fail the same way. An input row gone (a deleted scene) keeps no leaf.
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
hash-diffed re-run evaluates them again (from the cache); a change to a row's ``order_by`` value
(rows inserted or deleted before it in document order) changes its hash, so that row is recomputed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Sequence

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from apwa_spark.config import Settings
from apwa_spark.delta import ChangeFeed, TableStore
from apwa_spark.runs import write_table

#: Columns every input row of an incremental plan carries through its row-level steps to the leaves.
INPUT_KEY, INPUT_HASH = "input_key", "input_hash"
#: Leaf statuses whose input row is evaluated again on a re-run ...
RETRIED = ("error", "unevaluated")
#: ... unless the error is one of these: the row's text was NULL or blank, which fails the same way
#: again, with no call, so its leaf is kept like an ok one (once the row has text, its hash changes).
INPUT_ERRORS = ("NullInput", "EmptyInput")


def node_hash(salt: str, children: Sequence[tuple[str, str | None, str | None]]) -> str:
    """A parent node's ``content_hash``: sha256 of ``salt`` (its level's prompt hash, answer cap
    and model) and its children's ``(node_id, content_hash, status)`` in document order."""
    text = salt + "".join(f"|{i}={h}:{s}" for i, h, s in children)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Increment:
    """An incremental run's view of the output's last run (see the module docstring).

    Attributes:
        prefix: sha256 of the plan's row-level steps before its reduce (not a source step) and of
            the model (part of every ``input_hash``).
        leaf_table: the reduce's leaf table (its node ids and hashes are the last run's).
        key: the input columns whose values, joined by ``#``, are a row's ``input_key``.
        source: where the input was read from (a path/URI or a catalog table), when known.
        reuse: False (``spark.apwa.run.incremental=false``): hashes are written, nothing is reused.
        feed: after :meth:`start`, the input's Change Data Feed (a native Delta input with CDF on),
            and ``input_version``, the version this run read.
        kept: after :meth:`start`, the last run's leaves kept as they are (None: none).
        keep: after :meth:`start`, which rows of a table of the last run are kept (:meth:`_keep`).
    """

    prefix: str
    leaf_table: str
    key: list[str]
    source: str | None = None
    reuse: bool = True
    feed: ChangeFeed | None = None
    input_version: int | None = None
    kept: DataFrame | None = None
    keep: Callable[[DataFrame], DataFrame] | None = None

    @classmethod
    def for_plan(cls, plan, settings: Settings, key: str | None, source: str | None = None) -> "Increment | None":
        """The increment of ``plan`` (a :class:`~apwa_spark.plan.ir.Plan`) whose row key column is
        ``key`` (None: its source step's row key), over the input read from ``source``; None for
        a plan that does not end in a reduce. A source step is not part of :attr:`prefix`: its
        rows are (adding a play to a ``read_plays`` step changes no other play's hashes)."""
        named = plan.named_steps()
        name, last = named[-1]
        if last.kind != "reduce":
            return None
        before = "".join(step.model_dump_json() for _, step in named[:-1]
                         if step.cardinality.value != "source")
        prefix = hashlib.sha256(f"{before}|{settings.llm.model}".encode("utf-8")).hexdigest()
        columns = [key] if key else named[0][1].row_key()
        return cls(prefix, last.leaf_level or f"{name}_r0", columns, source, settings.run.incremental)

    def start(self, df: DataFrame, store: TableStore) -> DataFrame:
        """``df`` with ``input_key`` and ``input_hash``, less the rows whose leaves the last run
        left in ``store`` and this run keeps (:attr:`kept`); all of ``df`` on a first run. The
        changed rows come from the input's Change Data Feed since the version the last run read,
        where it has one and the last run recorded that version (the leaf table's commit
        metadata, :meth:`commit_note`); else from a diff of every row's key and hash against the
        last run's leaves."""
        hashed = F.sha2(F.concat(F.lit(self.prefix), F.to_json(F.struct(*[F.col(c) for c in df.columns]))), 256)
        keyed = df.withColumn(INPUT_KEY, self._key()).withColumn(INPUT_HASH, hashed)
        if store.engine == "native" and all(c in df.columns for c in self.key):
            self.feed = ChangeFeed.of(df.sparkSession, self.source)
            self.input_version = self.feed.version() if self.feed else None
        last = self._last_leaves(store)
        if last is None:
            return keyed
        input_error = F.coalesce(F.col("error_class").isin(*INPUT_ERRORS), F.lit(False))
        retried = last.filter(F.col("status").isin(*RETRIED) & ~input_error).select("input_key").distinct()
        note = self._last_note(store) if self.feed is not None else {}
        changed = self._changed_keys(note)
        if changed is None:
            return self._by_hash(keyed, last, retried)
        print(f"[apwa] incremental: {changed.count()} input rows changed since version {note['input_version']} "
              f"of {self.source} (its Change Data Feed)", flush=True)
        return self._by_feed(keyed, last, changed.unionByName(retried).distinct().localCheckpoint())

    def _by_feed(self, keyed: DataFrame, last: DataFrame, redo: DataFrame) -> DataFrame:
        """The rows whose key is in ``redo`` (changed in the feed, or a leaf failed); every other
        leaf is kept."""
        self.kept = last.join(redo, "input_key", "left_anti").localCheckpoint()  # pinned: the MERGE rewrites the table
        self.keep = lambda table: table.join(redo, INPUT_KEY, "left_anti")
        return keyed.join(redo, INPUT_KEY, "left_semi")

    def _by_hash(self, keyed: DataFrame, last: DataFrame, retried: DataFrame) -> DataFrame:
        """The rows whose key and hash match no leaf of the last run (or whose leaves failed); the
        matching leaves are kept."""
        rows = keyed.select(F.col(INPUT_KEY).alias("__key"), F.col(INPUT_HASH).alias("__hash")).distinct()
        kept = (last.join(rows, (last.input_key == rows["__key"]) & (last.content_hash == rows["__hash"]), "left_semi")
                .join(retried, "input_key", "left_anti"))
        self.kept = kept.localCheckpoint()  # pinned: this run's MERGE rewrites the leaf table
        same = self.kept.select(F.col("input_key").alias(INPUT_KEY), F.col("content_hash").alias(INPUT_HASH)).distinct()
        self.keep = lambda table: table.join(same, [INPUT_KEY, INPUT_HASH], "left_semi")
        print("[apwa] incremental: input rows compared with the last run's leaves by key and hash", flush=True)
        return keyed.join(same, [INPUT_KEY, INPUT_HASH], "left_anti")

    def commit_note(self) -> str | None:
        """The leaf table's commit metadata: the input and the version this run read, and the
        prefix, so that the next run reads the input's changes since then; None without a feed."""
        if self.feed is None:
            return None
        return json.dumps({"input": self.source, "input_version": self.input_version, "prefix": self.prefix})

    def _last_note(self, store: TableStore) -> dict:
        try:
            return json.loads(store.commit_metadata(self.leaf_table) or "{}")
        except ValueError:
            return {}

    def _key(self):
        """A row's ``input_key``: its key columns' values joined by ``#`` (a Column)."""
        return F.concat_ws("#", *[F.col(c).cast("string") for c in self.key])

    def _changed_keys(self, note: dict) -> DataFrame | None:
        """``input_key`` of every input row changed (inserted, updated, deleted) since the version
        the last run read (``note``: the leaf table's commit metadata); None where the feed cannot
        tell (no feed, no note of the last run, other steps before the reduce, or changes no longer
        in the feed)."""
        if self.feed is None or note.get("prefix") != self.prefix or note.get("input") != self.source:
            return None
        since = note.get("input_version")
        if not isinstance(since, int) or since > self.input_version:
            return None
        if since == self.input_version:
            return self.feed.spark.createDataFrame([], "input_key string")
        try:
            return self.feed.changes(since + 1, self.input_version).select(self._key().alias("input_key")).distinct()
        except AnalysisException:
            return None

    def _last_leaves(self, store: TableStore) -> DataFrame | None:
        if not self.reuse or not store.exists(self.leaf_table):
            return None
        table = store.read(self.leaf_table)
        return table if {"input_key", "content_hash", "status", "error_class"} <= set(table.columns) else None

    def write_rows(self, run, name: str, df: DataFrame) -> DataFrame:
        """Write a materialized step's table (``run``: the :class:`~apwa_spark.plan.step.RunContext`)
        and return the rows the steps after it work on: ``df``, the new rows only. The table holds
        the last run's rows of the kept input rows and the new ones; it is rewritten (one commit)
        only when there are new rows or rows to drop."""
        store = run.store
        last = store.read(name) if self.keep is not None and store.exists(name) else None
        if last is None or INPUT_KEY not in last.columns:
            return write_table(store, run.tables, name, df)
        new = df.localCheckpoint()  # computed once
        kept = self.keep(last).select(*last.columns).localCheckpoint()  # read before the overwrite
        if new.isEmpty() and kept.count() == last.count():
            write_table(store, run.tables, name, new, how="keep")
            return new
        write_table(store, run.tables, name, kept.unionByName(new), commits=run.commits)  # committed as the run goes on
        return new

    def last_round(self, store: TableStore, name: str, columns: list[str]) -> DataFrame | None:
        """The last run's rows of the round table ``name`` (their ids and hashes), to run beside this
        round's children; None on a first run, or when the table's columns differ."""
        if not self.reuse or self.kept is None or not store.exists(name):
            return None
        table = store.read(name)
        return table if table.columns == columns else None
