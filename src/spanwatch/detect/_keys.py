"""Baseline keys: (service, span-name template, kind), with high-cardinality parts templated."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, NamedTuple, cast

from spanwatch.model import SpanKind

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"\b[0-9a-fA-F]{8,}\b")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_NUMBER = re.compile(r"(?<![A-Za-z])\d+(?:\.\d+)*(?![A-Za-z])")


def _hex_id(match: re.Match[str]) -> str:
    text = match.group(0)
    return "{id}" if any(c.isdigit() for c in text) else text


def template(name: str) -> str:
    """``GET /cart/3f2a…/items/17`` → ``GET /cart/{id}/items/{n}``."""
    name = _UUID.sub("{id}", name)
    name = _HEX.sub(_hex_id, name)
    name = _EMAIL.sub("{email}", name)
    return _NUMBER.sub("{n}", name)


class Key(NamedTuple):
    service: str
    operation: str
    kind: int
    scope: str = ""  # resource identity beyond the service name (make_scope)

    @property
    def is_entry_kind(self) -> bool:
        return self.kind in (SpanKind.SERVER, SpanKind.CONSUMER)

    def label(self) -> str:
        return f"{self.service} {self.operation} ({SpanKind(self.kind).name.lower()})"


class KeyTable:
    """Interns keys, templating names through a bounded cache; evicts the least recently used
    key past ``capacity`` and reports which, so its baseline can go too."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[Key, Key] = OrderedDict()
        self._templates: dict[str, str] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._keys)

    def operation_of(self, name: str, route: str, kind: int) -> str:
        """A server span's operation is its route (with the method its name gives); a client
        span's, the call the detector made of it (``route`` holds it, see CallNames), else
        its name, templated."""
        if route:
            if kind != SpanKind.SERVER:
                return route
            method = name.split(" ", 1)[0]
            return f"{method} {route}" if method.isupper() and method != route else route
        cached = self._templates.get(name)
        if cached is None:
            if len(self._templates) >= 4 * self.capacity:
                self._templates.clear()  # cheap bound; the cache refills from hot names
            cached = self._templates[name] = template(name)
        return cached

    def touch(self, key: Key) -> tuple[Key, Key | None]:
        """Mark ``key`` used; returns the one instance of it that every record shares, and a
        key evicted to make room, if any."""
        keys = self._keys
        if key in keys:
            keys.move_to_end(key)
            return keys[key], None
        keys[key] = key
        if len(keys) > self.capacity:
            old, _ = keys.popitem(last=False)
            self.evicted += 1
            return key, old
        return key, None

    def touch_all(
        self,
        idents: Iterable[tuple[str, str, str, int, str]],
        batch_keys: dict[tuple[str, str, str, int, str], Key],
    ) -> tuple[dict[tuple[str, str, str, int, str], Key], bool, list[Key]]:
        """The key of each (service, name, route, kind, scope), touched in the order given
        (``batch_keys`` remembers those of the batch so far); whether every one has its key;
        and the keys evicted meanwhile, in order, for their baselines to go too. One of this
        batch's own is evicted only when a batch holds more keys than the capacity, and is
        left out."""
        key_of: dict[tuple[str, str, str, int, str], Key] = {}
        evicted: list[Key] = []
        for ident in idents:
            key = batch_keys.get(ident)
            if key is None:
                service, name, route, kind, scope = ident
                key, gone = self.touch(
                    Key(service, self.operation_of(name, route, kind), kind, scope)
                )
                if gone is not None:
                    evicted.append(gone)
                batch_keys[ident] = key
            key_of[ident] = key
        if not evicted:
            return key_of, True, evicted
        complete = True
        gone_keys = set(evicted)
        for ident in [i for i, k in batch_keys.items() if k in gone_keys]:
            del batch_keys[ident]  # a later segment of the batch touches it again
            if key_of.pop(ident, None) is not None:
                complete = False
        return key_of, complete, evicted


# --- client calls ---------------------------------------------------------------------------
# Instrumentations name a client span by its verb alone (``GET``, ``SELECT``): every outgoing
# GET of a service would be one key. Such a call is keyed by what it calls instead.

