"""What real instrumentation sends: client spans named by their verb alone, database spans
with only a statement, probes, and incidents whose evidence follows the fault."""

from __future__ import annotations

import random
from typing import Any

import pytest

from spanwatch.detect import Detector, Settings
from spanwatch.detect._keys import CallNames, host_port, statement_template, url_host
from spanwatch.model import SpanBatch, SpanKind
from spanwatch.sim import DEFAULT_START_NS, NS

MS = 1_000_000


# -- targets and statements -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "port", "peer", "url", "net_peer", "target"),
    [
        ("Inventory.internal.", "5002", "inv", "http://x/y", "z", "inventory.internal:5002"),
        ("127.0.0.1:5001", "", "", "", "", "127.0.0.1:5001"),  # the port inside the address
        ("127.0.0.1:5001", "5001", "", "", "", "127.0.0.1:5001"),  # once
        ("::1", "5001", "", "", "", "[::1]:5001"),
        ("[::1]:5001", "", "", "", "", "[::1]:5001"),
        ("api.example.com", "443", "", "", "", "api.example.com"),  # a default port goes
        ("", "", "payments", "http://10.0.0.9:8080/charge", "", "payments"),
        ("", "", "", "http://user:pw@Orders:5001/orders/3?x=1#f", "", "orders:5001"),
        ("", "", "", "https://api.example.com/v1", "", "api.example.com"),
        ("", "", "", "/relative/only", "cache", "cache"),
        ("", "6379", "", "", "cache", "cache:6379"),
        ("", "", "", "", "", ""),
    ],
)
def test_a_client_span_s_target_is_what_it_has(
    address: str, port: str, peer: str, url: str, net_peer: str, target: str
) -> None:
    """server.address/server.port, else peer.service, else the URL's host, else
    net.peer.name; host:port normalised."""
    assert CallNames().target(address, port, peer, url, net_peer) == target


def test_url_host_and_host_port_refuse_what_is_not_there() -> None:
    assert url_host("not a url") == ""
    assert url_host("http://") == ""
    assert host_port("", "80") == ""


@pytest.mark.parametrize(
    ("statement", "operation"),
    [
        ("SELECT qty FROM stock WHERE item_id = ?", "SELECT stock"),
        ("select o.id from orders o join items i on i.id = o.item_id", "SELECT orders items"),
        ("INSERT INTO orders (item_id, qty) VALUES (17, 'x')", "INSERT orders"),
        ("UPDATE stock SET qty = qty - 1 WHERE item_id = 3", "UPDATE stock"),
        ("DELETE FROM sessions WHERE ts < 1700000000", "DELETE sessions"),
        ("/*traceparent='00-ab-cd-01'*/ SELECT a FROM t WHERE b IN (1, 2, 3)", "SELECT t"),
        ("SELECT 1", ""),  # no object: the span keeps its name
        ("BEGIN", ""),
    ],
)
def test_database_operations_come_from_the_statement(statement: str, operation: str) -> None:
    assert CallNames().database_operation("", "", "", statement) == operation


def test_database_attributes_win_over_the_statement() -> None:
    calls = CallNames()
    assert calls.database_operation("SELECT", "stock", "", "SELECT * FROM other") == "SELECT stock"
    assert calls.database_operation("", "", "SELECT stock items", "") == "SELECT stock items"
    assert calls.database_operation("select", "", "", "SELECT * FROM t") == "SELECT t"


def test_statements_are_parsed_once_per_template_within_a_budget() -> None:
    """Values and comments do not make new templates; past the batch's budget a statement is
    keyed by its verb, and parsed in a later batch."""
    assert statement_template("SELECT a FROM t WHERE id = 17 AND s = 'it''s'") == (
        statement_template("SELECT a  FROM t WHERE id = 18 AND s = 'x' -- retry")
    )
    calls = CallNames(parses_per_batch=2)
    calls.new_batch()
    for n in range(50):
        assert calls.statement(f"SELECT a FROM t WHERE id = {n}") == ("SELECT", ("t",))
    assert calls.statement("SELECT b FROM u") == ("SELECT", ("u",))
    assert calls.statement("SELECT c FROM v") == ("SELECT", ())  # over budget
    calls.new_batch()
    assert calls.statement("SELECT c FROM v") == ("SELECT", ("v",))
    assert len(calls._templates) == 3


# -- a small app, span by span ----------------------------------------------------------------


