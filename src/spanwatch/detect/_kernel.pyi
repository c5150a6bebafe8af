# The detector's per-span filing loops in C (_kernel.c); see _filing.py for what each does.
from collections import OrderedDict
from typing import Any

def order(values: list[int]) -> list[int] | None: ...
def take(column: list[Any], rows: list[int]) -> list[Any]: ...
def group(keys: list[Any], start: int, stop: int) -> dict[Any, list[int]]: ...
def keep_traces(
    traces: OrderedDict[bytes, list[Any]],
    trace_ids: list[bytes],
    columns: tuple[list[Any], ...],
    max_traces: int,
    max_values: int,
) -> None: ...
