"""The app in tests/app and the spans recorded from it (tests/fixtures/app): what the real
OpenTelemetry instrumentations (Flask, requests, sqlite3 0.66b1) send in each semconv mode.

test_live_shapes_match_fixtures runs the app again: when it fails, the installed
instrumentations make spans of another shape than the recorded ones, and the fixtures (and
what the detector assumes of them) need a look; re-record with ``python -m tests.app.record``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from spanwatch.model import Span, SpanKind, StatusCode
from spanwatch.otlp import decode_request, parse_json
from tests.app import SCRIPT, Cluster, run_script
from tests.app.fixtures import RawSpan, fixture_path, raw_spans, read_lines, shapes

SERVICES = {"frontend", "orders", "inventory"}
MODES = ("old", "new")
FLASK = "opentelemetry.instrumentation.flask"
REQUESTS = "opentelemetry.instrumentation.requests"
SQLITE = "opentelemetry.instrumentation.sqlite3"
# the attributes each kind of span carries in every span of it, by mode
SERVER_KEYS = {
    "old": {"http.method", "http.status_code", "http.target", "net.host.port", "http.scheme"},
    "new": {"http.request.method", "http.response.status_code", "url.path", "server.address"},
}
HTTP_CLIENT_KEYS = {
    "old": {"http.method", "http.status_code", "http.url"},
    "new": {
        "http.request.method",
        "http.response.status_code",
        "url.full",
        "server.address",
        "server.port",
    },
}
DB_KEYS = {"old": {"db.system", "db.statement"}, "new": {"db.system.name", "db.query.text"}}


def _decoded(mode: str) -> list[Span]:
    rows: list[Span] = []
    for line in read_lines(fixture_path(mode)):
        result = decode_request(parse_json(line))
        assert result.refused == 0, result.reason
        rows.extend(result.batch.rows())
    return rows


def _raw(mode: str) -> list[RawSpan]:
    return raw_spans(read_lines(fixture_path(mode)))


@pytest.mark.parametrize("mode", MODES)
def test_fixture_decodes_without_refusals(mode: str) -> None:
    """Every recorded request decodes with spanwatch's OTLP/JSON decoder, no span refused."""
    path = fixture_path(mode)
    assert path.stat().st_size < 300_000
    rows = _decoded(mode)
    assert len(rows) == len(_raw(mode)) > 100
    assert {row.service for row in rows} == SERVICES


@pytest.mark.parametrize("mode", MODES)
def test_fixture_has_every_kind_of_span(mode: str) -> None:
    """Server spans of all three services, HTTP client spans of frontend and orders, sqlite
    client spans of orders and inventory."""
    spans = _raw(mode)
    by_scope: dict[tuple[str, int], set[str]] = {}
    for span in spans:
        by_scope.setdefault((span.scope, span.kind), set()).add(span.service)
    assert by_scope == {
        (FLASK, SpanKind.SERVER): SERVICES,
        (REQUESTS, SpanKind.CLIENT): {"frontend", "orders"},
        (SQLITE, SpanKind.CLIENT): {"orders", "inventory"},
    }


@pytest.mark.parametrize("mode", MODES)
def test_fixture_attributes(mode: str) -> None:
    """Each kind of span carries its mode's attributes, and none of the other mode's."""
    other = "new" if mode == "old" else "old"
    for span in _raw(mode):
        keys = set(span.attributes)
        expected = {FLASK: SERVER_KEYS, REQUESTS: HTTP_CLIENT_KEYS, SQLITE: DB_KEYS}[span.scope]
        assert expected[mode] <= keys, (span.name, keys)
        assert not (expected[other] - expected[mode]) & keys, (span.name, keys)


