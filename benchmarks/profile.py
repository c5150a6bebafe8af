"""Where the daemon's CPU goes: py-spy samples spanwatchd under the ingest benchmark's load.

Writes benchmarks/results/profile.svg (a flame graph) and profile.txt (the functions with the
largest share of samples, inclusive and self). py-spy attaches with ptrace: run it as root or
where ptrace is allowed.

Usage: python benchmarks/profile.py [--requests 60]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from _common import RESULTS, daemon_command, free_port
from ingest import build_request, client, daemon_settler, wait_port

CLIENTS = 3


def summarize(raw: Path, top: int = 25) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples", "", "inclusive:"]
    skip = ("threading.py", "runpy", "asyncio/runners.py", "__main__.py", "thread (")
    lines += [
        f"  {n / total:6.1%}  {frame}"
        for frame, n in inclusive.most_common(top * 2)
        if not any(s in frame for s in skip)
    ][:top]
    lines += ["", "self:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=60, help="8192-span requests in all")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    bodies = [build_request(index=i) for i in range(args.requests)]
    gport, hport = free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="spanwatch-profile-")
    env = {**os.environ, "SPANWATCH_LOG__LEVEL": "warning"}
    daemon = subprocess.Popen(daemon_command(gport, hport, "--data-dir", data_dir), env=env)
    RESULTS.mkdir(exist_ok=True)
    raw = Path(data_dir) / "profile.raw"
    try:
        wait_port(gport)
        spies = [
            subprocess.Popen(
                [py_spy, "record", "-p", str(daemon.pid), "-r", "200", "-o", str(out), *fmt],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for out, fmt in ((raw, ["--format", "raw"]), (RESULTS / "profile.svg", []))
        ]
        queue: multiprocessing.Queue = multiprocessing.Queue()
        workers = [
            multiprocessing.Process(
                target=client, args=(f"127.0.0.1:{gport}", bodies[c::CLIENTS], queue)
            )
            for c in range(CLIENTS)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        daemon_settler(hport)()
        for spy in spies:
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            spy.wait(60)
        summary = summarize(raw)
    finally:
        daemon.terminate()
        daemon.wait(30)
    (RESULTS / "profile.txt").write_text(summary)
    print(summary)
    shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
