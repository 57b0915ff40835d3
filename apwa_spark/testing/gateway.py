"""A real OpenAI-compatible gateway for tests: LiteLLM's proxy (``litellm[proxy]``) on 127.0.0.1.

It serves one model, forwarded to an upstream endpoint (the embedded llama-server) as an
``openai/<model>`` deployment, behind its own master key, so a client sees another API surface:
chat completions and a model list, no ``/tokenize`` and no ``/props``. Its access log (uvicorn's,
one line per request) shows which routes a job used::

    with LiteLLMGateway("http://127.0.0.1:8080/v1", "gemma-3-270m-q4_k_m", None, tmp) as gw:
        settings = settings.with_overrides(**{"spark.apwa.llm.baseUrl": gw.base_url,
                                              "spark.apwa.llm.apiKey": gw.master_key})
        ...
        gw.routes()   # [("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ...]
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

from apwa_spark.endpoint import free_port, stop_process

_ACCESS = re.compile(r'"(GET|POST|PUT|DELETE|HEAD|OPTIONS) (\S+) HTTP/[\d.]+" (\d{3})')


class LiteLLMGateway:
    """A LiteLLM proxy subprocess; a context manager (starts it, waits for readiness, stops it).

    Args:
        upstream: base URL of the real endpoint, e.g. ``http://127.0.0.1:8080/v1``.
        model: the model name served (and sent upstream).
        upstream_key: the upstream's API key, or None.
        folder: where the config file and the proxy's log go.
        startup_timeout: seconds to wait for ``/health/readiness``.

    Attributes:
        base_url: ``http://127.0.0.1:PORT/v1``.
        master_key: the key clients must send (random).
        log_file: the proxy's stdout and stderr, access log included.
    """

    def __init__(self, upstream: str, model: str, upstream_key: str | None, folder: Path, startup_timeout: float = 180):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.master_key = "sk-gateway-" + secrets.token_hex(12)
        self.log_file = Path(folder) / "litellm.log"
        self._config = Path(folder) / "litellm.json"  # LiteLLM reads YAML; JSON is YAML
        params = {"model": f"openai/{model}", "api_base": upstream, "api_key": upstream_key or "not-needed"}
        self._config.write_text(json.dumps({
            "model_list": [{"model_name": model, "litellm_params": params}],
            "general_settings": {"master_key": self.master_key},
            "litellm_settings": {"telemetry": False, "drop_params": False},
        }))
        self._config.chmod(0o600)
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> "LiteLLMGateway":
        litellm = Path(sys.executable).parent / "litellm"
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                [str(litellm), "--config", str(self._config), "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"litellm exited with code {self._process.returncode}; see {self.log_file}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health/readiness", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"litellm was not ready after {self._startup_timeout:.0f} s; see {self.log_file}")

    def __exit__(self, *exc) -> None:
        stop_process(self._process, grace=15)

    def routes(self) -> list[tuple[str, str, int]]:
        """(method, path without query, status) of every request in the access log so far."""
        text = self.log_file.read_text(errors="replace")
        return [(m, p.split("?")[0], int(s)) for m, p, s in _ACCESS.findall(text)]
