"""Detector memory against the number of active (service, operation) keys.

Feeds a detector windows of traffic spread over N distinct keys (each key seen in every window,
with latency samples, so every baseline is populated and holds two epochs, as after an hour's
running), then reports the process's resident memory growth, its whole resident memory and
the bytes per key. Freed memory is handed back to the OS after each window, as the daemon does
every 10 seconds. Issue target: at most 300 MiB at 100 000 keys.

Usage: python benchmarks/memory.py [--keys 10000 50000 100000] [--windows 15]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from _common import write_results
from spanwatch.detect import Detector, Settings
from spanwatch.model import SpanBatch, SpanKind
from spanwatch.otlp import release_free_memory, resident_bytes

NS = 1_000_000_000
REQUEST_SPANS = 8192


def batches_for(keys: int, window: int, per_key: int) -> Iterator[SpanBatch]:
    """One window of traffic, in 8192-span batches as a collector would send it."""
    n = keys * per_key
    for first in range(0, n, REQUEST_SPANS):
        yield batch_for(keys, window, per_key, first, min(n, first + REQUEST_SPANS))


def batch_for(keys: int, window: int, per_key: int, first: int, last: int) -> SpanBatch:
    start = 1_800_000_000 * NS + window * 10 * NS
    n = keys * per_key
    ids = range(window * n + first, window * n + last)
    span_range = range(first, last)
    return SpanBatch.filled(
        last - first,
        trace_id=[(i + 1).to_bytes(16, "big") for i in ids],
        span_id=[(i + 1).to_bytes(8, "big") for i in ids],
        service=[f"svc{(i % keys) // 100}" for i in span_range],
        name=[f"op-{chr(97 + (i % keys) % 26)}{(i % keys) // 26:x}x" for i in span_range],
        kind=[SpanKind.SERVER] * (last - first),
        start_ns=[start + (i % 1000) * 1_000_000 for i in span_range],
        end_ns=[
            start + (i % 1000) * 1_000_000 + 2_000_000 + (i * 7919) % 3_000_000 for i in span_range
        ],
    )


def measure(keys: int, windows: int, per_key: int) -> dict[str, float]:
    gc.collect()
    before = resident_bytes()
    # Short baseline epochs, so that within these few windows every key's two latency
    # baselines both hold two epochs, as they do on a daemon that has run for an hour.
    settings = Settings(
        max_keys=max(keys, 100), max_traces=1000, fast_epoch_windows=3, slow_epoch_windows=5
    )
    detector = Detector(settings)
    for window in range(windows):
        for batch in batches_for(keys, window, per_key):
            detector.process(batch)
        # the daemon's pipeline does this every 10 s (a window): freed batch columns between
        # long-lived blocks go back to the OS instead of staying resident
        release_free_memory()
    gc.collect()
    after = resident_bytes()
    assert detector.tracked_keys == keys, detector.tracked_keys
    grown = after - before
    return {
        "keys": keys,
        "rss_growth_mib": grown / 2**20,
        "rss_mib": after / 2**20,
        "bytes_per_key": grown / keys,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--windows", type=int, default=15)
    parser.add_argument("--per-key", type=int, default=3, help="spans per key and window")
    args = parser.parse_args()
    rows = []
    # Each size in a fresh interpreter, so that the whole resident size is an interpreter with
    # spanwatch loaded plus one detector, and no size inherits another's heap.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, max_tasks_per_child=1) as pool:
        for keys in args.keys:
            row = pool.submit(measure, keys, args.windows, args.per_key).result()
            rows.append(row)
            print(
                f"{keys:>8,} keys: +{row['rss_growth_mib']:7.1f} MiB resident "
                f"({row['rss_mib']:.0f} MiB in all), {row['bytes_per_key']:8,.0f} bytes per key"
            )
    write_results("memory", {"windows": args.windows, "per_key": args.per_key, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
