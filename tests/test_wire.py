"""The C fast path of OTLP decoding against the protobuf path: same columns, same refusals.

``decode_protobuf(body, native=True)`` must give exactly what ``native=False`` gives (protobuf
parse, then the Python decoder), or the same MalformedPayload; and it must really take the
well-formed bodies itself, or these tests would compare the protobuf path with itself.
"""

from __future__ import annotations

import gc
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from spanwatch.model import SEMCONV_COLUMNS
from spanwatch.otlp import MalformedPayload, decode_protobuf
from spanwatch.otlp._decode import NATIVE, _wire, count_spans
from tests.otlp_payloads import many_spans

# Where the C paths are required (CI), these tests never skip: a missing build fails them.
pytestmark = pytest.mark.skipif(
    not NATIVE and os.environ.get("SPANWATCH_REQUIRE_NATIVE") != "1",
    reason="the C fast path was not built",
)

CHECK = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

KEYS = [k for names in SEMCONV_COLUMNS.values() for k in names] + [
    "service.name",
    "service.version",
    "exception.type",
    "exception.message",
    "other.key",
    "",
]

scalars = st.one_of(
    st.builds(lambda v: AnyValue(string_value=v), st.text(max_size=12)),
    st.builds(lambda v: AnyValue(int_value=v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: AnyValue(bool_value=v), st.booleans()),
    st.builds(lambda v: AnyValue(double_value=v), st.floats(allow_nan=False)),
    st.builds(lambda v: AnyValue(bytes_value=v), st.binary(max_size=4)),
    st.just(AnyValue()),
    st.sampled_from(["200", " 404 ", "4_0_4", "x", "+7", "-1", "²"]).map(
        lambda v: AnyValue(string_value=v)
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(
            lambda vs: AnyValue(array_value={"values": vs})  # type: ignore[arg-type]
        ),
        st.lists(st.tuples(st.sampled_from(KEYS), inner), max_size=3).map(
            lambda kvs: AnyValue(
                kvlist_value={"values": [KeyValue(key=k, value=v) for k, v in kvs]}  # type: ignore[arg-type]
            )
        ),
    ),
    max_leaves=6,
)
attributes = st.lists(
    st.builds(lambda k, v: KeyValue(key=k, value=v), st.sampled_from(KEYS), values), max_size=8
)
ids16 = st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=17), st.just(bytes(16)))
ids8 = st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=9), st.just(bytes(8)))
times = st.one_of(st.just(0), st.integers(0, 2**64 - 1), st.integers(10**18, 10**18 + 10**9))


@st.composite
def spans(draw: st.DrawFn) -> Span:
    span = Span(
        trace_id=draw(ids16),
        span_id=draw(ids8),
        parent_span_id=draw(st.one_of(st.just(b""), ids8)),
        name=draw(st.text(max_size=10)),
        kind=draw(st.integers(-3, 7)),
        start_time_unix_nano=draw(times),
        end_time_unix_nano=draw(times),
        status=Status(code=draw(st.integers(-1, 3)), message=draw(st.text(max_size=6))),
        trace_state=draw(st.text(max_size=4)),
        flags=draw(st.integers(0, 2**32 - 1)),
    )
    span.attributes.extend(draw(attributes))
    for name in draw(st.lists(st.sampled_from(["exception", "log", ""]), max_size=3)):
        event = span.events.add(name=name, time_unix_nano=draw(times))
        event.attributes.extend(draw(attributes))
    for _ in range(draw(st.integers(0, 2))):
        link = span.links.add(trace_id=draw(ids16), span_id=draw(ids8))
        link.attributes.extend(draw(attributes))
    return span


@st.composite
def requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        rs = request.resource_spans.add(schema_url=draw(st.text(max_size=3)))
        if draw(st.booleans()):
            rs.resource.attributes.extend(draw(attributes))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            ss.scope.name = draw(st.text(max_size=5))
            ss.scope.attributes.extend(draw(attributes))
            ss.spans.extend(draw(st.lists(spans(), max_size=4)))
    return request


def outcome(body: bytes, native: bool) -> object:
    try:
        result = decode_protobuf(body, native=native)
    except MalformedPayload as exc:
        return ("malformed", str(exc))
    return (result.batch.columns(), result.refused, result.reason)


