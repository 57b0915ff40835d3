"""A leak scanner: which known values occur anywhere in the files a run wrote.

Every file under a folder is read as text twice over: its raw bytes (UTF-8, errors replaced: Delta
logs, manifests, JSON, logs) and, for a Parquet file (Delta tables, the response cache, dead
letters), its decoded rows, since compressed pages hide plain text from a byte search. A value
counts once per file it occurs in, per view.

    hits = scan_tree("runs/redacted", ["maria@example.com", "+44 20 7946 0958"])
    # {"maria@example.com": ["runs/redacted/result/part-0.parquet#rows"], ...}; absent values map to []
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, Sequence


def file_texts(root: str | Path, skip_columns: Sequence[str] = ()) -> Iterator[tuple[str, str]]:
    """(``file`` or ``file#rows``, text) for every file under ``root``: raw bytes decoded as UTF-8,
    and for ``.parquet`` files also their rows as JSON lines, without ``skip_columns``."""
    import pyarrow.parquet as pq

    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        yield str(path), path.read_bytes().decode("utf-8", "replace")
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            table = table.drop_columns([c for c in skip_columns if c in table.column_names])
            yield f"{path}#rows", "\n".join(json.dumps(row, default=str, ensure_ascii=False) for row in table.to_pylist())


def scan_texts(texts: Iterable[tuple[str, str]], values: Iterable[str]) -> dict[str, list[str]]:
    """value ──► the names of the texts it occurs in (verbatim); every value is a key."""
    texts = list(texts)
    return {value: [name for name, text in texts if value in text] for value in dict.fromkeys(values)}


def scan_tree(root: str | Path, values: Iterable[str], skip_columns: Sequence[str] = ()) -> dict[str, list[str]]:
    """:func:`scan_texts` over :func:`file_texts` of ``root``."""
    return scan_texts(file_texts(root, skip_columns), values)
