"""What client spans call: the operation that keys a call named by its verb alone, and the
uninstrumented system (database, cache, queue, remote host) each call reaches.

Both run once per run of a batch's spans between two window closes, column by column: calls
alike in every column that matters are described once (a batch holds a few kinds of call).
"""

from __future__ import annotations

from itertools import compress
from typing import Any, NamedTuple

from spanwatch.model import SpanBatch, SpanKind

from ._filing import take
from ._keys import CallNames, Key, KeyTable, is_bare

CLIENT_KINDS = frozenset((int(SpanKind.CLIENT), int(SpanKind.PRODUCER)))
NO_DEPENDENCY = ("", "")


class Calls(NamedTuple):
    """The client spans of some rows: their indexes into the rows, the operation that keys
    those named by their verb alone ("" for the rest), and the uninstrumented system each
    calls (NO_DEPENDENCY for none)."""

    rows: list[int]
    operations: list[str]
    dependencies: list[tuple[str, str] | None]  # None: told by the key (dependencies())


NO_CALLS = Calls([], [], [])


def call_columns(b: SpanBatch) -> tuple[list[Any], ...]:
    """The columns that tell one kind of client call from another (not the URL, which holds
    ids: read only for the calls that have nothing else)."""
    return (
        b.service,
        b.name,
        b.kind,
        b.http_method,
        b.db_system,
        b.server_address,
        b.server_port,
        b.peer_service,
        b.db_operation,
        b.db_collection,
        b.db_summary,
        b.db_statement,
        b.db_name,
        b.messaging_system,
        b.rpc_system,
        b.net_peer_name,
    )


# a call that only its URL can tell, described span by span (an operation no call has)
_BY_URL = ("\x00", NO_DEPENDENCY)


def bare_call(name: str, method: str, target: str) -> str:
    """The operation of a call named by its verb alone: verb and target ("" for the rest)."""
    if not target or not is_bare(name):
        return ""
    return f"{method or name.rpartition(' ')[2]} {target}"


class CallDescriber:
    """Client spans' operations and dependencies, through the detector's bounded caches of
    names (``names``) and keys (``keys``, for an operation a span's name gives)."""

    def __init__(self, names: CallNames, keys: KeyTable) -> None:
        self.names = names
        self.keys = keys

    def client_calls(self, b: SpanBatch, rows: list[int], kinds: list[int]) -> Calls:
        """The client spans among ``rows`` (their indexes into it), the operation of those
        whose name is their verb alone (``GET`` to ``GET inventory:5002``, a database's
        ``SELECT`` to ``SELECT stock``; "" for the rest, keyed by their name), and for those
        the system each calls (for the rest, ``dependencies`` tells once their keys are
        known).

        Only calls known by their URL alone are read one by one."""
        clients = list(compress(range(len(rows)), map(CLIENT_KINDS.__contains__, kinds)))
        if not clients:
            return NO_CALLS
        client_rows = take(rows, clients)
        names = take(b.name, client_rows)
        bare = {name: is_bare(name) for name in dict.fromkeys(names)}
        operations = [""] * len(clients)
        dependencies: list[tuple[str, str] | None] = [None] * len(clients)
        if not any(bare.values()):
            return Calls(clients, operations, dependencies)
        self.names.new_batch()
        picked = [i for i, name in enumerate(names) if bare[name]]
        picked_rows = take(client_rows, picked)
        idents = list(zip(*(take(column, picked_rows) for column in call_columns(b)), strict=True))
        described = {ident: self.describe(ident) for ident in dict.fromkeys(idents)}
        by_url: dict[tuple[str, ...], tuple[str, tuple[str, str]]] = {}
        for i, row, ident in zip(picked, picked_rows, idents, strict=True):
            call = described[ident]
            if call == _BY_URL:  # no address, no peer, no database: the URL tells
                at = (*ident, b.url_full[row], b.net_peer_name[row])
                call = by_url.get(at) or by_url.setdefault(at, self.describe(ident, *at[-2:]))
            operations[i], dependencies[i] = call
        return Calls(clients, operations, dependencies)

    def describe(
        self, ident: tuple[str, ...], url: str | None = None, net_peer: str = ""
    ) -> tuple[str, tuple[str, str]]:
        """(operation, dependency) of a kind of client span (its call_columns): the
        operation "" unless its name is its verb alone or it is a database call. _BY_URL
        when only its URL can tell what it calls and ``url`` is not given."""
        (service, name, kind, method, db, address, port, peer) = ident[:8]
        db_op, table, summary, statement, db_name, messaging, rpc, net_peer_name = ident[8:]
        names = self.names
        if db:
            operation = names.database_operation(db_op, table, summary, statement)
            # a database call's URL is not read: its address, peer or database name tells
            target = names.target(address, port, peer, "", net_peer_name, db, db_name, service)
        elif address or peer or url is not None:
            target = names.target(address, port, peer, url or "", net_peer)
            operation = bare_call(name, method, target)
        else:
            return _BY_URL
        if not target or not (db or messaging or not rpc):
            return operation, NO_DEPENDENCY
        if operation:  # the key says what was called: a database's verb and object
            return operation, (target, method if operation == f"{method} {target}" else operation)
        return operation, (target, db_op or self.keys.operation_of(name, "", int(kind)))

    def dependencies(
        self, b: SpanBatch, rows: list[int], calls: Calls, keys: list[Key]
    ) -> list[tuple[str, str]]:
        """(name, operation) of the uninstrumented system each client span calls, if any."""
        out = [NO_DEPENDENCY] * len(rows)
        if not calls.rows:
            return out
        client_rows = take(rows, calls.rows)
        seen: dict[tuple[str, str], tuple[str, str]] = {}
        target_of = self.names.target
        for (
            j,
            known,
            peer,
            address,
            port,
            db,
            messaging,
            rpc,
            db_operation,
            url,
            net_peer,
            db_name,
            service,
        ) in zip(
            calls.rows,
            calls.dependencies,
            take(b.peer_service, client_rows),
            take(b.server_address, client_rows),
            take(b.server_port, client_rows),
            take(b.db_system, client_rows),
            take(b.messaging_system, client_rows),
            take(b.rpc_system, client_rows),
            take(b.db_operation, client_rows),
            take(b.url_full, client_rows),
            take(b.net_peer_name, client_rows),
            take(b.db_name, client_rows),
            take(b.service, client_rows),
            strict=True,
        ):
            if known is not None:  # described with its operation
                if known is not NO_DEPENDENCY:
                    out[j] = seen.setdefault(known, known)
                continue
            if not (db or messaging or not rpc):
                continue
            target = target_of(address, port, peer, url, net_peer, db, db_name, service)
            if target:
                call = (target, db_operation or keys[j].operation)
                out[j] = seen.setdefault(call, call)
        return out
