"""Run the app against an OTLP/gRPC receiver, under load and probes:
``python -m tests.app --target HOST:PORT [--semconv old|new] [--rate 20] [--duration S]
[--fault KIND [--share 0.4] [--ms 200]]``.

Prints the answers frontend gave, by request kind and HTTP status, when done.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

from tests.app._cluster import SEMCONV_MODES, Cluster
from tests.app._load import Load
from tests.app._services import FAULT_KINDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="OTLP/gRPC receiver, HOST:PORT")
    parser.add_argument("--semconv", choices=SEMCONV_MODES, default="old")
    parser.add_argument("--rate", type=float, default=20, help="shop requests a second")
    parser.add_argument("--duration", type=float, default=60, help="seconds")
    parser.add_argument("--probe-every", type=float, default=5, help="seconds between probes")
    parser.add_argument("--fault", choices=FAULT_KINDS, default="off")
    parser.add_argument("--share", type=float, default=0.4, help="of requests keyerror hits")
    parser.add_argument("--ms", type=int, default=200, help="that slow_sql / slow_http add")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    with Cluster(f"otlp:{args.target}", args.semconv, seed=args.seed) as cluster:
        print(f"app up ({args.semconv} conventions): {cluster.urls}", flush=True)
        if args.fault != "off":
            cluster.set_fault(args.fault, share=args.share, ms=args.ms)
        load = Load(cluster, args.rate, args.probe_every, args.seed).start()
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the run early
            time.sleep(args.duration)
        counts = load.stop()
    for (kind, status), n in sorted(counts.items()):
        print(f"{kind:12s} {status:3d} {n:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