HTTP_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY")
)
_SQL_VERBS = frozenset(
    (
        "SELECT", "INSERT", "UPDATE", "DELETE", "UPSERT", "MERGE", "REPLACE", "WITH", "CALL",
        "EXEC", "EXECUTE", "CREATE", "DROP", "ALTER", "TRUNCATE", "BEGIN", "COMMIT",
        "ROLLBACK", "PRAGMA", "SET", "SHOW", "EXPLAIN", "FIND", "AGGREGATE",
    )
)  # fmt: skip
_DEFAULT_PORTS = frozenset(("80", "443"))
_SQL_COMMENT = re.compile(r"/\*.*?\*/|--[^\n]*", re.S)
_SQL_STRING = re.compile(r"'(?:[^']|'')*'")
_SQL_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b|\b0x[0-9a-fA-F]+\b")
_SQL_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)")
_SPACE = re.compile(r"\s+")
MAX_STATEMENT = 2000  # characters of a statement read: the rest cannot change its verb


def is_bare(name: str) -> bool:
    """A span name that says only what was done, not to what: ``GET``, ``HTTP GET``,
    ``SELECT``, ``_OTHER``."""
    head, _, rest = name.partition(" ")
    if not rest:
        return name == "_OTHER" or name.upper() in HTTP_METHODS or name.upper() in _SQL_VERBS
    return head == "HTTP" and rest in HTTP_METHODS


def host_port(host: str, port: str) -> str:
    """``Host:port`` of a peer, normalised: lower case, no trailing dot, the port once (it
    may come inside the address), none for 80 and 443."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("["):  # [::1]:5001
        inner, _, after = host[1:].partition("]")
        host = inner
        if after.startswith(":") and after[1:].isdigit() and not port:
            port = after[1:]
    elif host.count(":") == 1:
        name, _, suffix = host.partition(":")
        if suffix.isdigit():
            host = name
            port = port or suffix
    if ":" in host:
        host = f"[{host}]"
    if not host:
        return ""
    return host if not port or port in _DEFAULT_PORTS else f"{host}:{port}"


def url_host(url: str) -> str:
    """``host:port`` of an absolute URL (``""`` when it has none)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.isalpha():
        return ""
    end = len(rest)
    for mark in "/?#":
        at = rest.find(mark)
        if 0 <= at < end:
            end = at
    netloc = rest[:end].rpartition("@")[2]
    return host_port(netloc, "")


# the database a system calls its own when a call names none (SQLite's primary one is "main")
_DEFAULT_DATABASE = {"sqlite": "main"}


def database_name(system: str, name: str, caller: str) -> str:
    """A database that a call reaches at no address, as a dependency: its system and name
    (``sqlite orders.db``; a file database by its file's name), and the service that calls
    it, whose own it is (an embedded database, or one the span does not locate): two
    services' ``sqlite main`` are two databases."""
    name = name.replace("\\", "/").rstrip("/").rpartition("/")[2] or _DEFAULT_DATABASE.get(
        system, ""
    )
    database = f"{system} {name}" if name else system
    return f"{database} ({caller})"


def statement_template(statement: str) -> str:
    """A statement without its values and comments: one text per query however it is
    called (``WHERE id = 17`` and ``WHERE id = 18`` are ``WHERE id = ?``)."""
    text = _SQL_COMMENT.sub(" ", statement[:MAX_STATEMENT])
    text = _SQL_STRING.sub("?", text)
    text = _SQL_NUMBER.sub("?", text)
    text = _SQL_LIST.sub("(?)", text)
    return _SPACE.sub(" ", text).strip()


