"""Decode + detect in one process: µs a span for the ingest benchmark's requests.

No receivers and no threads: what a code change costs the pipeline's two CPU-heavy steps.
To compare two versions, run it from each checkout (``PYTHONPATH=OTHER/src python
benchmarks/decode_detect.py``), alternating, a few times each.

Usage: python benchmarks/decode_detect.py [--requests 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

from ingest import build_request
from spanwatch.detect import Detector
from spanwatch.otlp import decode_protobuf


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bodies = [build_request(index=i) for i in range(args.requests)]
    best_decode = best_detect = float("inf")
    for _ in range(args.repeats):
        detector = Detector()
        began = time.process_time()
        batches = [decode_protobuf(body).batch for body in bodies]
        decoded = time.process_time()
        for batch in batches:
            detector.process(batch)
        detected = time.process_time()
        spans = sum(len(b) for b in batches)
        best_decode = min(best_decode, (decoded - began) / spans * 1e6)
        best_detect = min(best_detect, (detected - decoded) / spans * 1e6)
    print(
        f"decode {best_decode:.3f} µs a span, detect {best_detect:.3f} µs a span "
        f"(best of {args.repeats})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
