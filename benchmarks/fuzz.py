"""Fuzz the OTLP decoders over many cases: the tests' properties, run at volume.

Each case must decode or be refused as malformed (MalformedPayload); anything else fails the
run. Prints the cases run, the time, and the peak memory of this process.

Usage: python benchmarks/fuzz.py [--cases 120000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _common import write_results

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_fuzz import VALID, _mutate, decode_any, json_values, otlp_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=120_000)
    args = parser.parse_args()
    per = args.cases // 4
    counted = {"protobuf_random": 0, "protobuf_mutated": 0, "json_documents": 0, "json_random": 0}
    run = settings(
        max_examples=per,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )

    @run
    @given(st.binary(max_size=512))
    def protobuf_random(body: bytes) -> None:
        counted["protobuf_random"] += 1
        decode_any(body, as_json=False)

    @run
    @given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8))
    def protobuf_mutated(edits: list[tuple[int, int]]) -> None:
        counted["protobuf_mutated"] += 1
        decode_any(_mutate(VALID, edits), as_json=False)

    @run
    @given(st.one_of(json_values, otlp_json))
    def json_documents(document: object) -> None:
        import json

        counted["json_documents"] += 1
        decode_any(json.dumps(document).encode(), as_json=True)

    @run
    @given(st.binary(max_size=256))
    def json_random(body: bytes) -> None:
        counted["json_random"] += 1
        decode_any(body, as_json=True)

    started = time.perf_counter()
    for prop in (protobuf_random, protobuf_mutated, json_documents, json_random):
        prop()
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = sum(counted.values())
    print(f"{total:,} cases in {elapsed:.0f}s, no failure; peak RSS {peak_mib:.0f} MiB")
    for name, n in counted.items():
        print(f"  {name:18s} {n:>8,}")
    write_results(
        "fuzz",
        {
            "cases": counted,
            "total": total,
            "seconds": round(elapsed, 1),
            "peak_rss_mib": round(peak_mib),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
