"""An OpenAI-compatible endpoint that answers at once: a real HTTP server on 127.0.0.1, no model.

It measures what the plugin itself costs (Spark, Arrow, pandas UDFs, the LLM client, the response
cache) with the model's time taken out: APWA's *engine overhead*. Every route answers immediately
with a fixed answer and usage counts:

* ``POST /v1/completions`` and ``POST /v1/chat/completions``: ``answer`` as the completion text
  (``"{}"`` when the request carries a JSON schema, which an empty object of any schema without
  required fields satisfies), ``usage.prompt_tokens`` = whitespace-separated words of the prompt,
  ``usage.completion_tokens`` = words of the answer, ``prompt_tokens_details.cached_tokens`` = 0;
* ``POST /tokenize``: ``{"tokens": [...]}``, one id per whitespace-separated word;
* ``GET /health``, ``GET /v1/models``.

It speaks HTTP/1.1 with keep-alive, so a client's connection pool is reused as with a real server.
``requests`` counts completion requests. Usage::

    with InstantEndpoint() as endpoint:
        settings = settings.with_overrides(**{"spark.apwa.llm.baseUrl": endpoint.base_url})

or standalone: ``python -m apwa_spark.testing.instant_endpoint --port 8099``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time

MODEL = "instant"


class InstantEndpoint:
    """The instant endpoint; a context manager (starts an asyncio server in a thread, stops it on exit).

    A minimal HTTP/1.1 server on ``asyncio`` (keep-alive, ``Content-Length`` bodies, no chunked
    requests): ``http.server`` managed only ~300 requests/s here, too slow to show the plugin's own
    ceiling.

    Args:
        answer: the completion text of every non-JSON request.
        port: 0 picks a free port.
    """

    def __init__(self, answer: str = "ok.", port: int = 0):
        self.answer = answer
        self.requests = 0
        self.port = port
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # ---- routes ---------------------------------------------------------------------------------
    def route(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """(status, JSON payload) for one request."""
        path = path.split("?", 1)[0].rstrip("/")
        if method == "GET" and path in ("/health", "/v1/health"):
            return 200, {"status": "ok"}
        if method == "GET" and path in ("/v1/models", "/models"):
            return 200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "apwa"}]}
        if method == "POST":
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                return 400, {"error": {"message": "body is not JSON"}}
            if path.endswith("/tokenize"):
                return 200, {"tokens": list(range(len(str(request.get("content", "")).split())))}
            if path.endswith("/completions"):
                self.requests += 1
                return 200, self._completion(request, chat=path.endswith("chat/completions"))
        return 404, {"error": {"message": f"no route {method} {path}"}}

    def _completion(self, body: dict, chat: bool) -> dict:
        structured = body.get("json_schema") is not None or body.get("response_format") is not None
        text = "{}" if structured else self.answer
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", [])) if chat else str(body.get("prompt", ""))
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                 "total_tokens": len(prompt.split()) + len(text.split()), "prompt_tokens_details": {"cached_tokens": 0}}
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"} if chat
                  else {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None})
        return {"id": "instant", "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": body.get("model", MODEL), "choices": [choice], "usage": usage}

    # ---- HTTP/1.1 over asyncio streams --------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                status, payload = self.route(method, path, body)
                data = json.dumps(payload).encode()
                writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        except asyncio.CancelledError:  # __exit__ ends a keep-alive connection: not an error to report
            pass
        finally:
            writer.close()

    def __enter__(self) -> "InstantEndpoint":
        self._thread.start()
        start = asyncio.start_server(self._serve, "127.0.0.1", self.port, backlog=1024)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result()
        self.port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        return self

    def __exit__(self, *exc) -> None:
        async def stop():
            self._server.close()
            open_connections = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in open_connections:  # clients' keep-alive connections: ended here, not left to the GC
                task.cancel()
            await asyncio.gather(*open_connections, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the instant OpenAI-compatible endpoint in the foreground.")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--answer", default="ok.")
    args = parser.parse_args()
    with InstantEndpoint(args.answer, args.port) as endpoint:
        print(f"instant endpoint at {endpoint.base_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