def assert_counted(body: bytes) -> None:
    """count_spans() tells, without decoding, as many spans as decoding finds (taken or
    refused), or says it cannot tell; a body protobuf refuses may be counted anyhow."""
    counted = count_spans(body)
    try:
        result = decode_protobuf(body, native=False)
    except MalformedPayload:
        return
    assert counted is None or counted == len(result.batch) + result.refused


@CHECK
@given(requests())
def test_well_formed_requests_decode_alike_and_take_the_fast_path(
    request: ExportTraceServiceRequest,
) -> None:
    body = request.SerializeToString()
    assert _wire.decode(body) is not None
    assert outcome(body, native=True) == outcome(body, native=False)
    assert count_spans(body) == sum(
        len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans
    )
    assert_counted(body)


@CHECK
@given(requests(), st.data())
def test_altered_bytes_decode_alike_or_fall_back(
    request: ExportTraceServiceRequest, data: st.DataObject
) -> None:
    """Cut, flipped or spliced bytes: the fast path agrees with protobuf or lets it decide."""
    body = bytearray(request.SerializeToString())
    for _ in range(data.draw(st.integers(1, 3))):
        if not body:
            break
        i = data.draw(st.integers(0, len(body) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            body[i] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del body[i:]
        else:
            body[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    assert outcome(bytes(body), native=True) == outcome(bytes(body), native=False)
    assert_counted(bytes(body))


@CHECK
@given(st.binary(max_size=64))
def test_random_bytes_decode_alike(body: bytes) -> None:
    assert outcome(body, native=True) == outcome(body, native=False)
    assert_counted(body)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    tag = _varint(number << 3 | wire_type)
    return tag + (_varint(len(payload)) if wire_type == 2 else b"") + payload


def test_what_protobuf_merges_the_fast_path_merges() -> None:
    """Fields repeated on the wire (last wins, messages merge) and a resource after its spans."""
    span = many_spans(1).resource_spans[0].scope_spans[0].spans[0]
    span_bytes = span.SerializeToString()
    span_bytes += _field(5, 2, b"renamed") + _field(15, 2, _field(3, 0, b"\x02"))
    span_bytes += _field(
        9, 2, KeyValue(key="http.route", value=AnyValue(int_value=7)).SerializeToString()
    )
    scope_spans = _field(2, 2, span_bytes)
    resource = _field(
        1, 2, KeyValue(key="service.name", value=AnyValue(string_value="late")).SerializeToString()
    )
    resource_spans = _field(2, 2, scope_spans) + _field(1, 2, resource)
    body = _field(1, 2, resource_spans)
    assert _wire.decode(body) is not None
    fast = decode_protobuf(body, native=True)
    assert fast.batch.columns() == decode_protobuf(body, native=False).batch.columns()
    assert fast.batch.name == ["renamed"]
    assert fast.batch.service == ["late"]
    assert fast.batch.status_code == [2]


@pytest.mark.parametrize(
    "body",
    [
        _field(1, 2, b"") + b"\x0a\x80\x80\x80\x80\x80\x00",  # a length in six bytes
        b"\x0a" + b"\x80" * 9 + b"\x00",  # a length in ten bytes
        b"\x8a\x80\x80\x80\x80\x00\x00",  # a tag in six bytes
        _field(1, 2, b"\x12\x80\x80\x80\x80\x80\x00"),  # a nested length in six bytes
        _field(1, 2, b"\x92\x80\x80\x80\x80\x00\x00"),  # a nested tag in six bytes
    ],
    ids=["length-6", "length-10", "tag-6", "nested-length-6", "nested-tag-6"],
)
def test_a_tag_or_length_over_five_bytes_goes_to_protobuf(body: bytes) -> None:
    """Protobuf reads a tag or a length in at most five bytes and refuses a longer encoding,
    even of zero, as corrupt; the fast path leaves it to protobuf (a fuzzing find)."""
    assert _wire.decode(body) is None
    assert outcome(body, native=True) == outcome(body, native=False)
    assert outcome(body, native=False)[0] == "malformed"


def test_a_tag_or_length_in_five_bytes_takes_the_fast_path() -> None:
    body = b"\x0a\x80\x80\x80\x80\x00" + b"\x8a\x80\x80\x80\x00\x00"
    assert _wire.decode(body) is not None
    assert outcome(body, native=True) == outcome(body, native=False)


def test_unknown_fields_and_invalid_text_go_to_protobuf() -> None:
    body = many_spans(2).SerializeToString()
    unknown = body + _field(9, 0, b"\x01")  # a field ExportTraceServiceRequest does not have
    assert _wire.decode(unknown) is None
    assert outcome(unknown, native=True) == outcome(unknown, native=False)
    bad_name = _field(1, 2, _field(2, 2, _field(2, 2, _field(5, 2, b"\xff\xfe"))))
    assert _wire.decode(bad_name) is None
    with pytest.raises(MalformedPayload):
        decode_protobuf(bad_name)


def test_a_large_request_decodes_alike() -> None:
    body = many_spans(5000).SerializeToString()
    assert outcome(body, native=True) == outcome(body, native=False)


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc3"],
    ids=["stray", "overlong-2", "overlong-3", "surrogate", "above-max", "cut-short"],
)
def test_invalid_text_anywhere_in_a_long_name_goes_to_protobuf(bad: bytes) -> None:
    """Text is checked eight ASCII bytes at a time: a bad sequence is found at any offset,
    and valid multi-byte text around the fast path's blocks is kept."""
    for offset in range(0, 20):
        name = b"a" * offset + bad + b"b" * (19 - offset)
        body = _field(1, 2, _field(2, 2, _field(2, 2, _field(5, 2, name))))
        assert _wire.decode(body) is None, offset
    span = many_spans(1).resource_spans[0].scope_spans[0].spans[0]
    for offset in range(0, 20):
        span.name = "a" * offset + "é€😀" + "b" * (19 - offset)
        request = ExportTraceServiceRequest()
        request.resource_spans.add().scope_spans.add().spans.append(span)
        assert _wire.decode(request.SerializeToString()) is not None
        fast = decode_protobuf(request.SerializeToString(), native=True)
        assert fast.batch.name == [span.name]


def test_spans_of_one_trace_share_their_trace_id() -> None:
    """Adjacent spans of a trace get one bytes object (and one hash) for its id; a trace
    seen again later is the same value either way."""
    request = many_spans(6)
    spans = request.resource_spans[0].scope_spans[0].spans
    for i, span in enumerate(spans):
        span.trace_id = bytes([1 + (i >= 2 and i < 4)]) * 16  # 1, 1, 2, 2, 1, 1
    fast = decode_protobuf(request.SerializeToString(), native=True)
    ids = fast.batch.trace_id
    assert ids == [b"\x01" * 16] * 2 + [b"\x02" * 16] * 2 + [b"\x01" * 16] * 2
    assert ids[0] is ids[1] and ids[2] is ids[3] and ids[4] is ids[5]


def test_fast_path_columns_are_left_out_of_the_cycle_collector() -> None:
    """They hold only str, bytes and int: never part of a cycle, never worth walking."""
    batch = decode_protobuf(many_spans(3).SerializeToString(), native=True).batch
    assert all(not gc.is_tracked(column) for column in batch.columns().values())


def test_a_configure_that_fails_part_way_keeps_the_previous_one() -> None:
    """Every entry is checked before any is taken: a bad one (a column past the end, an int
    column out of range, a key that is not text) leaves the kept attributes as they were,
    never half replaced with some columns' ranks unset."""
    request = many_spans(4)
    for span in request.resource_spans[0].scope_spans[0].spans:
        span.attributes.add(key="http.route", value=AnyValue(string_value="/r"))
        span.attributes.add(key="http.response.status_code", value=AnyValue(int_value=503))
    body = request.SerializeToString()
    before = outcome(body, native=True)
    columns = len(SEMCONV_COLUMNS)
    bad = [
        # the old way: http.route moved to a column the decoder does not fill, then a failure
        ([("http.route", columns + 2, 0), ("other", columns + 9, 0)], columns + 8, -1),
        ([("http.route", 0, 0)], columns, columns),
        ([("http.route", 0, 0), (7, 0, 0)], columns, -1),
        ([], -1, -1),
        ([], 99, -1),
    ]
    for keys, width, int_column in bad:
        with pytest.raises((ValueError, TypeError)):
            _wire.configure(keys, width, int_column)  # type: ignore[arg-type]
        assert outcome(body, native=True) == before == outcome(body, native=False)
