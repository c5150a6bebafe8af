"""Reading ``tests/fixtures/app/``: the recorded requests, their spans and the spans' shapes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.app._cluster import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "app"


def fixture_path(mode: str) -> Path:
    return FIXTURES / f"{mode}.jsonl"


def read_lines(path: Path) -> list[bytes]:
    """The export requests of a recording, one OTLP/JSON document each."""
    return [line for line in path.read_bytes().splitlines() if line.strip()]


@dataclass(frozen=True)
class RawSpan:
    """A span as the SDK exported it, with its service and instrumentation scope."""

    service: str
    scope: str
    span: dict[str, Any]

    @property
    def kind(self) -> int:
        return int(self.span.get("kind", 0))

    @property
    def name(self) -> str:
        return str(self.span["name"])

    @property
    def attributes(self) -> dict[str, Any]:
        """Attribute values by key, as Python values (OTLP/JSON writes ints as strings)."""
        out: dict[str, Any] = {}
        for kv in self.span.get("attributes", []):
            ((kind, value),) = kv["value"].items()
            out[kv["key"]] = int(value) if kind == "intValue" else value
        return out

    @property
    def status_code(self) -> int:
        return int(self.span.get("status", {}).get("code", 0))

    @property
    def duration_ns(self) -> int:
        return int(self.span["endTimeUnixNano"]) - int(self.span["startTimeUnixNano"])

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.span.get("events", []))


def raw_spans(lines: Iterable[bytes | str]) -> list[RawSpan]:
    spans = []
    for line in lines:
        document = json.loads(line)
        for resource_spans in document.get("resourceSpans", []):
            resource = {
                kv["key"]: next(iter(kv["value"].values()))
                for kv in resource_spans.get("resource", {}).get("attributes", [])
            }
            for scope_spans in resource_spans.get("scopeSpans", []):
                scope = scope_spans.get("scope", {}).get("name", "")
                for span in scope_spans.get("spans", []):
                    spans.append(RawSpan(str(resource["service.name"]), scope, span))
    return spans


Shape = tuple[str, str, int, str, int, tuple[str, ...], tuple[str, ...]]


def shape(span: RawSpan) -> Shape:
    """What a release of the instrumentations decides: service, scope, kind, name, status
    code, the names of its events, the keys of its attributes (not their values)."""
    return (
        span.service,
        span.scope,
        span.kind,
        span.name,
        span.status_code,
        tuple(e["name"] for e in span.events),
        tuple(sorted(span.attributes)),
    )


def shapes(spans: Iterable[RawSpan]) -> set[Shape]:
    return {shape(span) for span in spans}
