"""``spanwatch``: the sidecar command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from spanwatch import __version__
from spanwatch.config import ConfigError, load
from spanwatch.model import Pattern

from ._eval import evaluate
from ._simulate import SCENARIOS, simulate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spanwatch", description="spanwatch sidecar commands")
    parser.add_argument("--version", action="version", version=f"spanwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "config", help="validate a configuration and print the effective settings as JSON"
    )
    check.add_argument("--config", metavar="FILE", type=Path)

    sim = commands.add_parser("simulate", help="send simulated traffic with faults to a daemon")
    sim.add_argument(
        "--target",
        default="127.0.0.1:4317",
        metavar="H:P",
        help="the daemon's OTLP/gRPC address (default 127.0.0.1:4317)",
    )
    sim.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="event seconds per wall second; 0 sends as fast as possible",
    )
    sim.add_argument(
        "--scenario",
        default="demo",
        choices=SCENARIOS,
        help="healthy, demo (several faults in turn) or one pattern",
    )
    sim.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="event time to simulate (default: enough for the scenario)",
    )
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--rate", type=float, default=20.0, help="mean traces per second")
    sim.add_argument(
        "--token",
        default=os.environ.get("SPANWATCH_TOKEN", ""),
        help="bearer token (env SPANWATCH_TOKEN)",
    )

    ev = commands.add_parser("eval", help="score the detector on labelled simulated faults")
    ev.add_argument("--seeds", type=int, default=5, help="runs per pattern (default 5)")
    ev.add_argument("--patterns", default="", help="comma-separated patterns (default all)")
    ev.add_argument(
        "--healthy-hours",
        type=float,
        default=2.0,
        help="simulated healthy hours per seed (default 2)",
    )
    ev.add_argument("--json", action="store_true", help="print the scores as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "config":
        try:
            config = load(args.config)
        except ConfigError as exc:
            print(f"spanwatch: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True))
    elif args.command == "simulate":
        duration = args.duration
        if duration is None:
            duration = {"healthy": 3600.0, "demo": 2400.0}.get(args.scenario, 1500.0)
        return simulate(
            args.target, args.speed, args.scenario, duration, args.seed, args.rate, args.token
        )
    elif args.command == "eval":
        patterns = [Pattern(p) for p in args.patterns.split(",") if p] or None
        report = evaluate(range(args.seeds), patterns, args.healthy_hours * 3600)
        if args.json:
            print(json.dumps({"patterns": report.rows(), "totals": report.totals()}, indent=2))
        else:
            print(report.table())
    return 0
