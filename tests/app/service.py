"""One service of the app in this process: ``python -m tests.app.service NAME --export SPEC``.

The database is created and seeded before the instrumentations are on, so its setup makes no
spans. Once listening it prints ``ready PORT`` on stdout; SIGTERM stops it after its spans are
flushed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
from werkzeug.serving import make_server

from tests.app import _services, _telemetry

SERVICES = ("frontend", "orders", "inventory")
# control requests are not the app's traffic: no spans for them
EXCLUDED_URLS = "/_fault"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=SERVICES)
    parser.add_argument("--export", required=True, help="otlp:HOST:PORT or file:PATH")
    parser.add_argument("--db", type=Path, help="the SQLite file (orders, inventory)")
    parser.add_argument("--downstream", default="", help="the URL of the service it calls")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="of the keyerror fault's draws")
    args = parser.parse_args(argv)

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    faults = _services.FaultSwitch(args.seed)
    if args.name == "inventory":
        _services.seed_inventory(args.db)
    elif args.name == "orders":
        _services.seed_orders(args.db)

    provider = _telemetry.setup(args.name, _telemetry.make_exporter(args.export))
    RequestsInstrumentor().instrument()
    SQLite3Instrumentor().instrument()
    if args.name == "inventory":
        app = _services.inventory_app(args.db, faults)
    elif args.name == "orders":
        app = _services.orders_app(args.db, args.downstream, faults)
    else:
        app = _services.frontend_app(args.downstream, faults)
    FlaskInstrumentor().instrument_app(app, excluded_urls=EXCLUDED_URLS)  # type: ignore[no-untyped-call]

    server = make_server("127.0.0.1", args.port, app, threaded=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return: not from the thread that runs it
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"ready {server.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
