"""Faults in a real app, live: spanwatchd watching tests/app under load while faults come and go.

A real spanwatchd (no LLM, a fresh data directory) receives the spans of the three Flask
services of tests/app (``frontend`` → ``orders`` → ``inventory``, real OpenTelemetry
instrumentations, OTLP/gRPC from each service's BatchSpanProcessor) at ``--rate`` shop requests
a second, with probes. The schedule: healthy warm-up, ``keyerror`` (inventory fails a share of
its requests with a KeyError), healthy, ``slow_sql`` (inventory's statements take ``--ms``
longer), healthy. ``GET /api/incidents`` is polled every second; the timeline shows each fault
switched and each incident opened, changed (severity, pattern, root cause) or resolved.

The figures, per fault: the first incident naming the faulty service (as the incident's
service, its root cause, or one it spans) and the first whose root cause is that service (for
slow_sql also: a slow_dependency incident of that service, whose root is its database), in
seconds after the fault went on (when the poll first saw it), each shown as first seen; and
the false alarms: incidents opened in healthy periods (more than ``--grace`` seconds after a
fault ended; those within it are counted apart).

Usage: python benchmarks/app_faults.py [--semconv old|new] [--minutes-scale 1.0]
       [--warmup 180] [--fault-seconds 180] [--healthy-seconds 120] [--rate 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.app import FAULT_SERVICE, SEMCONV_MODES, Cluster, Load

from _common import daemon_command, free_port, write_results


@dataclass
class Phase:
    """``seconds`` of the app with ``fault`` on (``off``: healthy)."""

    fault: str
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)


def schedule(args: argparse.Namespace) -> list[Phase]:
    scale = args.minutes_scale
    fault, healthy = args.fault_seconds * scale, args.healthy_seconds * scale
    return [
        Phase("off", args.warmup * scale),
        Phase("keyerror", fault, {"share": args.share}),
        Phase("off", healthy),
        Phase("slow_sql", fault, {"ms": args.ms}),
        Phase("off", healthy),
    ]


def get_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_ready(http_url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"spanwatchd exited {proc.returncode}")
        try:
            get_json(f"{http_url}/readyz", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"spanwatchd not ready in {timeout} s")


def names(incident: dict[str, Any], service: str) -> bool:
    """Whether an incident names ``service``: its own, its root cause's or one it spans."""
    return service in (
        incident["service"],
        incident["root_cause"]["service"],
        *incident.get("services", []),
    )


def root_ok(incident: dict[str, Any], fault: str) -> bool:
    """Whether an incident's root cause is the fault's: the faulty service, or for slow_sql
    also a database that service calls (a slow_dependency incident on the service)."""
    service = FAULT_SERVICE[fault]
    if incident["root_cause"]["service"] == service:
        return True
    return (
        fault == "slow_sql"
        and incident["service"] == service
        and incident["pattern"] == "slow_dependency"
    )


def describe(incident: dict[str, Any]) -> str:
    root = incident["root_cause"]
    ev = incident["evidence"]
    unit = f" {ev['unit']}" if ev.get("unit") else ""
    return (
        f"{incident['id']} SEV{incident['severity']} {incident['pattern']} "
        f"on {incident['service']}/{incident['operation']} "
        f"root {root['service']}/{root['operation']}; "
        f"{ev['metric']} {ev['observed']:.4g}{unit} vs {ev['baseline']:.4g}{unit} "
        f"(peak {ev['peak']:.4g}, share {ev['share']:.2f}); {incident['summary']}"
    )


def fingerprint(incident: dict[str, Any]) -> tuple[Any, ...]:
    """What counts as a change worth a line: not every window's new figures."""
    root = incident["root_cause"]
    return (
        incident["status"],
        incident["severity"],
        incident["pattern"],
        root["service"],
        root["operation"],
        tuple(incident.get("services", [])),
    )


