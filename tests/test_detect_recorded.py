"""Keys, targets, dependencies and probes made from real spans: what the OpenTelemetry Python
instrumentations (Flask, requests, sqlite3) sent from tests/app, in both semantic-convention
modes (tests/fixtures/app)."""

from __future__ import annotations

import pytest

from spanwatch.detect import Detector
from spanwatch.detect._traces import spans as _spans
from spanwatch.model import SpanKind
from spanwatch.otlp import decode_request, parse_json
from tests.app.fixtures import RawSpan, fixture_path, raw_spans, read_lines

MODES = ("old", "new")


def _detector(mode: str) -> Detector:
    detector = Detector()
    for line in read_lines(fixture_path(mode)):
        result = decode_request(parse_json(line))
        assert result.refused == 0, result.reason
        detector.process(result.batch)
    return detector


def _port(spans: list[RawSpan], service: str) -> str:
    """The port the service's Flask server listened on, from its server spans."""
    for span in spans:
        if span.service == service and span.kind == SpanKind.SERVER:
            attributes = span.attributes
            port = attributes.get("server.port") or attributes.get("net.host.port")
            if port:
                return str(port)
    raise AssertionError(f"no server span of {service}")


def _keys(detector: Detector) -> set[tuple[str, str, str]]:
    return {(k.service, k.operation, SpanKind(k.kind).name) for k in detector._keys._keys}


def _expected(mode: str) -> set[tuple[str, str, str]]:
    spans = raw_spans(read_lines(fixture_path(mode)))
    orders = f"127.0.0.1:{_port(spans, 'orders')}"
    inventory = f"127.0.0.1:{_port(spans, 'inventory')}"
    return {
        ("frontend", "GET /order/<int:order_id>", "SERVER"),
        ("frontend", "GET /orders", "SERVER"),
        ("frontend", "POST /order", "SERVER"),
        ("frontend", f"GET {orders}", "CLIENT"),
        ("frontend", f"POST {orders}", "CLIENT"),
        ("orders", "GET /orders", "SERVER"),
        ("orders", "GET /orders/<int:order_id>", "SERVER"),
        ("orders", "POST /orders", "SERVER"),
        ("orders", f"GET {inventory}", "CLIENT"),
        ("orders", f"POST {inventory}", "CLIENT"),
        ("orders", "SELECT orders", "CLIENT"),
        ("orders", "INSERT orders", "CLIENT"),
        ("inventory", "GET /stock/<int:item_id>", "SERVER"),
        ("inventory", "POST /reserve", "SERVER"),
        ("inventory", "SELECT stock", "CLIENT"),
        ("inventory", "UPDATE stock", "CLIENT"),
    }


@pytest.mark.parametrize("mode", MODES)
def test_real_spans_make_one_key_per_route_target_and_query(mode: str) -> None:
    """``GET`` client spans are keyed by the service they call, ``SELECT`` spans by their
    table; health checks and unmatched routes make no key; no statement is a key."""
    assert _keys(_detector(mode)) == _expected(mode)


def test_both_conventions_make_the_same_keys() -> None:
    """Old (http.url, db.statement) and new (url.full, server.address/port, db.query.text)
    attribute names give the same keys, once the recordings' ports are set aside."""
    made = []
    for mode in MODES:
        spans = raw_spans(read_lines(fixture_path(mode)))
        ports = {_port(spans, "orders"): "ORDERS", _port(spans, "inventory"): "INVENTORY"}
        keys = set()
        for service, operation, kind in _keys(_detector(mode)):
            for port, name in ports.items():
                operation = operation.replace(f"127.0.0.1:{port}", name)
            keys.add((service, operation, kind))
        made.append(keys)
    assert made[0] == made[1]


@pytest.mark.parametrize("mode", MODES)
def test_real_client_spans_name_their_dependencies(mode: str) -> None:
    """SQLite calls (no address, no database name) are each service's own ``sqlite main``,
    with the verb and table as the operation; HTTP calls name the callee's host:port."""
    detector = _detector(mode)
    spans = raw_spans(read_lines(fixture_path(mode)))
    orders = f"127.0.0.1:{_port(spans, 'orders')}"
    inventory = f"127.0.0.1:{_port(spans, 'inventory')}"
    dependencies = {
        (span.key.service, span.dependency)
        for trace in detector._traces.values()
        for span in _spans(trace)
        if span.dependency[0]
    }
    assert dependencies == {
        ("frontend", (orders, "GET")),
        ("frontend", (orders, "POST")),
        ("orders", (inventory, "GET")),
        ("orders", (inventory, "POST")),
        ("orders", ("sqlite main (orders)", "SELECT orders")),
        ("orders", ("sqlite main (orders)", "INSERT orders")),
        ("inventory", ("sqlite main (inventory)", "SELECT stock")),
        ("inventory", ("sqlite main (inventory)", "UPDATE stock")),
    }


@pytest.mark.parametrize("mode", MODES)
def test_real_probes_are_counted_and_left_out(mode: str) -> None:
    """Every ``/healthz`` server span and every request no route matched (``GET /`` and
    ``GET /favicon.ico``: 404 without ``http.route``) is a probe; an order that does not exist
    (404 on a matched route) is traffic."""
    spans = raw_spans(read_lines(fixture_path(mode)))
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    probes = [
        s
        for s in servers
        if s.attributes.get("http.route") == "/healthz" or "http.route" not in s.attributes
    ]
    assert {s.name for s in probes} >= {"GET /healthz", "GET /", "GET /favicon.ico"}
    assert any(s.attributes.get("http.route") and _status(s) == 404 for s in servers), (
        "the recording has a 404 on a matched route"
    )
    assert _detector(mode).probe_spans == len(probes)


def _status(span: RawSpan) -> int:
    attributes = span.attributes
    return int(attributes.get("http.response.status_code") or attributes.get("http.status_code"))
