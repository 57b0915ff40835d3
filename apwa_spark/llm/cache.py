"""Response cache: a Delta table of ``ok`` completions keyed by the call's identity.

The key (:func:`apwa_spark.llm.prompts.cache_key`) hashes model, prompt style, rendered prompt,
generation parameters and output schema. Only ``ok`` answers are stored, so a re-run retries what
failed and reuses what was paid for. Spark tasks append to the table themselves as their calls
finish (delta-rs; concurrent blind appends are retried on commit conflicts), many answers per
commit and at most one commit per ``cache.commitSeconds`` per task, so a job killed mid-run loses
only the calls in flight or not yet committed: at most ``llm.concurrency + cache.maxUncommitted``
per task. A :class:`ResponseCache` keeps its table open between commits: delta-rs then reads only
the log entries added since (about 5 ms of CPU a commit, against 20 to 40 ms when every append
opens the table and replays its log; measured on this project's 2-core machine, deltalake 1.6),
and a process keeps one open for all the tasks it runs of a job (:func:`shared_cache`). The table
may be on an object store (``s3a://bucket/run/_llm_cache``): executors reach it with the job's
delta-rs ``storage_options``; on Databricks a ``dbfs:/`` cache is opened through the ``/dbfs``
mount (:func:`~apwa_spark.storage.deltars_uri`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from apwa_spark.storage import deltars_uri

SCHEMA = pa.schema([
    ("key", pa.string()),
    ("text", pa.string()),
    ("model", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("created_ms", pa.int64()),
])
COMMIT_TRIES = 8
#: Table properties of a new cache table: Change Data Feed on, as on every table apwa-spark writes.
PROPERTIES = {"delta.enableChangeDataFeed": "true"}


class ResponseCache:
    """Read and append cached completions at ``path`` (a Delta table, created on first write).

    Args:
        path: local path or URI of the table.
        storage_options: delta-rs options for an object-store ``path`` (credentials: kept out of ``repr``).
    """

    def __init__(self, path: str, storage_options: Mapping[str, str] | None = None):
        self.path = deltars_uri(path)
        self._options = dict(storage_options or {}) or None
        self._table = None  # the open DeltaTable, once the table exists
        self._lock = threading.Lock()  # one reader or writer of the open table at a time

    def __repr__(self) -> str:
        return f"ResponseCache({self.path!r})"

    def exists(self) -> bool:
        """True once the table has been written."""
        from deltalake import DeltaTable

        return self._table is not None or DeltaTable.is_deltatable(self.path, storage_options=self._options)

    def _open(self):
        """The table, opened once and brought to its latest version (None while it does not exist)."""
        from deltalake import DeltaTable

        if self._table is None:
            if not DeltaTable.is_deltatable(self.path, storage_options=self._options):
                return None
            self._table = DeltaTable(self.path, storage_options=self._options)
        else:
            self._table.update_incremental()
        return self._table

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        """key ──► cached row (``text``, ``prompt_tokens``, ``completion_tokens``) for the keys present.

        A key stored twice (two tasks that sent one prompt at once, or caches merged) reads as its
        first answer (earliest ``created_ms``, then text), so every read gives the same one.
        """
        keys = list(set(keys))
        if not keys:
            return {}
        with self._lock:
            delta_table = self._open()
            if delta_table is None:
                return {}
            table = delta_table.to_pyarrow_dataset().to_table(filter=pc.field("key").isin(keys))
        found: dict[str, dict] = {}
        for row in table.sort_by([("created_ms", "ascending"), ("text", "ascending")]).to_pylist():
            found.setdefault(row["key"], row)
        return found

    def put_many(self, rows: list[tuple[str, str, str, int, int]]) -> None:
        """Append (key, text, model, prompt_tokens, completion_tokens) rows in one commit (a new table
        gets :data:`PROPERTIES`; delta-rs leaves an existing table's properties as they are)."""
        if not rows:
            return
        with self._lock:
            self._append(rows)

    def _append(self, rows: list[tuple[str, str, str, int, int]]) -> None:
        from deltalake import write_deltalake
        from deltalake.exceptions import CommitFailedError

        now = int(time.time() * 1000)
        table = pa.Table.from_pylist(
            [dict(zip(SCHEMA.names, (*row, now))) for row in rows], schema=SCHEMA)
        for attempt in range(COMMIT_TRIES + 1):
            target = self._table if self._table is not None else self.path
            try:
                write_deltalake(target, table, mode="append", storage_options=self._options, configuration=PROPERTIES)
                break
            except CommitFailedError:  # another task committed the same version first
                if attempt == COMMIT_TRIES:
                    raise
                time.sleep(0.05 * (attempt + 1))
                self._table = None  # open it again at its latest version
            except Exception:
                self._table = None  # whatever state the failed write left the handle in: open it afresh next time
                raise
        if self._table is None:
            self._open()

    def compact(self) -> None:
        """Merge the many small files that per-call appends leave (driver, at job end)."""
        from deltalake import DeltaTable

        if DeltaTable.is_deltatable(self.path, storage_options=self._options):
            DeltaTable(self.path, storage_options=self._options).optimize.compact()


#: This process's open caches (:func:`shared_cache`), most recently used last, and the pid that opened them.
_SHARED: dict[str, Any] = {"pid": None, "caches": OrderedDict()}
_SHARED_LOCK = threading.Lock()
#: Open caches a process keeps (the most recent jobs').
MAX_SHARED = 4


def shared_cache(path: str | os.PathLike, storage_options: Mapping[str, str] | None = None,
                 run_id: str = "") -> ResponseCache:
    """The :class:`ResponseCache` of ``path`` that this process (a Python worker) keeps open for the
    tasks it runs of the job ``run_id``: a task then reads only the log entries committed since the
    process's last task instead of opening the table and replaying its whole log (a commit per
    task's batch of answers). One per job, so that a job never reads through a handle opened on a
    table that was deleted and written anew since. Safe across threads; a fork (Spark's Python
    daemon forks its workers) starts with none.

    Args:
        path: the cache table's local path or URI.
        storage_options: delta-rs options for an object-store ``path``.
        run_id: the job's run id; empty: a new, unshared cache (a caller outside a job).
    """
    if not run_id:
        return ResponseCache(path, storage_options)
    key = (deltars_uri(path), json.dumps(dict(storage_options or {}), sort_keys=True), run_id)
    with _SHARED_LOCK:
        if _SHARED["pid"] != os.getpid():
            _SHARED.update(pid=os.getpid(), caches=OrderedDict())
        caches = _SHARED["caches"]
        caches[key] = caches.pop(key, None) or ResponseCache(path, storage_options)
        while len(caches) > MAX_SHARED:
            caches.popitem(last=False)
        return caches[key]
