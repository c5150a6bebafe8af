"""Fleet traffic: head sampling, 4xx answers, raw paths, bursts, quiet entries, health checks."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict

import pytest

from spanwatch.model import Span, SpanBatch, SpanKind, StatusCode
from spanwatch.sim import Simulator, shop
from spanwatch.sim._fleet import answer_4xx, head_sampled, quiet_entries, raw_paths, sampled


def _batches(sim: Simulator, seconds: float) -> list[SpanBatch]:
    return list(sim.batches(seconds))


def _rows(batches: list[SpanBatch]) -> list[Span]:
    return [s for b in batches for s in b.rows()]


def test_sampler_decides_as_trace_id_ratio_based() -> None:
    """The low 64 bits of the trace id against ratio x 2^64, as the SDK's sampler does."""
    low = (1).to_bytes(8, "big")
    assert sampled(b"\xff" * 8 + low, 0.1)
    assert not sampled(b"\x00" * 8 + int(0.2 * 2**64).to_bytes(8, "big"), 0.1)
    assert not sampled(b"\x00" * 16, 0.0) and sampled(b"\xff" * 16, 1.0)


def test_head_sampling_keeps_a_tenth_of_the_traces_each_whole() -> None:
    """About 10% of traces survive, and every survivor has all of its spans."""
    batches = _batches(Simulator(seed=1, rate=20), 120)
    before = defaultdict(list)
    for s in _rows(batches):
        before[s.trace_id].append(s)
    after = defaultdict(list)
    for s in _rows([head_sampled(b, 0.1) for b in batches]):
        after[s.trace_id].append(s)
    assert 0.08 < len(after) / len(before) < 0.12
    assert all(after[t] == before[t] for t in after)


def test_4xx_answers_mark_the_client_error_and_leave_the_server_unset() -> None:
    """A few percent of lookups 404 and of POSTs 409: server UNSET with the code, its caller's
    client span ERROR with the code and no message or exception; nothing else changes."""
    batches = _batches(Simulator(seed=2, rate=20), 120)
    plain = _rows(batches)
    answered = _rows([answer_4xx(b) for b in batches])
    assert [s.span_id for s in plain] == [s.span_id for s in answered]
    by_id = {s.span_id: s for s in answered}
    servers = [s for s in answered if s.kind == SpanKind.SERVER and 400 <= s.http_status_code < 500]
    assert {s.http_status_code for s in servers} == {404, 409}
    lookups = [s for s in answered if s.kind == SpanKind.SERVER and "{id}" in s.http_route]
    share = sum(s.http_status_code == 404 for s in lookups) / len(lookups)
    assert 0.02 < share < 0.04
    for server in servers:
        assert server.status_code == StatusCode.UNSET
        client = by_id.get(server.parent_span_id)
        if client is not None and client.kind == SpanKind.CLIENT:
            assert client.status_code == StatusCode.ERROR
            assert client.http_status_code == server.http_status_code
            assert (client.status_message, client.exception_type) == ("", "")
    changed = {a.span_id for a, b in zip(plain, answered, strict=True) if a != b}
    assert changed == {s.span_id for s in servers} | {s.parent_span_id for s in servers} - {b""}


def test_raw_paths_name_server_and_client_spans_by_the_path() -> None:
    """Routes with ids lose http.route: the server span is named by its raw path, which is in
    url.path, and the client span that called it has the same name."""
    rows = _rows([raw_paths(b) for b in _batches(Simulator(seed=3, rate=20), 60)])
    by_id = {s.span_id: s for s in rows}
    carts = [s for s in rows if s.service == "cart" and s.kind == SpanKind.SERVER]
    assert carts and not any(s.http_route for s in carts)
    assert len({s.name for s in carts}) > 0.9 * len(carts)
    for s in carts:
        assert s.name == f"GET {s.url_path}" and s.url_path.startswith("/api/cart/")
        assert by_id[s.parent_span_id].name == s.name
    assert any(s.http_route == "/api/products" for s in rows)  # routes without ids keep theirs


def test_bursts_keep_the_mean_and_multiply_the_variance() -> None:
    """Ten-request bursts: the same traces per window on average, about ten times the
    variance of steady arrivals, each burst to one entry operation within 50 ms."""

    def per_window(burst: float) -> tuple[list[int], list[Span]]:
        sim = Simulator(seed=4, rate=10, diurnal=0, burst=burst, noise=None)
        roots = [s for s in _rows(_batches(sim, 600)) if not s.parent_span_id]
        counts = Counter((s.start_ns - sim.start_ns) // 10**10 for s in roots)
        return [counts[w] for w in range(60)], roots

    steady, _ = per_window(1.0)
    bursty, roots = per_window(10.0)
    assert abs(statistics.mean(bursty) - statistics.mean(steady)) < 0.1 * statistics.mean(steady)
    assert statistics.variance(bursty) > 5 * statistics.variance(steady)
    starts = sorted(s.start_ns for s in roots)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert statistics.median(gaps) < 10**7  # most requests come within ms of another


def test_steady_arrivals_are_unchanged_by_the_burst_option() -> None:
    """burst=1 (the default) is the simulator's own Poisson traffic, span for span."""
    assert _rows(_batches(Simulator(seed=5), 30)) == _rows(_batches(Simulator(seed=5, burst=1), 30))


def test_quiet_entries_slow_all_but_the_busiest_to_a_request_or_two_a_window() -> None:
    """Product pages and checkout at 1.5 a 10 s window, the front page as it was."""
    topology = shop()
    entries, rate = quiet_entries(topology, 20.0)
    per_window = {
        e.operation: 10 * rate * e.weight / sum(x.weight for x in entries) for e in entries
    }
    assert per_window["GET /product/{id}"] == pytest.approx(1.5)
    assert per_window["POST /checkout"] == pytest.approx(1.5)
    assert per_window["GET /"] == pytest.approx(10 * 20.0 * 0.45)


def test_health_checks_probe_every_service_in_traces_of_their_own() -> None:
    """Each service is probed every 5 s, one root span a trace; gRPC-only services by gRPC's
    health service; the rest of the traffic is what it was without probes."""
    plain = _rows(_batches(Simulator(seed=6, rate=5), 60))
    probed = _rows(_batches(Simulator(seed=6, rate=5, health_checks_s=5.0), 60))
    probes = [s for s in probed if s.name in ("GET /healthz", "grpc.health.v1.Health/Check")]
    assert [s for s in probed if s not in probes] == plain
    per_service = Counter(s.service for s in probes)
    assert set(per_service) == set(shop().services)
    assert set(per_service.values()) == {12}
    assert len({s.trace_id for s in probes}) == len(probes)
    assert all(not s.parent_span_id and s.kind == SpanKind.SERVER for s in probes)
    grpc = {s.service for s in probes if s.rpc_service == "grpc.health.v1.Health"}
    assert grpc == {"checkout", "inventory", "recommend"}
    http = [s for s in probes if s.http_method]
    assert all(s.url_path == "/healthz" and s.http_status_code == 200 for s in http)
    assert {s.http_route for s in http} == {"/healthz", ""}
