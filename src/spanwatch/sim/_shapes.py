"""Simulated spans in the shapes real instrumentations give them.

The simulator writes each span in one tidy shape: a client span names its callee
(``peer.service``, ``server.address``), a database span is named ``SELECT orders-db`` and
carries ``db.operation.name``. The OpenTelemetry Python instrumentations (flask, requests,
the DB-API ones; 0.66b1, as recorded in ``tests/fixtures/app``) write neither: :func:`reshape`
rewrites a span into what they would have sent, in one semantic-convention mode —

- ``old`` (``OTEL_SEMCONV_STABILITY_OPT_IN`` unset) or ``new`` (``http,database``);
- HTTP server spans: named ``METHOD route``; the concrete path (``http.target`` / ``url.path``);
  old: ``net.peer.port`` is the *client's* port; new: ``server.address`` is the Host header,
  ``host:port``; a failure's status message is ``Type: message``;
- HTTP client spans: named by the bare method (``GET``); no ``peer.service``; the callee only
  in the URL (old: ``http.url``) or also in ``server.address`` / ``server.port`` (new); a 4xx
  or 5xx answer is an error with no exception event and no status message;
- database spans: named by the statement's first word (``SELECT``), with the statement, no
  operation or table attribute; sqlite with nothing else (as recorded); other systems, as the
  DB-API instrumentations make them from a connection's host, port and database: old
  ``net.peer.name``, ``net.peer.port``, ``db.name``, ``db.user``; new ``server.address``,
  ``server.port``, ``db.namespace``.

gRPC and messaging spans are left as they are (no recording of them). The attributes are
mapped to columns by :data:`spanwatch.model.SEMCONV_COLUMNS`, as the decoder maps them.
"""

from __future__ import annotations

from dataclasses import fields, replace

from spanwatch.model import SEMCONV_COLUMNS, Span, SpanBatch, SpanKind, StatusCode

MODES = ("old", "new")
SERVICE_PORT = 8080
USER_AGENT = "python-requests/2.34.2"
DB_PORTS = {
    "postgresql": 5432,
    "mysql": 3306,
    "redis": 6379,
    "cassandra": 9042,
    "clickhouse": 9000,
    "elasticsearch": 9200,
}
SQL = {
    "SELECT": "SELECT id, body FROM {table} WHERE id = ?",
    "INSERT": "INSERT INTO {table} (id, body) VALUES (?, ?)",
    "UPDATE": "UPDATE {table} SET body = ? WHERE id = ?",
    "DELETE": "DELETE FROM {table} WHERE id = ?",
}

Attributes = dict[str, str | int]
_INT_FIELDS = {f.name for f in fields(Span) if str(f.type) == "int"}


def _number(span: Span, lo: int, hi: int) -> int:
    """A value in [lo, hi) that the span's id decides: reshaping is deterministic."""
    return lo + int.from_bytes(span.span_id[:4], "big") % (hi - lo)


def _path(template: str, span: Span) -> str:
    return template.replace("{id}", str(_number(span, 1, 100_000))) or "/"


def _server(span: Span, mode: str) -> tuple[str, Attributes]:
    route = span.http_route
    method = span.http_method
    path = _path(route, span)
    host = f"{span.service}:{SERVICE_PORT}"
    status = span.http_status_code or (500 if span.status_code == StatusCode.ERROR else 200)
    peer_port = _number(span, 32768, 61000)
    attrs: Attributes
    if mode == "old":
        attrs = {
            "http.method": method,
            "http.server_name": span.service,
            "http.scheme": "http",
            "net.host.name": host,
            "http.host": host,
            "net.host.port": SERVICE_PORT,
            "http.target": path,
            "net.peer.ip": "10.0.0.2",
            "net.peer.port": peer_port,
            "http.user_agent": USER_AGENT,
            "http.flavor": "1.1",
            "http.status_code": status,
        }
    else:
        attrs = {
            "http.request.method": method,
            "url.scheme": "http",
            "server.address": host,
            "server.port": SERVICE_PORT,
            "url.path": path,
            "client.address": "10.0.0.2",
            "client.port": peer_port,
            "user_agent.original": USER_AGENT,
            "network.protocol.version": "1.1",
            "http.response.status_code": status,
        }
        if status >= 500:
            attrs["error.type"] = str(status)
    if route:
        attrs["http.route"] = route
    return f"{method} {route}" if route else f"{method} {path}", attrs