class Watcher:
    """Polls ``/api/incidents`` and prints what changed since the last poll."""

    def __init__(self, http_url: str, t0: float) -> None:
        self._url = f"{http_url}/api/incidents?limit=500"
        self._t0 = t0
        self.seen: dict[str, tuple[Any, ...]] = {}
        self.first_seen: dict[str, float] = {}
        self.first: dict[str, dict[str, Any]] = {}  # each incident as first seen
        self.latest: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []

    def now(self) -> float:
        return time.monotonic() - self._t0

    def say(self, text: str) -> None:
        print(f"[{self.now():7.1f}s] {text}", flush=True)

    def poll(self) -> None:
        try:
            incidents = get_json(self._url)["incidents"]
        except (OSError, ValueError) as exc:
            self.say(f"poll failed: {exc}")
            return
        for incident in reversed(incidents):  # oldest first
            key = incident["id"]
            print_ = fingerprint(incident)
            self.latest[key] = incident
            if key not in self.seen:
                self.first_seen[key] = self.now()
                self.first[key] = incident
                what = "opened" if incident["status"] == "open" else "opened+resolved"
            elif self.seen[key] != print_:
                what = "resolved" if incident["status"] == "resolved" else "updated"
            else:
                continue
            self.seen[key] = print_
            self.events.append({"t": round(self.now(), 1), "event": what, "incident": incident})
            self.say(f"incident {what}: {describe(incident)}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    phases = schedule(args)
    gport, hport = free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="spanwatch-app-faults-")
    env = {**os.environ, "SPANWATCH_LOG__LEVEL": "warning"}
    log_path = Path(data_dir) / "spanwatchd.log"
    log = log_path.open("wb")
    daemon = subprocess.Popen(
        daemon_command(gport, hport, "--data-dir", data_dir), env=env, stdout=log, stderr=log
    )
    http_url = f"http://127.0.0.1:{hport}"
    try:
        wait_ready(http_url, daemon)
        with Cluster(f"otlp:127.0.0.1:{gport}", args.semconv, seed=args.seed) as cluster:
            t0 = time.monotonic()
            watcher = Watcher(http_url, t0)
            watcher.say(
                f"spanwatchd {http_url}, app up ({args.semconv} conventions), "
                f"{args.rate:g} requests/s"
            )
            load = Load(cluster, args.rate, args.probe_every, args.seed).start()
            before: Counter[tuple[str, int]] = Counter()
            for phase in phases:
                cluster.set_fault(phase.fault, **phase.params)
                phase.started = watcher.now()
                if phase.fault == "off":
                    watcher.say(f"healthy for {phase.seconds:g} s")
                else:
                    detail = ", ".join(f"{k} {v}" for k, v in phase.params.items())
                    watcher.say(
                        f"fault {phase.fault} ON in {FAULT_SERVICE[phase.fault]} ({detail}) "
                        f"for {phase.seconds:g} s"
                    )
                end = time.monotonic() + phase.seconds
                while time.monotonic() < end:
                    watcher.poll()
                    time.sleep(max(0.0, min(args.poll, end - time.monotonic())))
                phase.ended = watcher.now()
                now_counts = load.snapshot()
                phase.answers = now_counts - before
                before = now_counts
                if phase.fault != "off":
                    watcher.say(f"fault {phase.fault} OFF")
            load.stop()
        # the last spans: the services flushed on stop; give the detector a poll to file them
        time.sleep(args.poll)
        watcher.poll()
        status = get_json(f"{http_url}/api/status")
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
        daemon_log = log_path.read_text(errors="replace")
        shutil.rmtree(data_dir, ignore_errors=True)
    return summarise(args, phases, watcher, status, daemon_log)


