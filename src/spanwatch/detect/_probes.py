"""Probes: server spans that are not traffic (health checks, requests no route matched).
They get no baseline and no key of their own: a load balancer's checks are not a service's
load, and a scanner's 404s would each make a key."""

from __future__ import annotations

from itertools import compress, repeat
from operator import eq

from spanwatch.model import SpanBatch, SpanKind

_SERVER = int(SpanKind.SERVER)
_HEALTH_RPC = "grpc.health.v1.Health"
_NOT_FOUND = 404


def probe_rows(b: SpanBatch, paths: frozenset[str]) -> set[int]:
    """Server spans that are probes: a health-check path (``Settings.probe_paths``) or
    gRPC's health service, or a request no route matched (404 and no ``http.route``)."""
    kinds = b.kind
    if _SERVER not in kinds:
        return set()
    routes = b.http_route
    statuses = b.http_status_code
    path_column = b.url_path
    probe_paths = any(p.partition("?")[0] in paths for p in set(path_column) if p)
    health = _HEALTH_RPC in b.rpc_service
    if not (probe_paths or health or _NOT_FOUND in statuses or not paths.isdisjoint(routes)):
        return set()
    rows = set()
    for row in compress(range(len(kinds)), map(eq, kinds, repeat(_SERVER))):
        route = routes[row]
        if (
            (route in paths if route else statuses[row] == _NOT_FOUND)
            or (probe_paths and not route and path_column[row].partition("?")[0] in paths)
            or (health and b.rpc_service[row] == _HEALTH_RPC)
        ):
            rows.add(row)
    return rows
