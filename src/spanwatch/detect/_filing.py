"""The detector's per-span filing loops: their Python reference, and the C versions
(``_kernel.c``) the detector uses when the install could build them. Each C function does
exactly what its reference here does; tests check them against each other."""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Hashable
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)


def py_order(values: list[int]) -> list[int]:
    """The indices that sort ``values``, ties in index order."""
    return sorted(range(len(values)), key=values.__getitem__)


def py_take(column: list[Any], rows: list[int]) -> list[Any]:
    """``column[row]`` for each row."""
    return list(map(column.__getitem__, rows))


def py_group(keys: list[K], start: int, stop: int) -> dict[K, list[int]]:
    """Each key of ``keys[start:stop]`` and the indices it is at, in order."""
    out: dict[K, list[int]] = defaultdict(list)
    for j, key in zip(range(start, stop), keys[start:stop], strict=True):
        out[key].append(j)
    return dict(out)


def py_keep_traces(
    traces: OrderedDict[bytes, list[Any]],
    trace_ids: list[bytes],
    columns: tuple[list[Any], ...],
    max_traces: int,
    max_values: int,
) -> None:
    """Span i's values (``column[i]`` of each column) go at the end of its trace's flat list:
    a new trace goes last and the oldest goes when there are more than ``max_traces``; a trace
    holding ``max_values`` values takes no more."""
    for trace_id, span in zip(trace_ids, zip(*columns, strict=True), strict=True):
        kept = traces.get(trace_id)
        if kept is None:
            traces[trace_id] = list(span)
            if len(traces) > max_traces:
                traces.popitem(last=False)
        elif len(kept) < max_values:
            kept += span


try:  # the C versions, when the install could build them
    from . import _kernel
except ImportError:  # pragma: no cover - depends on the build
    _kernel = None  # type: ignore[assignment]

NATIVE = _kernel is not None


def order(values: list[int]) -> list[int]:
    found = _kernel.order(values) if NATIVE and type(values) is list else None
    return py_order(values) if found is None else found  # the C one takes uint64s only


def take(column: list[Any], rows: list[int]) -> list[Any]:
    if NATIVE and type(column) is list and type(rows) is list:
        return _kernel.take(column, rows)
    return py_take(column, rows)


group = _kernel.group if NATIVE else py_group
keep_traces = _kernel.keep_traces if NATIVE else py_keep_traces
