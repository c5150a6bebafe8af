"""Coverage-guided fuzzing of the detector's C filing loops (``_kernel``) with atheris.

Each input is read as one call of ``order``, ``take``, ``group`` or ``keep_traces`` on
generated lists, made on the C function and on its Python reference (``_filing.py``): both
must give the same result or raise the same kind of error. Some inputs put in rows, keys or
traces whose Python methods change the lists being read, for which only memory safety is
asked. ``make sanitize`` runs this against an ASan+UBSan build from the committed corpus in
``benchmarks/corpus/kernel`` for a fixed time.

Usage: python benchmarks/atheris_kernel.py [WORK_CORPUS] benchmarks/corpus/kernel
    -max_total_time=60
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import atheris

with atheris.instrument_imports():
    from spanwatch.detect import _filing

kernel = _filing._kernel
KEYS: tuple[Any, ...] = ("a", "b", 3, (1, "x"), b"k", 2.5, None)


@atheris.instrument_func
def _call(function: Callable[..., Any], *args: Any) -> object:
    try:
        return ("ok", function(*args))
    except (IndexError, TypeError, ValueError, RuntimeError) as exc:
        return ("error", type(exc))


class _Meddler:
    """A row, key or value whose Python methods empty a list being read."""

    def __init__(self, victim: list[Any], value: int) -> None:
        self.victim, self.value = victim, value

    def __index__(self) -> int:
        self.victim.clear()
        return self.value

    def __hash__(self) -> int:
        self.victim.clear()
        return self.value

    def __eq__(self, other: object) -> bool:
        self.victim.clear()
        return other is self


class _MeddlingTraces(OrderedDict[bytes, list[Any]]):
    victim: list[Any]

    def __setitem__(self, key: bytes, value: list[Any]) -> None:
        super().__setitem__(key, value)
        self.victim.clear()


@atheris.instrument_func
def _order(fdp: atheris.FuzzedDataProvider) -> None:
    n = fdp.ConsumeIntInRange(0, 64)
    wide = fdp.ConsumeBool()
    values = [
        fdp.ConsumeIntInRange(0, 2**64 - 1) if wide else fdp.ConsumeIntInRange(-2, 40)
        for _ in range(n)
    ]
    found = kernel.order(values)
    if all(0 <= v < 2**64 for v in values):
        assert found == _filing.py_order(values), (values, found)
    else:
        assert found is None, values


@atheris.instrument_func
def _take(fdp: atheris.FuzzedDataProvider, meddle: bool) -> None:
    column = list(range(fdp.ConsumeIntInRange(0, 40)))
    rows: list[Any] = [fdp.ConsumeIntInRange(-50, 50) for _ in range(fdp.ConsumeIntInRange(0, 40))]
    if meddle and rows:
        victim = rows if fdp.ConsumeBool() else column
        rows[fdp.ConsumeIntInRange(0, len(rows) - 1)] = _Meddler(
            victim, fdp.ConsumeIntInRange(0, 5)
        )
        _call(kernel.take, column, rows)
        return
    assert _call(kernel.take, column, rows) == _call(_filing.py_take, column, rows)


@atheris.instrument_func
def _group(fdp: atheris.FuzzedDataProvider, meddle: bool) -> None:
    keys: list[Any] = [
        KEYS[fdp.ConsumeIntInRange(0, len(KEYS) - 1)] for _ in range(fdp.ConsumeIntInRange(0, 40))
    ]
    start = fdp.ConsumeIntInRange(-2, len(keys) + 2)
    stop = fdp.ConsumeIntInRange(-2, len(keys) + 2)
    if meddle and keys:
        keys[fdp.ConsumeIntInRange(0, len(keys) - 1)] = _Meddler(keys, fdp.ConsumeIntInRange(0, 9))
        _call(kernel.group, keys, start, stop)
        return
    found = _call(kernel.group, keys, start, stop)
    if 0 <= start <= stop <= len(keys):
        expected = _call(_filing.py_group, keys, start, stop)
        assert found == expected and list(found[1]) == list(expected[1]), (keys, start, stop)
    else:
        assert found == ("error", IndexError), (keys, start, stop)


@atheris.instrument_func
def _keep_traces(fdp: atheris.FuzzedDataProvider, meddle: bool) -> None:
    n = fdp.ConsumeIntInRange(0, 40)
    ids = [bytes([fdp.ConsumeIntInRange(0, 7)]) * 16 for _ in range(n)]
    width = fdp.ConsumeIntInRange(1, 3)
    columns = tuple([fdp.ConsumeIntInRange(0, 9) for _ in range(n)] for _ in range(width))
    max_traces, max_values = fdp.ConsumeIntInRange(0, 6), fdp.ConsumeIntInRange(0, 8)
    already = [
        (bytes([fdp.ConsumeIntInRange(0, 7)]) * 16, fdp.ConsumeIntInRange(0, 9))
        for _ in range(fdp.ConsumeIntInRange(0, 4))
    ]
    if meddle:
        traces = _MeddlingTraces()
        traces.victim = []
        traces.update((t, [v] * width) for t, v in already)
        traces.victim = ids if fdp.ConsumeBool() else columns[0]
        _call(kernel.keep_traces, traces, ids, columns, max_traces, max_values)
        return
    stores = []
    for keep in (kernel.keep_traces, _filing.py_keep_traces):
        store: OrderedDict[bytes, list[Any]] = OrderedDict((t, [v] * width) for t, v in already)
        stores.append(
            (_call(keep, store, ids, columns, max_traces, max_values), list(store.items()))
        )
    assert stores[0] == stores[1], (ids, columns, max_traces, max_values, already)


@atheris.instrument_func
def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, 3)
    meddle = fdp.ConsumeIntInRange(0, 7) == 0
    if which == 0:
        _order(fdp)
    elif which == 1:
        _take(fdp, meddle)
    elif which == 2:
        _group(fdp, meddle)
    else:
        _keep_traces(fdp, meddle)


if __name__ == "__main__":
    if kernel is None:
        sys.exit("the C filing loops (spanwatch.detect._kernel) were not built")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
