"""The Ollama client (``ollama.AsyncClient``), with errors mapped to our own at the edge.

LLMError
 ├── ModelMissing      the model is not pulled on that host (not retried)
 ├── LLMRejected       any other 4xx (not retried)
 └── Retryable
      ├── LLMUnavailable   connection refused, 5xx
      ├── LLMTimeout       no first token, or the whole answer too slow
      └── StreamCut        the stream ended before ``done``
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import ollama

from spanwatch.errors import SpanwatchError


class LLMError(SpanwatchError):
    """An analysis could not be written by the model; ``str()`` is the reason shown to people."""


class ModelMissing(LLMError):
    pass


class LLMRejected(LLMError):
    pass


class Retryable(LLMError):
    pass


class LLMUnavailable(Retryable):
    pass


class LLMTimeout(Retryable):
    pass


class StreamCut(Retryable):
    pass


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str = ""
    done: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LLMSettings:
    host: str
    model: str
    options: dict[str, Any]
    keep_alive: str
    first_token_timeout: float
    timeout: float


class OllamaClient:
    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        # httpx's read timeout bounds each wait for bytes; our own deadlines bound the answer.
        self._client = ollama.AsyncClient(host=settings.host, timeout=settings.timeout)

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[Chunk]:
        """Tokens as they come, then one ``done`` chunk with Ollama's counters."""
        s = self.settings
        deadline = time.monotonic() + s.timeout
        try:
            responses = await self._client.chat(
                model=s.model,
                messages=messages,
                stream=True,
                options=s.options,
                keep_alive=s.keep_alive,
            )
            iterator = aiter(responses)
            first = True
            while True:
                wait = s.first_token_timeout if first else deadline - time.monotonic()
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise LLMTimeout(f"the answer took longer than {s.timeout:g}s")
                try:
                    part = await asyncio.wait_for(anext(iterator), wait)
                except StopAsyncIteration:
                    raise StreamCut("the stream ended before Ollama said it was done") from None
                except TimeoutError:
                    if first:
                        raise LLMTimeout(
                            f"no first token within {s.first_token_timeout:g}s"
                        ) from None
                    raise LLMTimeout(f"the answer took longer than {s.timeout:g}s") from None
                first = False
                text = part.message.content or "" if part.message else ""
                if part.done:
                    if text:
                        yield Chunk(text)
                    yield Chunk(done=True, stats=_stats(part))
                    return
                if text:
                    yield Chunk(text)
        except ollama.ResponseError as exc:
            raise self._map_response_error(exc) from exc
        except (ConnectionError, httpx.ConnectError) as exc:  # streaming raises httpx's
            raise LLMUnavailable(f"cannot reach Ollama at {s.host}") from exc
        except httpx.TimeoutException as exc:
            raise LLMTimeout(f"Ollama at {s.host} did not answer in time") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise StreamCut(f"the connection to Ollama was cut: {exc}") from exc
        except httpx.HTTPError as exc:
            raise LLMUnavailable(f"Ollama at {s.host}: {exc}") from exc

    def _map_response_error(self, exc: ollama.ResponseError) -> LLMError:
        s = self.settings
        message = str(exc.error)
        if exc.status_code == 404 or "not found" in message.lower():
            return ModelMissing(
                f"model {s.model!r} is not available on {s.host}: run `ollama pull {s.model}` "
                f"there (Ollama said: {message})"
            )
        if exc.status_code >= 500 or exc.status_code == -1:
            return LLMUnavailable(f"Ollama at {s.host} failed: {message} ({exc.status_code})")
        return LLMRejected(f"Ollama at {s.host} refused the request: {message}")

    async def close(self) -> None:
        await self._client._client.aclose()


def _stats(part: Any) -> dict[str, Any]:
    """Ollama's counters; its nanosecond durations as milliseconds (``eval_duration_ms``)."""
    out: dict[str, Any] = {}
    for name in ("eval_count", "prompt_eval_count"):
        if (value := getattr(part, name, None)) is not None:
            out[name] = int(value)
    for name in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        if (value := getattr(part, name, None)) is not None:
            out[f"{name}_ms"] = round(int(value) / 1e6, 3)
    if done_reason := getattr(part, "done_reason", None):
        out["done_reason"] = str(done_reason)
    return out


class Breaker:
    """Open after ``failures`` failures in a row; half-open (one try) after ``cooldown_s``."""

    def __init__(self, failures: int, cooldown_s: float) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._failures = 0
        self._opened_at: float | None = None

    def allows(self, now: float) -> bool:
        return self._opened_at is None or now - self._opened_at >= self.cooldown_s

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def failure(self, now: float) -> None:
        self._failures += 1
        if self._failures >= self.threshold:
            self._opened_at = now
