"""The detector's C filing loops (_kernel.c) against their Python reference (_filing.py)."""

from __future__ import annotations

import gc
import os
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spanwatch.detect import Detector, _detector, _filing
from spanwatch.model import Pattern
from spanwatch.sim import NS, Fault, Simulator

# Where the C paths are required (CI), these tests never skip: a missing build fails them.
pytestmark = pytest.mark.skipif(
    not _filing.NATIVE and os.environ.get("SPANWATCH_REQUIRE_NATIVE") != "1",
    reason="the C filing loops were not built",
)
CHECK = settings(max_examples=300, deadline=None)
kernel = _filing._kernel

UINT64 = st.integers(0, 2**64 - 1)


@CHECK
@given(st.lists(st.one_of(UINT64, st.integers(0, 5)), max_size=60))
def test_order_sorts_stably_like_sorted(values: list[int]) -> None:
    assert kernel.order(values) == _filing.py_order(values)
    assert kernel.order(sorted(values)) == list(range(len(values)))


@CHECK
@given(st.lists(st.one_of(st.integers(-(2**70), 2**70), st.booleans()), min_size=1, max_size=20))
def test_order_leaves_what_is_not_uint64_to_python(values: list[int]) -> None:
    found = kernel.order(values)
    fits = all(type(v) is int and 0 <= v < 2**64 for v in values)
    assert (found is not None) == fits
    assert _filing.order(values) == _filing.py_order(values)


@CHECK
@given(st.lists(st.integers(), max_size=30), st.lists(st.integers(-40, 40), max_size=30))
def test_take_is_indexing(column: list[int], rows: list[int]) -> None:
    try:
        expected: Any = _filing.py_take(column, rows)
    except IndexError:
        expected = IndexError
    try:
        found: Any = kernel.take(column, rows)
    except IndexError:
        found = IndexError
    assert found == expected
    for take in (kernel.take, _filing.py_take):
        with pytest.raises(TypeError):
            take(column, ["1"])  # type: ignore[list-item]


@CHECK
@given(st.lists(st.sampled_from(["a", "b", 3, (1, "x"), b"k"]), max_size=40), st.data())
def test_group_gives_each_key_its_indices_in_order(keys: list[Any], data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(keys)))
    stop = data.draw(st.integers(start, len(keys)))
    found = kernel.group(keys, start, stop)
    assert list(found.items()) == list(_filing.py_group(keys, start, stop).items())
    with pytest.raises(IndexError):
        kernel.group(keys, 0, len(keys) + 1)


TRACE_IDS = st.sampled_from([bytes([i]) * 16 for i in range(8)])


@CHECK
@given(
    st.lists(st.tuples(TRACE_IDS, st.integers(), st.text(max_size=2)), max_size=40),
    st.lists(st.tuples(TRACE_IDS, st.integers(0, 9)), max_size=6),
    st.integers(1, 6),
    st.integers(1, 4),
)
def test_keep_traces_files_like_the_reference(
    spans: list[tuple[bytes, int, str]],
    already: list[tuple[bytes, int]],
    max_traces: int,
    max_spans: int,
) -> None:
    """Traces new and already kept, the oldest evicted, each cut at max_spans spans."""
    trace_ids = [s[0] for s in spans]
    columns = ([s[1] for s in spans], [s[2] for s in spans])
    stores: list[OrderedDict[bytes, list[Any]]] = []
    for keep in (kernel.keep_traces, _filing.py_keep_traces):
        traces: OrderedDict[bytes, list[Any]] = OrderedDict(
            (trace_id, [n, "old"] * (n % 3 + 1)) for trace_id, n in already
        )
        keep(traces, trace_ids, columns, max_traces, max_spans * 2)
        stores.append(traces)
    assert list(stores[0].items()) == list(stores[1].items())


def test_kept_traces_are_left_out_of_the_cycle_collector() -> None:
    """Ids, numbers and keys cannot refer back to a trace, so it cannot be in a cycle."""
    traces: OrderedDict[bytes, list[Any]] = OrderedDict()
    kernel.keep_traces(traces, [b"t" * 16, b"t" * 16], ([b"a", b"b"], [1, 2]), 10, 10)
    assert traces[b"t" * 16] == [b"a", 1, b"b", 2]
    assert not gc.is_tracked(traces[b"t" * 16])


