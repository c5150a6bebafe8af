"""``spanwatch``: the sidecar command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from spanwatch import __version__
from spanwatch.config import ConfigError, load


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spanwatch", description="spanwatch sidecar commands")
    parser.add_argument("--version", action="version", version=f"spanwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "config", help="validate a configuration and print the effective settings as JSON"
    )
    check.add_argument("--config", metavar="FILE", type=Path)
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
    return 0