@pytest.mark.parametrize("mode", MODES)
def test_fixture_names(mode: str) -> None:
    """Server spans are named by method and route (by method and path where no route
    matched, with no http.route); client spans by the bare method; database spans by the
    statement's first word, with no database name or server address."""
    spans = _raw(mode)
    names = {(s.service, s.kind, s.name) for s in spans}
    assert ("frontend", SpanKind.SERVER, "GET /order/<int:order_id>") in names
    assert ("orders", SpanKind.SERVER, "GET /orders/<int:order_id>") in names
    assert ("inventory", SpanKind.SERVER, "POST /reserve") in names
    unmatched = [s for s in spans if s.name in ("GET /", "GET /favicon.ico")]
    assert unmatched and all("http.route" not in s.attributes for s in unmatched)
    assert {
        s.attributes["http.status_code" if mode == "old" else "http.response.status_code"]
        for s in unmatched
    } == {404}
    clients = {s.name for s in spans if s.scope == REQUESTS}
    assert clients == {"GET", "POST"}
    db = [s for s in spans if s.scope == SQLITE]
    assert {s.name for s in db} == {"SELECT", "INSERT", "UPDATE"}
    for s in db:
        assert not {"db.name", "db.namespace", "server.address", "net.peer.name"} & set(
            s.attributes
        )


@pytest.mark.parametrize("mode", MODES)
def test_fixture_columns(mode: str) -> None:
    """What spanwatch's decoder makes of them: the client's target in url_full, the
    statement in db_statement, the route and path of server spans."""
    rows = _decoded(mode)
    clients = [r for r in rows if r.kind == SpanKind.CLIENT and not r.db_system]
    assert clients and all(r.url_full.startswith("http://127.0.0.1:") for r in clients)
    assert all(r.peer_service == "" for r in clients)
    if mode == "new":
        assert all(r.server_address == "127.0.0.1" and r.server_port for r in clients)
    else:
        assert all(r.server_address == "" and r.server_port == "" for r in clients)
    db = [r for r in rows if r.db_system]
    assert db and all(r.db_system == "sqlite" and r.db_statement for r in db)
    assert all(r.db_name == "" and r.db_operation == "" for r in db)
    servers = [r for r in rows if r.kind == SpanKind.SERVER]
    assert all(r.url_path.startswith("/") for r in servers)
    routed = [r for r in servers if r.http_route]
    assert len(routed) == len(servers) - sum(r.url_path in ("/", "/favicon.ico") for r in servers)


@pytest.mark.parametrize("mode", MODES)
def test_fixture_shows_the_faults(mode: str) -> None:
    """The keyerror fault: inventory's server spans fail with a KeyError event, and the
    callers' spans fail after them; slow_sql: inventory's stock reads take over 100 ms."""
    rows = _decoded(mode)
    errors = Counter(
        (r.service, r.kind, r.exception_type) for r in rows if r.status_code == StatusCode.ERROR
    )
    assert errors[("inventory", SpanKind.SERVER, "KeyError")] >= 3
    assert errors[("orders", SpanKind.SERVER, "requests.exceptions.HTTPError")] >= 3
    assert errors[("frontend", SpanKind.SERVER, "requests.exceptions.HTTPError")] >= 3
    assert errors[("orders", SpanKind.CLIENT, "")] >= 3
    slow = [r for r in rows if r.db_system and r.duration_ns > 100_000_000]
    assert {r.service for r in slow} == {"inventory"}
    assert {r.db_statement.split(" FROM ")[0] for r in slow} == {"SELECT quantity, warehouse"}


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", MODES)
def test_live_shapes_match_fixtures(mode: str, tmp_path: Path) -> None:
    """LIVE: the app run now, under the installed instrumentations, makes spans of exactly
    the recorded shapes (service, scope, kind, name, status, event names, attribute keys)."""
    files = {name: tmp_path / f"{name}.jsonl" for name in SERVICES}
    with Cluster({n: f"file:{p}" for n, p in files.items()}, mode, workdir=tmp_path) as cluster:
        run_script(cluster, SCRIPT)
    live = shapes(raw_spans(line for p in files.values() for line in read_lines(p)))
    recorded = shapes(_raw(mode))
    assert live - recorded == set(), "shapes the fixture does not have"
    assert recorded - live == set(), "shapes the app no longer makes"
