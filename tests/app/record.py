"""Re-record ``tests/fixtures/app/``: ``python -m tests.app.record [--out DIR]``.

For each semconv mode (old, new) the app runs :data:`tests.app.SCRIPT` (healthy requests,
probes, each fault on for a few requests) with every service writing what its SDK exports as
OTLP/JSON lines; the three services' lines are merged in time order into ``<mode>.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.app._cluster import ROOT, SEMCONV_MODES, Cluster
from tests.app._load import run_script

FIXTURES = ROOT / "tests" / "fixtures" / "app"
SERVICES = ("frontend", "orders", "inventory")
# a batch every 250 ms instead of the SDK's 5 s: the script takes a few seconds, and a fixture
# of a few requests a service reads more like a stream than one of a single request each
ENV = {"OTEL_BSP_SCHEDULE_DELAY": "250"}


def _first_start(line: str) -> int:
    document = json.loads(line)
    return min(
        int(span["startTimeUnixNano"])
        for resource_spans in document["resourceSpans"]
        for scope_spans in resource_spans["scopeSpans"]
        for span in scope_spans["spans"]
    )


def record(mode: str, out: Path) -> list[str]:
    """Run the script in semconv ``mode``; the export requests, one OTLP/JSON line each."""
    with tempfile.TemporaryDirectory(prefix="spanwatch-record-") as tmp:
        files = {name: Path(tmp) / f"{name}.jsonl" for name in SERVICES}
        with Cluster(
            {name: f"file:{path}" for name, path in files.items()}, mode, env=ENV
        ) as cluster:
            counts = run_script(cluster)
        lines = [line for path in files.values() for line in path.read_text().splitlines()]
    lines.sort(key=_first_start)
    out.write_text("".join(line + "\n" for line in lines))
    summary = ", ".join(f"{kind} {status}: {n}" for (kind, status), n in sorted(counts.items()))
    print(f"{out}: {len(lines)} requests, {out.stat().st_size} bytes ({summary})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=FIXTURES)
    parser.add_argument("--semconv", choices=SEMCONV_MODES, action="append")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for mode in args.semconv or SEMCONV_MODES:
        record(mode, args.out / f"{mode}.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
