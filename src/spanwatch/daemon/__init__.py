"""``spanwatchd``: the daemon's command line, signals and systemd integration."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from spanwatch import __version__
from spanwatch.config import Config, ConfigError, load

from . import _logging, _systemd
from ._app import Daemon
from ._pipeline import Pipeline, Stage

__all__ = ["Daemon", "Pipeline", "Stage", "main", "run"]

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2

log = structlog.get_logger("spanwatch.daemon")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spanwatchd",
        description="Receive OTLP traces, detect anomalies, explain them.",
    )
    parser.add_argument("--config", metavar="FILE", type=Path, help="TOML configuration file")
    parser.add_argument("--grpc-listen", metavar="H:P", help="OTLP/gRPC (default 127.0.0.1:4317)")
    parser.add_argument("--http-listen", metavar="H:P", help="OTLP/HTTP (default 127.0.0.1:4318)")
    parser.add_argument("--ws-listen", metavar="H:P", help="WebSocket (default 127.0.0.1:8765)")
    parser.add_argument("--data-dir", metavar="DIR", help="state directory (./spanwatch-data)")
    parser.add_argument("--no-llm", action="store_true", help="run everything but the LLM stage")
    parser.add_argument("--version", action="version", version=f"spanwatchd {__version__}")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    for flag, key in (
        ("grpc_listen", "receiver.grpc_listen"),
        ("http_listen", "receiver.http_listen"),
        ("ws_listen", "publish.ws_listen"),
        ("data_dir", "storage.data_dir"),
    ):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.no_llm:
        overrides["analysis.enabled"] = False
    return load(args.config, overrides=overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"spanwatchd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _logging.configure(config.log)
    try:
        return asyncio.run(run(config, reload_from=args))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return EXIT_FAILURE


async def run(config: Config, reload_from: argparse.Namespace | None = None) -> int:
    """Run a daemon until SIGTERM or SIGINT; returns the process exit code."""
    daemon = Daemon(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if reload_from is not None:
        loop.add_signal_handler(signal.SIGHUP, _reload, daemon, reload_from)
    try:
        await daemon.start()
    except OSError as exc:
        # One line that says what to change, before the log's account of the shutdown.
        print(f"spanwatchd: {exc}", file=sys.stderr, flush=True)
        log.error("cannot start", error=str(exc))
        await daemon.stop()
        return EXIT_FAILURE
    # What exists once the daemon has started (modules, configuration, a restored detector)
    # lives as long as the process: out of the cycle collector's full passes, which otherwise
    # walk it all and pause detection for tens of milliseconds (docs/performance.md).
    gc.freeze()
    _systemd.ready(f"receiving on :{daemon.grpc_port} and :{daemon.http_port}")
    watchdog = asyncio.create_task(_watchdog(), name="spanwatch-watchdog")
    await stop.wait()
    watchdog.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watchdog
    await daemon.stop()
    return EXIT_OK


def _reload(daemon: Daemon, args: argparse.Namespace) -> None:
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        log.error("reload refused, keeping the running configuration", error=str(exc))
        return
    _logging.configure(config.log)
    daemon.reload(config)


async def _watchdog() -> None:
    # Pinged from the event loop on purpose: a wedged loop stops the pings and systemd restarts us.
    interval = _systemd.watchdog_interval()
    if interval is None:
        return
    while True:
        _systemd.watchdog_ping()
        await asyncio.sleep(interval)
