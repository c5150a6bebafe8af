"""The analysis stage: severe incidents in, analysis events out, on the daemon's event loop.

It listens to incident events, batches them (wall clock), and for each batch makes one LLM call
whose tokens are published as they arrive. It never blocks anyone: the hub hands it events
without waiting, the LLM call is awaited in its own task, and a slow or absent model only ever
delays analyses. With the LLM off (``--no-llm``) or its breaker open, a summary built from the
incident's facts is published instead, marked as such. Each prompt shows the rated past
analyses most like its incidents (``similar``, the store's), and every answer, the model's or
the facts-only one, completes with its parsed parts and its grounding checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity import wait_random_exponential as jittered

from spanwatch.config import Config
from spanwatch.model import Event, EventType

from ._batcher import Batch, Batcher
from ._fallback import fallback_summary
from ._grounding import check_answer
from ._llm import Breaker, LLMError, LLMSettings, OllamaClient, Retryable
from ._prompt import Prompt, build_prompt
from ._redact import Redactor

log = structlog.get_logger("spanwatch.analyze")

Publish = Callable[[Event], None]
# the rated past analyses most like a batch's incidents (the store's ``similar``); blocking
Similar = Callable[[list[dict[str, Any]], int], list[dict[str, Any]]]
POLL_S = 0.25
EXAMPLES = 2  # rated past analyses shown per prompt, at most


def llm_settings(config: Config) -> LLMSettings:
    llm = config.llm
    return LLMSettings(
        host=llm.host,
        model=llm.model,
        keep_alive=llm.keep_alive,
        first_token_timeout=llm.first_token_timeout,
        timeout=llm.timeout,
        options={
            "repeat_penalty": llm.repeat_penalty,
            "temperature": llm.temperature,
            "num_ctx": llm.num_ctx,
            "num_predict": llm.num_predict,
        },
    )


class AnalysisStage:
    def __init__(
        self,
        config: Config,
        publish: Publish,
        registry: CollectorRegistry,
        client: OllamaClient | None = None,
        similar: Similar | None = None,
    ) -> None:
        a, llm = config.analysis, config.llm
        self._publish = publish
        self._similar = similar
        self._batcher = Batcher(a.batch_window, a.max_batch, a.min_severity, a.queue_batches)
        self._budget = a.prompt_tokens
        self._redactor = Redactor(ip_addresses=a.redact_ip_addresses)
        self._client = (
            client
            if client is not None
            else (OllamaClient(llm_settings(config)) if a.enabled else None)
        )
        self._model = llm.model
        self._retries = llm.retries
        self._breaker = Breaker(llm.breaker_failures, llm.breaker_cooldown)
        self._task: asyncio.Task[None] | None = None
        self._outcomes = Counter(
            "spanwatch_analysis_batches",
            "Analysed batches by outcome (model, fallback, failed).",
            ["outcome"],
            registry=registry,
        )
        self._dropped = Gauge(
            "spanwatch_analysis_dropped_batches",
            "Batches dropped (least severe first) because the queue was full.",
            registry=registry,
        )
        self._dropped.set_function(lambda: self._batcher.dropped)
        Gauge(
            "spanwatch_llm_breaker_open",
            "1 while the LLM circuit breaker is open.",
            registry=registry,
        ).set_function(lambda: int(self._breaker.is_open))

    # -- input: a hub listener, on the loop ----------------------------------------------------

    def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] in (EventType.INCIDENT_OPENED, EventType.INCIDENT_UPDATED):
            self._batcher.offer(message["incident"], time.monotonic())

    # -- the loop ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="spanwatch-analysis")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.close()

    async def _run(self) -> None:
        while True:
            self._batcher.due(time.monotonic())
            batch = self._batcher.take()
            if batch is None:
                await asyncio.sleep(POLL_S)
                continue
            try:
                await self.analyse(batch)
            except Exception:  # one bad batch must not end the stage
                log.exception("analysis failed unexpectedly")

    async def analyse(self, batch: Batch) -> None:
        """One batch: started, then tokens and completed, or failed."""
        incidents = [self._redactor.redact_mapping(i) for i in batch.incidents]
        incidents.sort(key=lambda i: (i.get("severity", 5), i.get("detected_at", "")))
        examples = await self._examples(incidents)
        prompt = build_prompt(incidents, self._budget, self._redactor, examples)
        analysis_id = f"an-{uuid.uuid4().hex[:16]}"
        incident_ids = [str(i["id"]) for i in batch.incidents]
        use_model = self._client is not None and self._breaker.allows(time.monotonic())
        self._publish(
            Event(
                EventType.ANALYSIS_STARTED,
                {
                    "analysis_id": analysis_id,
                    "incident_ids": incident_ids,
                    "model": self._model if use_model else "",
                    "fallback": not use_model,
                },
            )
        )
        if not use_model:
            self._complete(
                analysis_id,
                incident_ids,
                prompt,
                fallback_summary(incidents, self._redactor),
                "",
                True,
                {},
                incidents,
            )
            self._outcomes.labels("fallback").inc()
            return
        try:
            text, stats = await self._call_model(analysis_id, prompt)
        except LLMError as exc:
            self._breaker.failure(time.monotonic())
            self._outcomes.labels("failed").inc()
            log.warning("analysis failed", analysis_id=analysis_id, reason=str(exc))
            self._publish(
                Event(
                    EventType.ANALYSIS_FAILED,
                    {
                        "analysis_id": analysis_id,
                        "incident_ids": incident_ids,
                        "reason": str(exc),
                    },
                )
            )
            return
        self._breaker.success()
        self._outcomes.labels("model").inc()
        self._complete(
            analysis_id, incident_ids, prompt, text, self._model, False, stats, incidents
        )

    async def _examples(self, incidents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rated past analyses of similar incidents; none when the store cannot say."""
        if self._similar is None:
            return []
        try:
            return await asyncio.to_thread(self._similar, incidents, EXAMPLES)
        except Exception as exc:  # examples help; their absence must not stop the analysis
            log.warning("no examples for the prompt", error=str(exc))
            return []

    async def _call_model(self, analysis_id: str, prompt: Prompt) -> tuple[str, dict[str, Any]]:
        assert self._client is not None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retries + 1),
            wait=jittered(multiplier=0.5, max=8),
            retry=retry_if_exception_type(Retryable),
            reraise=True,
        )
        shown = False  # tokens already published by an earlier attempt
        async for attempt in retrying:
            with attempt:
                if shown:
                    # Subscribers drop the text shown so far: the answer starts again.
                    self._publish(
                        Event(
                            "analysis.retry",
                            {
                                "analysis_id": analysis_id,
                                "attempt": attempt.retry_state.attempt_number,
                            },
                        )
                    )
                    shown = False
                parts: list[str] = []
                stats: dict[str, Any] = {}
                async for chunk in self._client.stream(prompt.messages()):
                    if chunk.done:
                        stats = chunk.stats
                    else:
                        parts.append(chunk.text)
                        shown = True
                        self._publish(
                            Event(
                                EventType.ANALYSIS_TOKEN,
                                {
                                    "analysis_id": analysis_id,
                                    "text": chunk.text,
                                },
                            )
                        )
                return "".join(parts), stats
        raise AssertionError("unreachable")  # pragma: no cover

    def _complete(
        self,
        analysis_id: str,
        incident_ids: list[str],
        prompt: Prompt,
        text: str,
        model: str,
        fallback: bool,
        stats: dict[str, Any],
        incidents: list[dict[str, Any]],
    ) -> None:
        checked = check_answer(text, incidents, prompt.facts)
        if not checked.grounding["passed"]:
            log.info(
                "analysis not grounded",
                analysis_id=analysis_id,
                problems=checked.grounding["problems"],
            )
        self._publish(
            Event(
                EventType.ANALYSIS_COMPLETED,
                {
                    "analysis_id": analysis_id,
                    "incident_ids": incident_ids,
                    "text": text,
                    "model": model,
                    "fallback": fallback,
                    "counters": stats,
                    "prompt": prompt.to_dict(),
                    "parts": checked.parts,
                    "grounding": checked.grounding,
                    "example_ids": list(prompt.example_ids),
                },
            )
        )