def test_keep_traces_refuses_what_it_cannot_file_safely() -> None:
    traces: OrderedDict[bytes, list[Any]] = OrderedDict()
    with pytest.raises(TypeError, match="bytes"):
        kernel.keep_traces(traces, ["not bytes"], ([1],), 10, 10)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="as long as"):
        kernel.keep_traces(traces, [b"t" * 16], ([1], []), 10, 10)
    traces[b"t" * 16] = ("a tuple",)  # type: ignore[assignment]
    with pytest.raises(TypeError, match="list"):
        kernel.keep_traces(traces, [b"t" * 16], ([1],), 10, 10)


def test_the_detector_gives_the_same_events_with_the_python_filing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same traffic, errors and a fault included, through the C loops and through their
    Python reference: the same events and the same recent traces."""
    fault = Fault(Pattern.ERROR_BURST, "payments", "POST /v1/charges", 900, 120, 0.5)
    sim = Simulator(seed=11, faults=(fault,))
    batches = list(sim.batches(1200, tick_s=2))
    end = sim.start_ns + 1200 * NS

    def run() -> tuple[list[Any], OrderedDict[bytes, list[Any]]]:
        detector = Detector()
        events = [e.fields for b in batches for e in detector.process(b)]
        events += [e.fields for e in detector.advance(end + 60 * NS)]
        return events, detector._traces

    native = run()
    monkeypatch.setattr(_filing, "NATIVE", False)
    monkeypatch.setattr(_filing, "group", _filing.py_group)
    monkeypatch.setattr(_filing, "keep_traces", _filing.py_keep_traces)
    assert _detector.filing is _filing
    reference = run()
    assert native[0] and native == reference


class _Shrinking:
    """A row whose ``__index__`` empties the rows list it is in."""

    def __init__(self, rows: list[Any], row: int) -> None:
        self.rows, self.row = rows, row

    def __index__(self) -> int:
        self.rows.clear()
        return self.row


def test_take_survives_an_index_that_empties_the_rows() -> None:
    """``__index__`` runs Python code: the rows read so far are taken, as a list iterator
    would, and nothing past the list's new end is read (the sanitizer job would see it)."""
    column = list(range(100, 110))
    for take in (kernel.take, _filing.py_take):
        rows: list[Any] = []
        rows += [_Shrinking(rows, 3), 1, 2, 4]
        assert take(column, rows) == [103]


class _HashEmpties:
    """A key whose ``__hash__`` empties the keys list it is in (and so drops its last
    reference but the caller's)."""

    def __init__(self, keys: list[Any]) -> None:
        self.keys = keys

    def __hash__(self) -> int:
        self.keys.clear()
        return 7


def test_group_holds_a_key_whose_hash_empties_the_keys() -> None:
    keys: list[Any] = []
    keys += [_HashEmpties(keys), "a", "b"]
    found = kernel.group(keys, 0, 3)
    assert [rows for rows in found.values()] == [[0]]


class _Meddling(OrderedDict[bytes, list[Any]]):
    """Traces whose ``__setitem__`` shortens the lists being filed."""

    def __init__(self, victim: list[Any]) -> None:
        super().__init__()
        self.victim = victim

    def __setitem__(self, key: bytes, value: list[Any]) -> None:
        super().__setitem__(key, value)
        self.victim.clear()


@pytest.mark.parametrize("which", ["trace_ids", "column"])
def test_keep_traces_stops_when_the_lists_change_under_it(which: str) -> None:
    """A subclass's ``__setitem__`` is Python code: lists that change size while filing are
    refused, never read past their end."""
    trace_ids = [bytes([i]) * 16 for i in range(4)]
    column = [1, 2, 3, 4]
    traces = _Meddling(trace_ids if which == "trace_ids" else column)
    with pytest.raises(RuntimeError, match="changed size"):
        kernel.keep_traces(traces, trace_ids, (column,), 10, 10)
    assert list(traces) == [b"\x00" * 16]
