"""Progress of a long LLM step, as a tqdm bar on stderr.

Executors append every answer to the response cache (a Delta table) as it arrives, so the driver
can count answers without touching the running tasks: it polls the table's log (``numRecords`` of
the files added since the step began) every ``interval`` seconds.
"""

from __future__ import annotations

import threading
from typing import Mapping

from tqdm import tqdm


def _answers(cache_path: str, options: dict[str, str] | None) -> int:
    import pyarrow as pa
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(cache_path, storage_options=options):
        return 0
    actions = pa.table(DeltaTable(cache_path, storage_options=options).get_add_actions(flatten=True))
    return int(sum(n or 0 for n in actions.column("num_records").to_pylist()))


class AnswerProgress:
    """``with AnswerProgress(cache_path, total, "chunk"):`` shows new answers / ``total`` while the block runs.

    ``storage_options``: delta-rs options of an object-store cache (``s3a://…``).
    """

    def __init__(self, cache_path: str | None, total: int, name: str, interval: float = 2.0,
                 storage_options: Mapping[str, str] | None = None):
        self.cache_path, self.total, self.name, self.interval = cache_path, total, name, interval
        self._options = dict(storage_options or {}) or None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "AnswerProgress":
        if self.cache_path and self.total > 0:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        start = _answers(self.cache_path, self._options)
        with tqdm(total=self.total, desc=f"[apwa] {self.name}", unit="answer", leave=False) as bar:
            while not self._stop.wait(self.interval):
                try:
                    bar.n = min(_answers(self.cache_path, self._options) - start, self.total)
                except Exception:  # the table is being compacted or created: try again next tick
                    continue
                bar.refresh()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
