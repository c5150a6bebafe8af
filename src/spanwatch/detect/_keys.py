"""Baseline keys: (service, span-name template, kind), with high-cardinality parts templated."""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import NamedTuple

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
        if route and kind == SpanKind.SERVER:
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
