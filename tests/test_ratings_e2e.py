"""Ratings end to end: a running daemon, a model behind it, the CLI, REST and the page's path."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from spanwatch.analyze.testing import OllamaServer
from tests.conftest import DaemonProcess, simulate
from tests.otlp_client import http_request

TOKENS = ["Payments ", "is ", "failing."]


@pytest.fixture
def ollama() -> Iterator[OllamaServer]:
    server = OllamaServer([("ok", TOKENS)])
    yield server
    server.close()


def cli(proc: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spanwatch.cli", "--api", proc.http_url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _start(daemon_process: Callable[..., DaemonProcess], ollama: OllamaServer) -> DaemonProcess:
    return daemon_process(
        env={"SPANWATCH_LLM__HOST": ollama.host, "SPANWATCH_ANALYSIS__BATCH_WINDOW": "200ms"}
    )


def _analysis_id(proc: DaemonProcess) -> str:
    """Feed an error burst through the daemon and wait for its finished analysis."""
    simulate(proc, "error_burst", 700)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{proc.http_url}/api/analyses") as resp:
            done = [a for a in json.loads(resp.read()) if a["status"] == "completed"]
        if done:
            return str(done[0]["analysis_id"])
        time.sleep(0.2)
    raise AssertionError(f"no analysis finished: {proc.log()[-2000:]}")


def _post_rating(proc: DaemonProcess, body: Any) -> tuple[int, dict[str, Any]]:
    answer = http_request(
        f"{proc.http_url}/api/training/rate", json.dumps(body).encode(), "application/json"
    )
    return answer.status, json.loads(answer.body)


def test_ratings_from_every_path_survive_kill_9(
    daemon_process: Callable[..., DaemonProcess], ollama: OllamaServer
) -> None:
    """CLI, REST and WebSocket ratings, many at once, are all there after kill -9 and restart."""
    proc = _start(daemon_process, ollama)
    proc.wait_ready()
    analysis_id = _analysis_id(proc)

    done = cli(
        proc,
        "rate",
        analysis_id,
        "bad",
        "--correction",
        "The payments database ran out of connections.",
    )
    assert done.returncode == 0, done.stderr
    assert f"recorded: bad rating of {analysis_id} with a correction" in done.stdout

    assert _post_rating(proc, {"analysis_id": analysis_id, "rating": "good"})[0] == 200

    async def over_websocket() -> dict[str, Any]:
        async with connect(f"ws://127.0.0.1:{proc.ws_port}/events") as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "rate",
                        "request_id": "w",
                        "rating": "bad",
                        "analysis_id": analysis_id,
                        "correction": "from the page",
                    }
                )
            )
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if reply["type"].startswith("rate."):
                    return dict(reply)

    assert asyncio.run(over_websocket())["type"] == "rate.ok"

    with ThreadPoolExecutor(10) as pool:  # many raters at once
        statuses = list(
            pool.map(
                lambda n: _post_rating(
                    proc,
                    {
                        "analysis_id": analysis_id,
                        "rating": "good" if n % 2 else "bad",
                        "correction": "" if n % 2 else f"fix {n}",
                    },
                )[0],
                range(20),
            )
        )
    assert statuses == [200] * 20

    proc.proc.send_signal(signal.SIGKILL)  # right after the last acknowledgement
    proc.proc.wait(10)
    again = _start(daemon_process, ollama)
    again.wait_ready()
    with urllib.request.urlopen(f"{again.http_url}/api/training/stats") as resp:
        stats = json.loads(resp.read())
    assert stats["ratings"] == 23
    with urllib.request.urlopen(f"{again.http_url}/api/analyses/{analysis_id}") as resp:
        ratings = json.loads(resp.read())["ratings"]
    assert [r["rater"].split(":")[0] for r in ratings[:3]] == ["rest", "rest", "ws"]
    assert ratings[0]["correction"] == "The payments database ran out of connections."


def test_clear_errors(daemon_process: Callable[..., DaemonProcess], ollama: OllamaServer) -> None:
    """Unknown analysis: 404 and CLI exit 1 naming it; bad rating or body: 400."""
    proc = _start(daemon_process, ollama)
    proc.wait_ready()
    missing = cli(proc, "rate", "an-nope", "good")
    assert missing.returncode == 1
    assert "no finished analysis with id 'an-nope'" in missing.stderr
    status, body = _post_rating(proc, {"analysis_id": "an-nope", "rating": "good"})
    assert status == 404 and "an-nope" in body["error"]
    status, body = _post_rating(proc, {"analysis_id": "an-nope", "rating": "meh"})
    assert status == 400 and "rating must be 'good' or 'bad'" in body["error"]
    answer = http_request(f"{proc.http_url}/api/training/rate", b"{not json", "application/json")
    assert answer.status == 400
    answer = http_request(f"{proc.http_url}/api/training/export?format=csv", method="GET")
    assert answer.status == 400 and b"seed, chat, alpaca, dpo" in answer.body
    assert cli(proc, "analyses", "show", "an-nope").returncode == 1


def test_stats_and_every_export_format_from_the_cli(
    daemon_process: Callable[..., DaemonProcess], ollama: OllamaServer, tmp_path: Path
) -> None:
    """stats prints tables; export writes each format, and a validation split, line by line."""
    proc = _start(daemon_process, ollama)
    proc.wait_ready()
    analysis_id = _analysis_id(proc)
    assert cli(proc, "rate", analysis_id, "bad", "--correction", "Use the pool.").returncode == 0
    stats = cli(proc, "stats")
    assert stats.returncode == 0
    assert "rated analyses: 1" in stats.stdout and "error_burst" in stats.stdout
    assert "llama3.2:1b" in stats.stdout
    required = {
        "seed": {"prompt", "completion", "original_completion", "rating"},
        "chat": {"messages"},
        "alpaca": {"instruction", "input", "output"},
        "dpo": {"prompt", "chosen", "rejected"},
    }
    for fmt, keys in required.items():
        out = tmp_path / f"{fmt}.jsonl"
        done = cli(proc, "export", "--format", fmt, "-o", str(out))
        assert done.returncode == 0, done.stderr
        (line,) = out.read_text().splitlines()
        record = json.loads(line)
        assert keys <= set(record)
        assert "Use the pool." in json.dumps(record)
        if fmt == "seed":
            assert record["completion"] == "Use the pool."
            assert record["original_completion"] == "".join(TOKENS)
        elif fmt == "dpo":
            assert (record["chosen"], record["rejected"]) == ("Use the pool.", "".join(TOKENS))
        elif fmt == "alpaca":
            assert record["output"] == "Use the pool." and "Incident 1 of 1" in record["input"]
    chat = json.loads((tmp_path / "chat.jsonl").read_text())
    assert chat["messages"][2] == {"role": "assistant", "content": "Use the pool."}
    split = cli(
        proc,
        "export",
        "--format",
        "seed",
        "--val-split",
        "0.5",
        "-o",
        str(tmp_path / "train.jsonl"),
    )
    assert split.returncode == 0
    assert (tmp_path / "train.val.jsonl").exists()
    listed = cli(proc, "analyses", "list")
    assert analysis_id in listed.stdout and "bad" in listed.stdout
    shown = cli(proc, "analyses", "show", analysis_id)
    assert "".join(TOKENS) in shown.stdout and "correction: Use the pool." in shown.stdout


def test_cli_says_where_it_looked_when_the_daemon_is_down(tmp_path: Path) -> None:
    """An unreachable daemon: the address tried and how to change it."""
    done = subprocess.run(
        [sys.executable, "-m", "spanwatch.cli", "--api", "http://127.0.0.1:9", "stats"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "cannot reach spanwatchd at http://127.0.0.1:9" in done.stderr
    assert "SPANWATCH_API" in done.stderr
