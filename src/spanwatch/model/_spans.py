"""The span batch: spans decoded from OTLP, stored column by column.

Columns keep the detector's loops over one field tight and let a receiver hand a whole
request over as one object. Absent strings are ``""`` and absent integers ``0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any


class SpanKind(IntEnum):
    """OTLP ``Span.SpanKind`` values."""

    UNSPECIFIED = 0
    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


class StatusCode(IntEnum):
    """OTLP ``Status.StatusCode`` values."""

    UNSET = 0
    OK = 1
    ERROR = 2


# The semantic-convention attributes that the detector reads, by column name. Older names that
# instrumentations still send map to the same column; the first one listed wins.
SEMCONV_COLUMNS: dict[str, tuple[str, ...]] = {
    "http_route": ("http.route",),
    "http_method": ("http.request.method", "http.method"),
    "http_status_code": ("http.response.status_code", "http.status_code"),
    "rpc_system": ("rpc.system",),
    "rpc_service": ("rpc.service",),
    "rpc_method": ("rpc.method",),
    "db_system": ("db.system.name", "db.system"),
    "db_operation": ("db.operation.name", "db.operation"),
    "messaging_system": ("messaging.system",),
    "server_address": ("server.address",),
    "peer_service": ("peer.service",),
    # what a client span calls, when server.address and peer.service are not there
    "server_port": ("server.port", "net.peer.port"),
    "url_full": ("url.full", "http.url"),
    "net_peer_name": ("net.peer.name",),
    # a server span's path: probes (health checks, unmatched routes) are told by it
    "url_path": ("url.path", "http.target"),
    # database calls: their object, so that two queries of a service are two operations
    "db_name": ("db.namespace", "db.name"),
    "db_collection": (
        "db.collection.name",
        "db.sql.table",
        "db.mongodb.collection",
        "db.cassandra.table",
    ),
    "db_summary": ("db.query.summary",),
    "db_statement": ("db.query.text", "db.statement"),
}


@dataclass(frozen=True, slots=True)
class Span:
    """One row of a :class:`SpanBatch`, for tests, debugging and per-span rules."""

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    service: str
    service_version: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    exception_type: str
    exception_message: str
    http_route: str
    http_method: str
    http_status_code: int
    rpc_system: str
    rpc_service: str
    rpc_method: str
    db_system: str
    db_operation: str
    messaging_system: str
    server_address: str
    peer_service: str
    # resource identity beyond the service name (see make_scope) and the source of the span's
    # clock (make_source); "" when unknown
    scope: str = ""
    source: str = ""
    server_port: str = ""
    url_full: str = ""
    net_peer_name: str = ""
    url_path: str = ""
    db_name: str = ""
    db_collection: str = ""
    db_summary: str = ""
    db_statement: str = ""

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(slots=True)
class SpanBatch:
    """Spans of one export request, one list per field, all of equal length."""

    trace_id: list[bytes] = field(default_factory=list)
    span_id: list[bytes] = field(default_factory=list)
    parent_span_id: list[bytes] = field(default_factory=list)
    service: list[str] = field(default_factory=list)
    service_version: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    start_ns: list[int] = field(default_factory=list)
    end_ns: list[int] = field(default_factory=list)
    status_code: list[int] = field(default_factory=list)
    status_message: list[str] = field(default_factory=list)
    exception_type: list[str] = field(default_factory=list)
    exception_message: list[str] = field(default_factory=list)
    http_route: list[str] = field(default_factory=list)
    http_method: list[str] = field(default_factory=list)
    http_status_code: list[int] = field(default_factory=list)
    rpc_system: list[str] = field(default_factory=list)
    rpc_service: list[str] = field(default_factory=list)
    rpc_method: list[str] = field(default_factory=list)
    db_system: list[str] = field(default_factory=list)
    db_operation: list[str] = field(default_factory=list)
    messaging_system: list[str] = field(default_factory=list)
    server_address: list[str] = field(default_factory=list)
    peer_service: list[str] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    server_port: list[str] = field(default_factory=list)
    url_full: list[str] = field(default_factory=list)
    net_peer_name: list[str] = field(default_factory=list)
    url_path: list[str] = field(default_factory=list)
    db_name: list[str] = field(default_factory=list)
    db_collection: list[str] = field(default_factory=list)
    db_summary: list[str] = field(default_factory=list)
    db_statement: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.span_id)

    def row(self, i: int) -> Span:
        return Span(*(getattr(self, name)[i] for name in _FIELDS))

    def rows(self) -> list[Span]:
        columns = [getattr(self, name) for name in _FIELDS]
        return [Span(*values) for values in zip(*columns, strict=True)]

    def append(self, span: Span) -> None:
        for name in _FIELDS:
            getattr(self, name).append(getattr(span, name))

    @classmethod
    def filled(cls, count: int, **columns: list[Any]) -> SpanBatch:
        """A batch of ``count`` spans: the given columns, every other one empty (``""``, 0)."""
        unknown = set(columns) - set(_FIELDS)
        if unknown:
            raise TypeError(f"no such columns: {', '.join(sorted(unknown))}")
        for name, values in columns.items():
            if len(values) != count:
                raise ValueError(f"column {name} has {len(values)} values, not {count}")
        return cls(
            **{
                name: columns[name] if name in columns else [_EMPTY[name]] * count
                for name in _FIELDS
            }
        )

    @classmethod
    def from_spans(cls, spans: list[Span]) -> SpanBatch:
        batch = cls()
        for span in spans:
            batch.append(span)
        return batch

    def max_end_ns(self) -> int:
        """The latest span end in the batch (0 when empty): what event time has reached."""
        return max(self.end_ns, default=0)

    def columns(self) -> dict[str, list[Any]]:
        return {name: getattr(self, name) for name in _FIELDS}


# Resource identity. A baseline belongs to a service *within* its scope: the values of these
# resource attributes (configurable: detector.identity), so staging and prod of one service,
# or two teams' "api" services, never share one. Older attribute names map to the current one.
IDENTITY_ATTRIBUTES: tuple[str, ...] = ("service.namespace", "deployment.environment.name")
RESOURCE_ALIASES: dict[str, str] = {"deployment.environment": "deployment.environment.name"}
# The attributes that tell one emitter of spans (one clock) from another, first present wins.
INSTANCE_ATTRIBUTES: tuple[str, ...] = ("service.instance.id", "host.name")
SCOPE_SEPARATOR = "\x1f"


def make_scope(values: list[str] | tuple[str, ...]) -> str:
    """The scope column: the identity attributes' values in order, "" when none is set."""
    return SCOPE_SEPARATOR.join(values) if any(values) else ""


