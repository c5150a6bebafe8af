"""The operator's commands: ``incidents`` (the store's history) and ``tail`` (the live stream)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from spanwatch.publish import describe_evidence

from ._training import Api, CliError, _show

TAIL_ATTEMPTS = 5


# -- incidents -------------------------------------------------------------------------------


def incidents(api: Api, filters: dict[str, Any], limit: int, as_json: bool) -> int:
    """The store's incidents, newest first; ``filters`` as GET /api/incidents takes them."""
    query: dict[str, Any] = {"limit": min(limit, 500)}
    query.update({k: v for k, v in filters.items() if v})
    found: list[dict[str, Any]] = []
    cursor = None
    while len(found) < limit:
        page = api.json(
            "GET",
            "/api/incidents?"
            + urllib.parse.urlencode({**query, **({"cursor": cursor} if cursor else {})}),
        )
        found += page["incidents"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    found = found[:limit]
    if as_json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no incidents" + (" match" if len(query) > 1 else " recorded yet"))
        return 0
    now = time.time()
    for inc in found:
        root = inc.get("root_cause") or {}
        where = f"{inc.get('service', '')} {inc.get('operation', '')}"
        cause = f"{root.get('service', '')} {root.get('operation', '')}"
        scope = "/".join(x for x in (inc.get("namespace"), inc.get("environment")) if x)
        print(
            f"SEV{inc['severity']}  {inc.get('status', 'open'):<8}  {inc['pattern']:<17}  "
            f"{where[:40]:<40}  {ago(inc.get('detected_at', ''), now):>11}  {inc['id']}"
        )
        details = [f"root cause: {cause}"] if cause.strip() and cause != where else []
        evidence = describe_evidence(inc.get("evidence") or {})
        if evidence:
            details.append(evidence)
        if scope:
            details.append(scope)
        if details:
            print("      " + "; ".join(details))
    return 0


def ago(stamp: str, now: float) -> str:
    """``3 min ago`` for an RFC 3339 time (event time, so it may also be ahead)."""
    try:
        head = stamp.rstrip("Z").partition(".")[0]
        moment = datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return stamp
    delta = now - moment
    later = delta < 0
    delta = abs(delta)
    if delta < 60:
        text = f"{delta:.0f} s"
    elif delta < 3600:
        text = f"{delta / 60:.0f} min"
    elif delta < 86400:
        text = f"{delta / 3600:.0f} h"
    else:
        text = f"{delta / 86400:.0f} d"
    return f"in {text}" if later else f"{text} ago"


# -- tail ------------------------------------------------------------------------------------


def tail(ws_url: str, token: str, min_severity: int | None, once: bool, follow: bool) -> int:
    """Follow the stream. Without ``follow``, give up after a few failed connections in a row."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_tail(ws_url, token, min_severity, once, follow))
    return 0


async def _tail(
    ws_url: str, token: str, min_severity: int | None, once: bool, follow: bool
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

    colour = sys.stdout.isatty()
    last_seq: int | None = None
    delay = 0.5
    failures = 0
    while True:
        query: dict[str, Any] = {}
        if last_seq is not None:
            query["since"] = last_seq
        if min_severity:
            query["min_severity"] = min_severity
        if token:
            query["token"] = token
        url = ws_url + ("?" + urllib.parse.urlencode(query) if query else "")
        try:
            async with connect(url, open_timeout=10) as ws:
                delay, failures = 0.5, 0
                async for raw in ws:
                    message = json.loads(raw)
                    if isinstance(message.get("seq"), int) and message["type"] not in (
                        "rate.ok",
                        "rate.error",
                        "pong",
                        "replay.gap",
                    ):
                        if last_seq is not None and message["seq"] <= last_seq:
                            continue
                        last_seq = message["seq"]
                    _show(message, colour)
                    if once and message["type"] in ("analysis.completed", "analysis.failed"):
                        return
            why = "the daemon closed the connection"
        except InvalidStatus as exc:
            status = exc.response.status_code
            hint = ": pass --token or set SPANWATCH_TOKEN" if status == 401 else ""
            raise CliError(f"{ws_url} refused the subscription (HTTP {status}){hint}") from exc
        except InvalidURI as exc:
            raise CliError(f"{ws_url} is not a WebSocket URL (ws://HOST:PORT/events)") from exc
        except ConnectionClosed as exc:
            why = f"the connection was closed ({exc})"
        except (OSError, TimeoutError) as exc:
            why = _reason(exc)
        failures += 1
        if not follow and failures >= TAIL_ATTEMPTS:
            raise CliError(
                f"cannot connect to {ws_url}: {why}, {failures} times in a row; start the "
                "daemon (make run), point --ws or SPANWATCH_WS at it, or pass --follow to keep "
                "trying"
            )
        left = "" if follow else f"; attempt {failures + 1} of {TAIL_ATTEMPTS}"
        print(
            f"(cannot connect to {ws_url}: {why}; retrying in {delay:g} s{left})", file=sys.stderr
        )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