def _http_client(span: Span, mode: str) -> tuple[str, Attributes]:
    method = span.http_method
    host = span.server_address or span.peer_service
    external = "." in host
    scheme, port = ("https", 443) if external else ("http", SERVICE_PORT)
    target = span.name.partition(" ")[2] if span.name.startswith(method + " ") else ""
    url = (
        f"{scheme}://{host}{_path(target, span)}"
        if external
        else (f"{scheme}://{host}:{port}{_path(target, span)}")
    )
    status = span.http_status_code or (503 if span.status_code == StatusCode.ERROR else 200)
    attrs: Attributes
    if mode == "old":
        attrs = {
            "http.method": method,
            "http.url": url,
            "user_agent.original": USER_AGENT,
            "http.status_code": status,
        }
    else:
        attrs = {
            "http.request.method": method,
            "url.full": url,
            "user_agent.original": USER_AGENT,
            "server.address": host,
            "network.peer.address": host,
            "server.port": port,
            "network.peer.port": port,
            "http.response.status_code": status,
            "network.protocol.version": "1.1",
        }
        if status >= 400:
            attrs["error.type"] = str(status)
    return method, attrs


def _database(span: Span, mode: str) -> tuple[str, Attributes]:
    system = span.db_system
    host = span.server_address or span.peer_service
    table = host.removesuffix("-db").replace("-", "_") or "items"
    operation = span.db_operation or span.name.partition(" ")[0]
    template = SQL.get(operation.upper())
    statement = template.format(table=table) if template else f"{operation} ?"
    name = statement.split()[0]
    attrs: Attributes
    if mode == "old":
        attrs = {"db.system": system, "db.statement": statement}
    else:
        attrs = {"db.system.name": system, "db.query.text": statement}
    if system != "sqlite" and host:
        port = DB_PORTS.get(system, 5432)
        if mode == "old":
            attrs.update(
                {"db.name": table, "db.user": "app", "net.peer.name": host, "net.peer.port": port}
            )
        else:
            attrs.update({"db.namespace": table, "server.address": host, "server.port": port})
    return name, attrs


def instrumented(span: Span, mode: str) -> tuple[str, Attributes] | None:
    """The name and attributes the real instrumentations would give ``span`` in ``mode``;
    None for a span they are not known for (gRPC, messaging)."""
    if mode not in MODES:
        raise ValueError(f"mode is old or new, not {mode!r}")
    if span.rpc_system or span.messaging_system:
        return None
    if span.kind == SpanKind.SERVER and span.http_method:
        return _server(span, mode)
    if span.kind == SpanKind.CLIENT and span.db_system:
        return _database(span, mode)
    if span.kind == SpanKind.CLIENT and span.http_method:
        return _http_client(span, mode)
    return None


def columns_of(attributes: Attributes) -> dict[str, str | int]:
    """The span columns a decoder fills from ``attributes`` (the first name listed wins)."""
    out: dict[str, str | int] = {}
    for column, names in SEMCONV_COLUMNS.items():
        value = next((attributes[n] for n in names if n in attributes), None)
        if column in _INT_FIELDS:
            out[column] = int(value) if value is not None else 0
        else:
            out[column] = "" if value is None else str(value)
    return out


def reshape(span: Span, mode: str) -> Span:
    """``span`` as the real instrumentations would have sent it in semconv ``mode``."""
    shaped = instrumented(span, mode)
    if shaped is None:
        return span
    name, attributes = shaped
    status: dict[str, str] = {}
    if span.kind == SpanKind.CLIENT and not span.db_system:
        status = {"status_message": "", "exception_type": "", "exception_message": ""}
    elif span.kind == SpanKind.SERVER and span.exception_type:
        status = {"status_message": f"{span.exception_type}: {span.exception_message}"}
    return replace(span, name=name, **columns_of(attributes), **status)  # type: ignore[arg-type]


def reshape_batch(batch: SpanBatch, mode: str) -> SpanBatch:
    return SpanBatch.from_spans([reshape(span, mode) for span in batch.rows()])