def split_scope(scope: str, attributes: tuple[str, ...] = IDENTITY_ATTRIBUTES) -> dict[str, str]:
    """``make_scope``'s inverse: the identity attributes that are set, by name."""
    if not scope:
        return {}
    values = scope.split(SCOPE_SEPARATOR)
    return {name: value for name, value in zip(attributes, values, strict=False) if value}


def make_source(service: str, scope: str, instance: str) -> str:
    """The source column: one emitter of spans, whose clock the detector follows on its own
    (service, scope and ``service.instance.id``, else ``host.name``)."""
    return f"{service}{SCOPE_SEPARATOR}{scope}{SCOPE_SEPARATOR}{instance}"


def source_parts(source: str) -> tuple[str, str, str]:
    """(service, scope, instance) of a source."""
    service, _, rest = source.partition(SCOPE_SEPARATOR)
    scope, _, instance = rest.rpartition(SCOPE_SEPARATOR)
    return service, scope, instance


# Span and SpanBatch list the same fields in the same order.
_FIELDS = tuple(f.name for f in fields(Span))
assert tuple(f.name for f in fields(SpanBatch)) == _FIELDS
# The empty value of each column, from Span's annotations ("bytes", "int" or "str").
_EMPTY: dict[str, Any] = {
    f.name: {"bytes": b"", "int": 0, "str": ""}[str(f.type)] for f in fields(Span)
}
