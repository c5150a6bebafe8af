"""spanwatch.sim._shapes: simulated spans rewritten into the shapes that the real
instrumentations recorded in tests/fixtures/app give them, in both semconv modes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest

from spanwatch.cli._eval import CONDITIONS, evaluate
from spanwatch.model import SEMCONV_COLUMNS, Pattern, Span, SpanKind, StatusCode
from spanwatch.otlp import decode_request, parse_json
from spanwatch.sim import Fault, Simulator, shop
from spanwatch.sim._shapes import MODES, instrumented, reshape, reshape_batch
from tests.app.fixtures import fixture_path, raw_spans, read_lines

SCOPES = {
    "opentelemetry.instrumentation.flask": "server",
    "opentelemetry.instrumentation.requests": "http_client",
    "opentelemetry.instrumentation.sqlite3": "db",
}


def _category(span: Span) -> str:
    if span.kind == SpanKind.SERVER:
        return "server"
    return "db" if span.db_system else "http_client"


def _recorded_key_sets(mode: str) -> dict[str, set[frozenset[str]]]:
    out: dict[str, set[frozenset[str]]] = defaultdict(set)
    for span in raw_spans(read_lines(fixture_path(mode))):
        out[SCOPES[span.scope]].add(frozenset(span.attributes))
    return out


def _recorded_columns(mode: str) -> dict[str, set[frozenset[str]]]:
    out: dict[str, set[frozenset[str]]] = defaultdict(set)
    for line in read_lines(fixture_path(mode)):
        for row in decode_request(parse_json(line)).batch.rows():
            out[_category(row)].add(frozenset(c for c in SEMCONV_COLUMNS if getattr(row, c)))
    return out


def _simulated(seconds: float = 120) -> list[Span]:
    fault = Fault(Pattern.ERROR_BURST, "catalog", "GET /api/products", 30, 60, 0.5)
    sim = Simulator(seed=4, rate=10, faults=(fault,))
    return [span for batch in sim.batches(seconds) for span in batch.rows()]


def _shaped(spans: list[Span], mode: str) -> list[tuple[Span, str, dict[str, str | int]]]:
    out = []
    for span in spans:
        shaped = instrumented(span, mode)
        if shaped is not None:
            out.append((span, *shaped))
    return out


@pytest.mark.parametrize("mode", MODES)
def test_http_spans_carry_the_recorded_attribute_keys(mode: str) -> None:
    """Every reshaped HTTP server and client span has a set of attribute keys that a
    recorded span of its kind has (errors and successes alike)."""
    recorded = _recorded_key_sets(mode)
    seen: dict[str, set[frozenset[str]]] = defaultdict(set)
    for span, _, attrs in _shaped(_simulated(), mode):
        category = _category(span)
        if category != "db":
            assert frozenset(attrs) in recorded[category], (span.name, sorted(attrs))
            seen[category].add(frozenset(attrs))
    assert set(seen) == {"server", "http_client"}
    assert len(seen["server"]) >= 2 or mode == "old"  # new: error.type on the failed ones


@pytest.mark.parametrize("mode", MODES)
def test_columns_are_those_the_recordings_decode_to(mode: str) -> None:
    """Reshaped HTTP spans fill the columns that the recorded spans, decoded, fill."""
    recorded = _recorded_columns(mode)
    for span in _simulated(60):
        shaped = reshape(span, mode)
        category = _category(shaped)
        if instrumented(span, mode) is None or category == "db":
            continue
        filled = frozenset(c for c in SEMCONV_COLUMNS if getattr(shaped, c))
        assert filled in recorded[category], (shaped.name, sorted(filled))


@pytest.mark.parametrize("mode", MODES)
def test_names_as_the_instrumentations_give_them(mode: str) -> None:
    """Server spans keep ``METHOD route`` (the fault labels' operations); HTTP client
    spans are named by the bare method and name no peer.service; database spans by the
    statement's first word, with the statement and no operation attribute."""
    operations = set(shop().operations)
    for span in _simulated(60):
        shaped = reshape(span, mode)
        category = _category(shaped)
        if instrumented(span, mode) is None:
            assert shaped == span
        elif category == "server":
            assert (shaped.service, shaped.name) in operations
            assert shaped.url_path.startswith("/") and "{" not in shaped.url_path
        elif category == "http_client":
            assert shaped.name in ("GET", "POST") and shaped.peer_service == ""
            assert shaped.url_full.startswith(("http://", "https://"))
            assert (shaped.server_address != "") is (mode == "new")
        else:
            assert shaped.name in ("SELECT", "INSERT", "UPDATE", "GET")
            assert shaped.db_statement.split()[0] == shaped.name
            assert shaped.db_operation == "" and shaped.peer_service == ""


@pytest.mark.parametrize("mode", MODES)
def test_sqlite_spans_are_exactly_the_recorded_ones(mode: str) -> None:
    """A sqlite span gets the recorded keys and nothing else; a networked database also
    its host, port and database, as the DB-API instrumentations take them from the
    connection (old: net.peer.name; new: server.address)."""
    (db,) = _recorded_key_sets(mode)["db"]
    span = next(s for s in _simulated(10) if s.db_system == "postgresql")
    shaped = instrumented(replace(span, db_system="sqlite"), mode)
    assert shaped is not None and frozenset(shaped[1]) == db
    _, attrs = instrumented(span, mode) or ("", {})
    assert db < set(attrs)
    row = reshape(span, mode)
    host = row.net_peer_name if mode == "old" else row.server_address
    assert host == span.server_address and row.db_name and row.server_port == "5432"


def test_errors_as_the_instrumentations_record_them() -> None:
    """A failed HTTP client span has no exception and no status message (the answer's
    status makes it an error); a failed server span's message is ``Type: message``."""
    failed = [s for s in _simulated() if s.status_code == StatusCode.ERROR]
    clients = [reshape(s, "new") for s in failed if s.kind == SpanKind.CLIENT and s.http_method]
    servers = [reshape(s, "new") for s in failed if s.kind == SpanKind.SERVER and s.http_method]
    assert clients and servers
    for row in clients:
        assert (row.exception_type, row.status_message) == ("", "")
        assert row.http_status_code >= 500
    for row in servers:
        assert row.status_message == f"{row.exception_type}: {row.exception_message}"


def test_reshaping_is_deterministic() -> None:
    """The same span reshapes the same way; the batch keeps its spans in order."""
    sim = Simulator(seed=2, rate=10)
    batch = next(iter(sim.batches(1)))
    assert reshape_batch(batch, "old") == reshape_batch(batch, "old")
    assert [s.span_id for s in reshape_batch(batch, "new").rows()] == batch.span_id


@pytest.mark.parametrize("condition", ["instrumented_old", "instrumented_new"])
def test_eval_runs_the_instrumented_conditions(condition: str) -> None:
    """spanwatch eval takes both conditions (a short run: that it scores, not how well)."""
    assert condition in CONDITIONS
    report = evaluate([0], ["error_burst"], healthy_seconds=60, rate=2, condition=condition)
    assert report.condition == condition and report.patterns["error_burst"].runs == 1
    assert report.sent_spans > 0
