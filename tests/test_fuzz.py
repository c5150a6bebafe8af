"""Fuzzing (seeded): decoders, the HTTP receiver, REST bodies and WebSocket messages.

The only answers are OK or a clear refusal (MalformedPayload / 400 / a close with a reason):
never a crash, a 500, or a server that stops answering. ``benchmarks/fuzz.py`` runs the same
properties over 100 000+ cases.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from spanwatch.otlp import MalformedPayload, decode_protobuf, decode_request, parse_json
from spanwatch.otlp._decode import NATIVE
from tests.conftest import RunningDaemon
from tests.otlp_client import http_request
from tests.otlp_payloads import many_spans

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
VALID = many_spans(3).SerializeToString()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
otlp_json = st.fixed_dictionaries(
    {
        "resourceSpans": st.lists(
            st.fixed_dictionaries(
                {
                    "resource": st.fixed_dictionaries({"attributes": json_values}),
                    "scopeSpans": st.lists(
                        st.fixed_dictionaries(
                            {
                                "spans": st.lists(
                                    st.dictionaries(
                                        st.sampled_from(
                                            [
                                                "traceId",
                                                "spanId",
                                                "parentSpanId",
                                                "name",
                                                "kind",
                                                "startTimeUnixNano",
                                                "endTimeUnixNano",
                                                "status",
                                                "attributes",
                                                "events",
                                                "links",
                                            ]
                                        ),
                                        json_values,
                                        max_size=8,
                                    ),
                                    max_size=3,
                                )
                            }
                        ),
                        max_size=2,
                    ),
                }
            ),
            max_size=2,
        )
    }
)


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        if out:
            out[position % len(out)] = value
    return bytes(out)


def decode_any(body: bytes, as_json: bool) -> None:
    """The property: a body decodes, or is refused as malformed; nothing else. A protobuf body
    decodes alike by the C fast path and by protobuf."""
    if as_json:
        try:
            request = parse_json(body)
        except MalformedPayload:
            return
        decode_request(request)
        return
    outcomes = []
    for native in {NATIVE, False}:
        try:
            result = decode_protobuf(body, native=native)
            outcomes.append((result.batch.columns(), result.refused, result.reason))
        except MalformedPayload as exc:
            outcomes.append(str(exc))
    assert all(o == outcomes[0] for o in outcomes)


@FUZZ
@given(st.binary(max_size=512))
def test_protobuf_decoder_on_random_bytes(body: bytes) -> None:
    """Random bytes are decoded or refused as malformed."""
    decode_any(body, as_json=False)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8))
def test_protobuf_decoder_on_mutated_requests(edits: list[tuple[int, int]]) -> None:
    """A valid request with bytes flipped is decoded or refused as malformed."""
    decode_any(_mutate(VALID, edits), as_json=False)


@FUZZ
@given(st.one_of(json_values, otlp_json))
def test_json_decoder_on_arbitrary_documents(document: Any) -> None:
    """Any JSON document, OTLP-shaped or not, is decoded or refused as malformed."""
    decode_any(json.dumps(document).encode(), as_json=True)


@FUZZ
@given(st.binary(max_size=256))
def test_json_decoder_on_random_bytes(body: bytes) -> None:
    """Random bytes as JSON are decoded or refused as malformed."""
    decode_any(body, as_json=True)


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=st.binary(max_size=300), as_json=st.booleans(), gz=st.booleans())
def test_http_receiver_answers_200_or_400(
    daemon: RunningDaemon, body: bytes, as_json: bool, gz: bool
) -> None:
    """Over HTTP, any body gets 200 or 400, never a 5xx."""
    answer = http_request(
        f"{daemon.http_url}/v1/traces",
        body,
        "application/json" if as_json else "application/x-protobuf",
        gzip_body=gz,
    )
    assert answer.status in (200, 400), answer


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(["analysis_id", "rating", "correction"]), json_values, max_size=3
        ),
    )
)
def test_rest_rating_bodies_get_400_or_404(daemon: RunningDaemon, body: Any) -> None:
    """Any JSON body to the rating endpoint is refused clearly, never a 5xx."""
    answer = http_request(
        f"{daemon.http_url}/api/training/rate", json.dumps(body).encode(), "application/json"
    )
    assert answer.status in (400, 404), answer
    assert "error" in json.loads(answer.body)


@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200), json_values.map(json.dumps)))
def test_websocket_messages_get_a_reply_or_a_reasoned_close(
    daemon: RunningDaemon, message: str | bytes
) -> None:
    """Any client message gets a reply or a close with a code and reason; the server lives."""

    async def send() -> None:
        async with connect(f"ws://127.0.0.1:{daemon.daemon.ws.port}/events") as ws:
            await ws.send(message)
            try:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert reply["type"] in ("pong", "rate.error", "rate.ok")
            except ConnectionClosed as closed:
                assert closed.rcvd is not None
                assert closed.rcvd.code in (1003, 1007, 1008, 1009) and closed.rcvd.reason

    asyncio.run(send())