def parse_statement(template_text: str) -> tuple[str, tuple[str, ...]]:
    """(verb, tables) of a statement template, by sqlparse: ``SELECT``, ``("stock",)``."""
    import sqlparse
    from sqlparse import sql, tokens

    parsed = sqlparse.parse(template_text)
    if not parsed:
        return "", ()
    statement: Any = parsed[0]  # sqlparse is untyped
    verb = statement.get_type()
    if verb == "UNKNOWN":
        first = statement.token_first(skip_cm=True)
        verb = first.normalized.upper() if first is not None and first.is_keyword else ""
    tables: list[str] = []

    def name_of(token: Any) -> None:
        real = token.get_real_name()
        if real and real not in tables:
            tables.append(real)

    def walk(group: Any) -> None:
        expect = False
        for token in group.tokens:
            if token.is_whitespace or token.ttype in tokens.Comment:
                continue
            word = token.normalized if token.is_keyword else ""
            if word in ("FROM", "INTO", "UPDATE", "TABLE") or word.endswith("JOIN"):
                expect = True
                continue
            if expect:
                expect = False
                if isinstance(token, sql.IdentifierList):
                    for item in cast(Any, token).get_identifiers():
                        if isinstance(item, sql.Identifier):
                            if any(isinstance(t, sql.Parenthesis) for t in item.tokens):
                                walk(item)
                            else:
                                name_of(item)
                    continue
                if isinstance(token, sql.Identifier) and not any(
                    isinstance(t, sql.Parenthesis) for t in token.tokens
                ):
                    name_of(token)
                    continue
                if isinstance(token, sql.Function):
                    name_of(token)
                    continue
            if token.is_group:
                walk(token)

    walk(statement)
    return verb, tuple(tables[:2])


class CallNames:
    """What client spans call: their peer, and for the spans named by their verb alone, an
    operation that says to what (``GET inventory:5002``, ``SELECT stock``). Statements are
    parsed once per template, through a bounded cache, and at most ``parses_per_batch`` new
    ones a batch (a statement over budget is keyed by its verb until a later batch parses it).
    """

    def __init__(self, capacity: int = 4096, parses_per_batch: int = 16) -> None:
        self.capacity = capacity
        self.parses_per_batch = parses_per_batch
        self._statements: dict[str, tuple[str, tuple[str, ...]]] = {}  # raw text -> parsed
        self._templates: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._hosts: dict[tuple[str, str], str] = {}  # (address, port) -> host:port
        self._budget = parses_per_batch

    def new_batch(self) -> None:
        self._budget = self.parses_per_batch

    def target(
        self,
        address: str,
        port: str,
        peer: str,
        url: str,
        net_peer: str,
        db: str = "",
        db_name: str = "",
        caller: str = "",
    ) -> str:
        """The peer a client span calls: ``server.address``/``server.port``, else
        ``peer.service``, else (a database call, ``db`` its system, that names no
        ``net.peer.name``) the database by its name and ``caller``'s (database_name), else
        the host of ``url.full``/``http.url``, else ``net.peer.name``."""
        if address:
            known = self._hosts.get((address, port))
            if known is None:
                if len(self._hosts) >= self.capacity:
                    self._hosts.clear()
                known = self._hosts[address, port] = host_port(address, port)
            return known
        if peer:
            return peer
        if db and not net_peer:
            return database_name(db, db_name, caller)
        if url and (host := url_host(url)):
            return host
        return host_port(net_peer, port) if net_peer else ""

    def statement(self, text: str) -> tuple[str, tuple[str, ...]]:
        """(verb, tables) of a statement; ("", ()) while it waits for its parse."""
        known = self._statements.get(text)
        if known is not None:
            return known
        template_text = statement_template(text)
        parsed = self._templates.get(template_text)
        if parsed is None:
            if self._budget <= 0:
                verb = template_text.partition(" ")[0].upper()
                return (verb if verb in _SQL_VERBS else ""), ()
            self._budget -= 1
            if len(self._templates) >= self.capacity:
                self._templates.clear()  # cheap bound; the hot templates come back at once
            parsed = self._templates[template_text] = parse_statement(template_text)
        if len(self._statements) >= self.capacity:
            self._statements.clear()
        self._statements[text] = parsed
        return parsed

    def database_operation(
        self, operation: str, collection: str, summary: str, statement: str
    ) -> str:
        """``SELECT stock`` from the span's own attributes, else from its statement; ""
        when neither tells the object."""
        if summary:
            return summary[:200]
        tables: tuple[str, ...] = (collection,) if collection else ()
        if statement and (not operation or not tables):
            verb, found = self.statement(statement)
            operation = operation or verb
            tables = tables or found
        if not operation:
            return ""
        return f"{operation.upper()} {' '.join(tables)}" if tables else ""