class App:
    """frontend → orders → SQLite, shaped as the Python auto-instrumentations shape them:
    the HTTP client span is ``GET`` with only ``http.url``, the database span ``SELECT`` with
    only ``db.system``, ``db.name`` and ``db.statement``."""

    def __init__(self, seed: int = 1, rate: float = 20.0) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.t_ns = DEFAULT_START_NS
        self.error_rate = 0.0
        self.sql_ms = 0.0  # added to the orders query
        self.probes = True

    def _id(self, n: int) -> bytes:
        return self.rng.getrandbits(8 * n).to_bytes(n, "big")

    def batch(self) -> SpanBatch:
        """One second of traffic."""
        columns: dict[str, list[Any]] = {}

        def span(**values: Any) -> None:
            for name in SpanBatch.__dataclass_fields__:
                columns.setdefault(name, []).append(values.get(name, _EMPTY[name]))

        for _ in range(int(self.rate)):
            start = self.t_ns + self.rng.randrange(NS // 2)
            trace = self._id(16)
            root, call, server, query, other = (self._id(8) for _ in range(5))
            order = self.rng.randrange(1, 500)
            sql = (3 + self.rng.random() + self.sql_ms) * MS
            stock = (2 + self.rng.random()) * MS
            failed = self.rng.random() < self.error_rate
            server_ns = int(sql + stock + 2 * MS)
            base = {"trace_id": trace, "scope": "", "source": ""}
            span(
                **base,
                span_id=query,
                parent_span_id=server,
                service="orders",
                name="SELECT",
                kind=int(SpanKind.CLIENT),
                start_ns=start + 2 * MS,
                end_ns=start + 2 * MS + int(sql),
                db_system="sqlite",
                db_name="/var/lib/orders/orders.db",
                db_statement=f"SELECT id, qty FROM orders WHERE id = {order}",
            )
            span(
                **base,
                span_id=other,
                parent_span_id=server,
                service="orders",
                name="SELECT",
                kind=int(SpanKind.CLIENT),
                start_ns=start + 2 * MS + int(sql),
                end_ns=start + 2 * MS + int(sql + stock),
                db_system="sqlite",
                db_name="/var/lib/orders/orders.db",
                db_statement="SELECT qty FROM stock WHERE item_id = ?",
            )
            span(
                **base,
                span_id=server,
                parent_span_id=call,
                service="orders",
                name="/orders/<int:order_id>",
                kind=int(SpanKind.SERVER),
                start_ns=start + MS,
                end_ns=start + MS + server_ns,
                http_route="/orders/<int:order_id>",
                http_method="GET",
                http_status_code=500 if failed else 200,
                status_code=2 if failed else 0,
                exception_type="KeyError" if failed else "",
                url_path=f"/orders/{order}",
            )
            span(
                **base,
                span_id=call,
                parent_span_id=root,
                service="frontend",
                name="GET",
                kind=int(SpanKind.CLIENT),
                start_ns=start + MS // 2,
                end_ns=start + int(1.5 * MS) + server_ns,
                http_method="GET",
                http_status_code=500 if failed else 200,
                status_code=2 if failed else 0,
                url_full=f"http://127.0.0.1:5001/orders/{order}",
            )
            span(
                **base,
                span_id=root,
                parent_span_id=b"",
                service="frontend",
                name="/order/<int:order_id>",
                kind=int(SpanKind.SERVER),
                start_ns=start,
                end_ns=start + 2 * MS + server_ns,
                http_route="/order/<int:order_id>",
                http_method="GET",
                http_status_code=500 if failed else 200,
                status_code=2 if failed else 0,
                url_path=f"/order/{order}",
            )
        if self.probes:  # a load balancer's health checks, and a scanner's unmatched paths
            for service, path, status, route in (
                ("frontend", "/healthz", 200, "/healthz"),
                ("orders", "/healthz", 200, ""),  # answered by a middleware: no route
                ("frontend", f"/wp-login.php?{self.rng.randrange(9)}", 404, ""),
            ):
                start = self.t_ns + self.rng.randrange(NS // 2)
                span(
                    trace_id=self._id(16),
                    span_id=self._id(8),
                    parent_span_id=b"",
                    service=service,
                    name=route or "GET",
                    kind=int(SpanKind.SERVER),
                    start_ns=start,
                    end_ns=start + MS * (50 if self.sql_ms else 1),
                    http_route=route,
                    http_method="GET",
                    http_status_code=status,
                    url_path=path,
                )
        self.t_ns += NS
        return SpanBatch(**columns)


_EMPTY = {"bytes": b"", "int": 0, "str": ""}
_EMPTY = {
    name: _EMPTY[str(f.type).replace("list[", "").rstrip("]")]
    for name, f in SpanBatch.__dataclass_fields__.items()
}


def _run(app: App, seconds: int, detector: Detector) -> list[dict[str, Any]]:
    events = []
    for _ in range(seconds):
        events += [e for e in detector.process(app.batch()) if e.type.startswith("incident")]
    return [{"type": e.type, **e.fields["incident"]} for e in events]


def test_calls_are_keyed_by_what_they_call_and_probes_by_nothing() -> None:
    """``GET`` becomes ``GET 127.0.0.1:5001``, each SQLite query its verb and table; the
    health checks and the unmatched 404s make no key and are counted."""
    detector = Detector()
    _run(App(), 30, detector)
    keys = {(k.service, k.operation, SpanKind(k.kind).name) for k in detector._keys._keys}
    assert keys == {
        ("frontend", "GET /order/<int:order_id>", "SERVER"),  # the method from http.method
        ("frontend", "GET 127.0.0.1:5001", "CLIENT"),
        ("orders", "GET /orders/<int:order_id>", "SERVER"),
        ("orders", "SELECT orders", "CLIENT"),
        ("orders", "SELECT stock", "CLIENT"),
    }
    assert detector.probe_spans == 3 * 30


def test_probe_paths_are_configurable() -> None:
    detector = Detector(Settings(probe_paths=()))
    _run(App(), 5, detector)
    operations = {k.operation for k in detector._keys._keys}
    assert "GET /healthz" in operations  # no longer a probe; the unmatched 404 still is
    assert detector.probe_spans == 5


def test_a_slow_sqlite_query_is_a_slow_dependency_named_by_its_database() -> None:
    """A database with no address is a dependency named by its system and file, and its
    caller's: a query 200 ms slower is slow_dependency on ``sqlite orders.db (orders)``,
    not latency on the caller."""
    app = App()
    detector = Detector()
    _run(app, 400, detector)
    app.sql_ms = 200.0
    incidents = _run(app, 120, detector)
    opened = [i for i in incidents if i["type"] == "incident.opened"]
    assert opened, "the slow query was not found"
    first = opened[0]
    assert (first["pattern"], first["root_cause"]["service"]) == (
        "slow_dependency",
        "sqlite orders.db (orders)",
    ), first
    assert first["root_cause"]["operation"] == "SELECT orders"
    assert len(opened) == 1, [(i["pattern"], i["root_cause"]) for i in opened]


def test_the_evidence_follows_the_fault() -> None:
    """An incident opened while a fifth of the requests fail shows, as the fault grows to
    three fifths, the share affected now, its worst value and a series, and its summary
    says so; its updates are bounded (one every three windows at most)."""
    app = App()
    detector = Detector()
    _run(app, 400, detector)
    app.error_rate = 0.2
    events = _run(app, 60, detector)
    app.error_rate = 0.6
    events += _run(app, 120, detector)
    app.error_rate = 0.0
    events += _run(app, 120, detector)
    mine = [e for e in events if e["root_cause"]["service"] == "orders"]
    assert len({e["id"] for e in mine}) == 1, "one fault, one incident"
    first, last = mine[0], mine[-1]
    assert first["type"] == "incident.opened"
    assert first["evidence"]["share"] < 0.35
    assert "KeyError" in first["summary"]
    updates = [e for e in mine if e["type"] == "incident.updated"]
    grown = [u for u in updates if 0.45 <= u["evidence"]["share"] <= 0.75]
    assert grown, [u["evidence"] for u in updates]
    assert grown[0]["evidence"]["observed"] > 2 * first["evidence"]["share"] * 200 * 0.8
    assert grown[0]["summary"] != first["summary"]  # the count so far, not the first window's
    assert last["type"] == "incident.resolved"
    assert last["evidence"]["share"] < 0.1
    assert last["evidence"]["peak"] >= max(u["evidence"]["observed"] for u in updates)
    series = last["series"]
    assert 10 <= len(series) <= 30
    assert [p["at"] for p in series] == sorted(p["at"] for p in series)
    assert max(p["observed"] for p in series) >= 100  # 60% of 200 requests a window
    assert len(updates) <= (60 + 120 + 120) / 10 / 3 + 2, len(updates)