def summarise(
    args: argparse.Namespace,
    phases: list[Phase],
    watcher: Watcher,
    status: dict[str, Any],
    daemon_log: str,
) -> dict[str, Any]:
    def phase_at(t: float) -> Phase:
        for phase in phases:
            if phase.started <= t < phase.ended:
                return phase
        return phases[-1]

    faults: list[dict[str, Any]] = []
    for phase in phases:
        if phase.fault == "off":
            continue
        service = FAULT_SERVICE[phase.fault]
        during = [
            (t, watcher.first[i])
            for i, t in sorted(watcher.first_seen.items(), key=lambda kv: kv[1])
            if phase.started <= t < phase.ended + args.grace
        ]
        named = next(((t, inc) for t, inc in during if names(inc, service)), None)
        rooted = next(((t, inc) for t, inc in during if root_ok(inc, phase.fault)), None)
        answers = phase.answers
        failed = sum(n for (kind, code), n in answers.items() if kind != "probe" and code >= 500)
        total = sum(n for (kind, _), n in answers.items() if kind != "probe")
        faults.append(
            {
                "fault": phase.fault,
                "service": service,
                "params": phase.params,
                "on_s": round(phase.started, 1),
                "off_s": round(phase.ended, 1),
                "shop_requests": total,
                "shop_5xx": failed,
                "incidents_opened": len(during),
                "first_naming_service_s": None
                if named is None
                else round(named[0] - phase.started, 1),
                "first_naming_service": None if named is None else describe(named[1]),
                "first_root_cause_s": None
                if rooted is None
                else round(rooted[0] - phase.started, 1),
                "first_root_cause": None if rooted is None else describe(rooted[1]),
            }
        )
    false_alarms: list[dict[str, Any]] = []
    after_fault: list[dict[str, Any]] = []
    for incident_id, t in sorted(watcher.first_seen.items(), key=lambda kv: kv[1]):
        phase = phase_at(t)
        if phase.fault != "off":
            continue
        index = phases.index(phase)
        after = index > 0 and phases[index - 1].fault != "off" and t - phase.started < args.grace
        entry = {"t": round(t, 1), "incident": describe(watcher.first[incident_id])}
        (after_fault if after else false_alarms).append(entry)

    print()
    print(f"== summary ({args.semconv} conventions, {args.rate:g} requests/s)")
    for f in faults:
        print(
            f"{f['fault']:9s} in {f['service']}: {f['shop_5xx']}/{f['shop_requests']} shop "
            f"requests failed; {f['incidents_opened']} incident(s) opened"
        )
        print(f"  first naming {f['service']}: {_seconds(f['first_naming_service_s'])}")
        if f["first_naming_service"]:
            print(f"    {f['first_naming_service']}")
        print(f"  first with root cause {f['service']}: {_seconds(f['first_root_cause_s'])}")
        if f["first_root_cause"] and f["first_root_cause"] != f["first_naming_service"]:
            print(f"    {f['first_root_cause']}")
    print(f"false alarms in healthy periods: {len(false_alarms)}")
    for entry in false_alarms:
        print(f"  [{entry['t']:7.1f}s] {entry['incident']}")
    print(f"opened within {args.grace:g} s after a fault ended: {len(after_fault)}")
    for entry in after_fault:
        print(f"  [{entry['t']:7.1f}s] {entry['incident']}")
    errors = [line for line in daemon_log.splitlines() if '"error"' in line or "Traceback" in line]
    if errors:
        print(f"spanwatchd logged {len(errors)} error line(s), e.g. {errors[0][:300]}")
    return {
        "semconv": args.semconv,
        "rate": args.rate,
        "phases": [
            {"fault": p.fault, "on_s": round(p.started, 1), "off_s": round(p.ended, 1)}
            for p in phases
        ],
        "faults": faults,
        "false_alarms": false_alarms,
        "after_fault": after_fault,
        "timeline": [
            {"t": e["t"], "event": e["event"], "incident": describe(e["incident"])}
            for e in watcher.events
        ],
        "daemon_status": status,
    }


def _seconds(value: float | None) -> str:
    return "not detected" if value is None else f"{value:.1f} s after the fault went on"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--semconv", choices=SEMCONV_MODES, default="old")
    parser.add_argument("--rate", type=float, default=20, help="shop requests a second")
    parser.add_argument("--warmup", type=float, default=180, help="healthy seconds first")
    parser.add_argument("--fault-seconds", type=float, default=180)
    parser.add_argument("--healthy-seconds", type=float, default=120, help="after each fault")
    parser.add_argument("--minutes-scale", type=float, default=1.0, help="scales every phase")
    parser.add_argument("--share", type=float, default=0.4, help="of requests keyerror fails")
    parser.add_argument("--ms", type=int, default=200, help="slow_sql adds to each statement")
    parser.add_argument("--probe-every", type=float, default=5, help="seconds between probes")
    parser.add_argument("--poll", type=float, default=1, help="seconds between polls")
    parser.add_argument("--grace", type=float, default=30, help="seconds a fault's tail lasts")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    results = run(args)
    path = write_results(f"app_faults_{args.semconv}", results)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
