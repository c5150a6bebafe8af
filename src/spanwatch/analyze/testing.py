"""An Ollama-protocol server for tests and benchmarks: ``POST /api/chat`` streaming NDJSON
with Ollama's field names, on a free loopback port, in a thread of its own.

Each request takes the next step of a script (the last step repeats):

- ``("ok", tokens)``: stream the tokens, then the ``done`` line with Ollama's counters
- ``("missing",)``: 404 ``{"error": "model \\"M\\" not found, try pulling it first"}``
- ``("error", status)``: that status with an error body
- ``("hang",)``: accept the request and never answer
- ``("slow", seconds, tokens)``: wait before the first token
- ``("cut", tokens)``: stream the tokens, then drop the connection before ``done``
- ``("timed", count, per_second)``: ``count`` tokens at that rate, each token's text the
  wall-clock time it was sent (ns), for measuring delivery lag
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

Step = tuple[Any, ...]


class OllamaServer:
    def __init__(self, script: list[Step]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self.port = self._call(self._start())

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(10)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_post("/api/chat", self._chat)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return int(self._runner.addresses[0][1])

    def close(self) -> None:
        if self._runner is not None:
            self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _next_step(self) -> Step:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        model = body.get("model", "")
        step = self._next_step()
        kind = step[0]
        if kind == "missing":
            return web.json_response(
                {"error": f'model "{model}" not found, try pulling it first'}, status=404
            )
        if kind == "error":
            return web.json_response(
                {"error": "llama runner process has terminated"}, status=step[1]
            )
        if kind == "hang":
            await asyncio.sleep(3600)
        if kind == "slow":
            await asyncio.sleep(step[1])
        timed = kind == "timed"
        tokens: list[str] = [""] * step[1] if timed else step[-1]
        pause = 1 / step[2] if timed else 0.002
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        started = time.monotonic_ns()
        for token in tokens:
            text = f"{time.time_ns()} " if timed else token
            message = {"role": "assistant", "content": text}
            await response.write(
                _line({"model": model, "created_at": _now(), "message": message, "done": False})
            )
            await asyncio.sleep(pause)
        if kind == "cut":
            assert request.transport is not None
            request.transport.abort()
            return response
        elapsed = time.monotonic_ns() - started
        await response.write(
            _line(
                {
                    "model": model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    "done_reason": "stop",
                    "total_duration": elapsed + 5_000_000,
                    "load_duration": 1_000_000,
                    "prompt_eval_count": sum(
                        len(m.get("content", "")) // 4 for m in body.get("messages", [])
                    ),
                    "prompt_eval_duration": 2_000_000,
                    "eval_count": len(tokens),
                    "eval_duration": elapsed,
                }
            )
        )
        await response.write_eof()
        return response


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj) + "\n").encode()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
