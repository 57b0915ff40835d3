"""Locations as URIs: local paths, ``file:``, ``s3a://``, ``s3://``, ``abfss://``, ``gs://``, ``dbfs:/``.

Only local locations are ever resolved as files (``Path.resolve``); every other URI is passed on as
it is, to Spark's Hadoop file systems (native Delta, manifests) or to delta-rs with
:func:`storage_options` (the fallback writer, the response cache that executors append to).

    join("s3a://bucket/runs", "chunk")   # 's3a://bucket/runs/chunk'
    join("runs", "chunk")                # '/abs/cwd/runs/chunk'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from pyspark.sql import SparkSession

#: Hadoop S3A settings (``spark.hadoop.fs.s3a.*``) ──► delta-rs / object_store storage options.
S3A_OPTIONS = {
    "fs.s3a.access.key": "AWS_ACCESS_KEY_ID",
    "fs.s3a.secret.key": "AWS_SECRET_ACCESS_KEY",
    "fs.s3a.session.token": "AWS_SESSION_TOKEN",
    "fs.s3a.endpoint.region": "AWS_REGION",
}


def is_local(uri: str | os.PathLike) -> bool:
    """True for a plain path or a ``file:`` URI; False for any other scheme (``s3a://``, ``dbfs:/`` …)."""
    return urlsplit(str(uri)).scheme in ("", "file")


def normalize(uri: str | os.PathLike) -> str:
    """A local location as an absolute path (``~`` expanded, ``file:`` dropped); any other URI as given,
    without a trailing ``/``."""
    text = str(uri)
    if not is_local(text):
        return text.rstrip("/")
    if text.startswith("file:"):
        text = urlsplit(text).path
    return str(Path(text).expanduser().resolve())


def deltars_uri(uri: str | os.PathLike) -> str:
    """``uri`` as delta-rs opens it: ``dbfs:/x`` becomes Databricks' local mount ``/dbfs/x`` (delta-rs
    has no ``dbfs`` scheme; every Databricks node mounts DBFS there); others as :func:`normalize`."""
    text = normalize(uri)
    parts = urlsplit(text)
    if parts.scheme == "dbfs" and not parts.netloc:
        return "/dbfs/" + parts.path.lstrip("/")
    return text


def join(uri: str | os.PathLike, *names: str) -> str:
    """``uri`` with ``names`` appended, local or not: ``join("s3a://b/out", "chunk") == "s3a://b/out/chunk"``."""
    base = normalize(uri)
    if is_local(base):
        return str(Path(base, *names))
    return "/".join([base, *names])


def make_dirs(uri: str | os.PathLike) -> None:
    """Create a local folder (and its parents); object stores need none, so other URIs are left alone."""
    if is_local(uri):
        Path(normalize(uri)).mkdir(parents=True, exist_ok=True)


def local_file(output: str, name: str) -> Path:
    """A local file for what only a local process can write (a server's log): ``<output>/<name>`` when
    ``output`` is local, else ``name`` in a new local temporary folder."""
    if is_local(output):
        return Path(join(output, name))
    return Path(tempfile.mkdtemp(prefix="apwa-")) / name


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    """Write ``text`` (UTF-8) to the file ``uri``, replacing it; a non-local URI through the session's
    Hadoop file system (``spark.hadoop.*`` credentials and endpoints apply).

    Raises:
        RuntimeError: a non-local URI on a session without a JVM (Spark Connect).
    """
    if is_local(uri):
        path = Path(normalize(uri))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    jvm, conf = _hadoop(spark, uri)
    path = jvm.org.apache.hadoop.fs.Path(uri)
    stream = path.getFileSystem(conf).create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def is_folder(spark: SparkSession, uri: str) -> bool:
    """True when ``uri`` is a folder, False when it is a file; a non-local URI is asked of the
    session's Hadoop file system.

    Raises:
        FileNotFoundError: nothing at ``uri``.
    """
    if is_local(uri):
        path = Path(normalize(uri))
        if not path.exists():
            raise FileNotFoundError(f"nothing at {uri}")
        return path.is_dir()
    jvm, conf = _hadoop(spark, uri)
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(conf)
    if not fs.exists(path):
        raise FileNotFoundError(f"nothing at {uri}")
    return fs.getFileStatus(path).isDirectory()


def has_children(spark: SparkSession, uri: str, *patterns: str) -> bool:
    """True when the folder ``uri`` holds an entry matching any glob pattern (``_delta_log``,
    ``*.parquet``). A non-local folder is matched by the JVM's Hadoop ``globStatus``: a constant
    number of driver calls whatever the number of files (the folder is never listed entry by
    entry through Py4J)."""
    if is_local(uri):
        folder = Path(normalize(uri))
        return any(next(folder.glob(p), None) is not None for p in patterns)
    jvm, conf = _hadoop(spark, uri)
    for pattern in patterns:
        path = jvm.org.apache.hadoop.fs.Path(f"{uri.rstrip('/')}/{pattern}")
        found = path.getFileSystem(conf).globStatus(path)
        if found is not None and len(found) > 0:
            return True
    return False


def storage_options(spark: SparkSession, uri: str) -> dict[str, str]:
    """delta-rs storage options for ``uri`` from the session's Hadoop conf.

    For ``s3://`` / ``s3a://``: credentials, region and endpoint from ``fs.s3a.*`` (an endpoint
    without a scheme gets ``https://``, or ``http://`` when ``fs.s3a.connection.ssl.enabled`` is
    false; an ``http://`` endpoint sets ``AWS_ALLOW_HTTP``). Other schemes, and whatever is not set
    here: delta-rs reads its usual environment variables (``AWS_*``, ``AZURE_*``, ``GOOGLE_*``).
    The result holds secrets: keep it out of logs, manifests and tables.
    """
    if urlsplit(uri).scheme not in ("s3", "s3a"):
        return {}
    conf = spark._jsparkSession.sessionState().newHadoopConf()
    options = {name: conf.get(key) for key, name in S3A_OPTIONS.items() if conf.get(key)}
    endpoint = conf.get("fs.s3a.endpoint")
    if endpoint:
        if "://" not in endpoint:
            ssl = (conf.get("fs.s3a.connection.ssl.enabled") or "true").lower() != "false"
            endpoint = ("https://" if ssl else "http://") + endpoint
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    return options


def _hadoop(spark: SparkSession, uri: str):
    jvm = getattr(spark, "_jvm", None)
    if jvm is None:
        raise RuntimeError(f"cannot reach {uri}: reading or writing files to an object store needs a classic Spark session "
                           "(with a JVM), not Spark Connect; use a local or mounted path (/Volumes/...) instead")
    return jvm, spark._jsparkSession.sessionState().newHadoopConf()
