"""The training commands (rate, stats, export, analyses) and how tail shows a message."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from spanwatch.errors import SpanwatchError
from spanwatch.store import split

DEFAULT_API = "http://127.0.0.1:4318"
DEFAULT_WS = "ws://127.0.0.1:8765/events"
_COLOURS = {1: "\033[1;97;41m", 2: "\033[1;30;43m", 3: "\033[33m", 4: "\033[36m", 5: "\033[2m"}
_RESET = "\033[0m"


class CliError(SpanwatchError):
    """Printed as ``spanwatch: <message>``, exit code 1."""


class Api:
    def __init__(self, base: str, token: str = "") -> None:
        self.base = base.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(
                f"cannot reach spanwatchd at {self.base} ({reason}); start it (make run) or "
                "point --api or SPANWATCH_API at it"
            ) from exc

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, raw = self.request(method, path, body)
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"error": raw.decode(errors="replace")}
        if status == 401:
            raise CliError(f"{self.base} wants a token: pass --token or set SPANWATCH_TOKEN")
        if status >= 400:
            raise CliError(str(payload.get("error", payload)))
        return payload


# -- rate ------------------------------------------------------------------------------------


def rate(
    api: Api, analysis_id: str, rating: str, correction: str | None, correction_file: Path | None
) -> int:
    if correction_file is not None:
        correction = correction_file.read_text(encoding="utf-8")
    if rating == "bad" and correction is None and sys.stdin.isatty() and sys.stdout.isatty():
        correction = _edit_correction(api, analysis_id)
    body: dict[str, Any] = {"analysis_id": analysis_id, "rating": rating}
    if correction:
        body["correction"] = correction
    recorded = api.json("POST", "/api/training/rate", body)["rating"]
    extra = " with a correction" if recorded["correction"] else ""
    print(f"recorded: {recorded['rating']} rating of {analysis_id}{extra}")
    return 0


def _edit_correction(api: Api, analysis_id: str) -> str:
    analysis = api.json("GET", f"/api/analyses/{urllib.parse.quote(analysis_id)}")
    template = "\n".join(
        [
            "",
            "# Write what the analysis should have said, above these lines.",
            "# Lines starting with # are ignored. The model wrote:",
            "#",
        ]
        + [f"# {line}" for line in analysis.get("text", "").splitlines()]
    )
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w+", suffix=".md", delete=False) as fh:
        fh.write(template)
        path = fh.name
    try:
        subprocess.run([*shlex.split(editor), path], check=True)
        text = Path(path).read_text(encoding="utf-8")
    finally:
        os.unlink(path)
    correction = "\n".join(line for line in text.splitlines() if not line.startswith("#")).strip()
    if not correction:
        raise CliError("no correction written: nothing recorded")
    return correction


# -- stats -----------------------------------------------------------------------------------


def stats(api: Api, as_json: bool) -> int:
    data = api.json("GET", "/api/training/stats")
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"rated analyses: {data['rated']}  (ratings recorded: {data['ratings']})")
    print(f"good: {data['good']}   bad: {data['bad']}   bad with a correction: {data['corrected']}")
    for title, table in (("pattern", data["by_pattern"]), ("model", data["by_model"])):
        if not table:
            continue
        width = max(len(title), *(len(k) for k in table))
        print()
        print(f"{title:<{width}}  {'rated':>5}  {'good':>5}  {'bad':>5}  {'corrected':>9}")
        for name, row in sorted(table.items()):
            print(
                f"{name:<{width}}  {row['rated']:>5}  {row['good']:>5}  {row['bad']:>5}  "
                f"{row['corrected']:>9}"
            )
    return 0


# -- export ----------------------------------------------------------------------------------


def export(api: Api, fmt: str, since: str | None, val_split: float, output: Path | None) -> int:
    query = {"format": fmt} | ({"since": since} if since else {})
    status, raw = api.request("GET", "/api/training/export?" + urllib.parse.urlencode(query))
    if status >= 400:
        raise CliError(json.loads(raw).get("error", raw.decode()))
    records = [json.loads(line) for line in raw.decode().splitlines() if line]
    if val_split and output is None:
        raise CliError("--val-split writes two files: give -o FILE")
    train, val = split(records, val_split)
    if output is None:
        sys.stdout.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train))
        return 0
    _write_jsonl(output, train)
    message = f"wrote {len(train)} {fmt} records to {output}"
    if val_split:
        val_path = output.with_name(f"{output.stem}.val{output.suffix or '.jsonl'}")
        _write_jsonl(val_path, val)
        message += f" and {len(val)} to {val_path}"
    print(message, file=sys.stderr)
    return 0


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    tmp.replace(path)


# -- analyses --------------------------------------------------------------------------------


def analyses_list(api: Api, limit: int) -> int:
    rows = api.json("GET", f"/api/analyses?limit={limit}")
    for row in rows:
        kind = "facts" if row["fallback"] else row["model"] or "-"
        preview = " ".join(row["preview"].split())[:70]
        print(
            f"{row['analysis_id']}  {row['status']:<9}  {kind:<14}  "
            f"{row['rating'] or 'unrated':<7}  {','.join(row['patterns']) or '-':<18}  {preview}"
        )
    return 0


def analyses_show(api: Api, analysis_id: str, as_json: bool) -> int:
    data = api.json("GET", f"/api/analyses/{urllib.parse.quote(analysis_id)}")
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    print(
        f"analysis {data['analysis_id']} ({data['status']}, "
        f"{'facts-only summary' if data['fallback'] else data['model']})"
    )
    for inc in data["incidents"]:
        root = inc.get("root_cause", {})
        print(
            f"  SEV{inc['severity']} {inc['pattern']} at {root.get('service')} "
            f"{root.get('operation')}  [{inc['id']}]"
        )
    print()
    print(data["text"] or data["reason"])
    for r in data["ratings"]:
        print(f"\nrated {r['rating']} at {r['rated_at']} by {r['rater'] or '?'}")
        if r["correction"]:
            print(f"correction: {r['correction']}")
    return 0


# -- tail ------------------------------------------------------------------------------------


def _show(message: dict[str, Any], colour: bool) -> None:
    kind = message["type"]
    out = sys.stdout
    if kind.startswith("incident."):
        inc = message["incident"]
        sev = int(inc["severity"])
        root = inc.get("root_cause", {})
        label = f" SEV{sev} "
        if colour:
            label = _COLOURS.get(sev, "") + label + _RESET
        verb = kind.split(".")[1]
        out.write(
            f"{label} {verb:<8} {inc['pattern']:<17} {root.get('service')} "
            f"{root.get('operation')}: {inc.get('summary', '')}\n"
        )
    elif kind == "analysis.started":
        who = "facts-only summary" if message.get("fallback") else message.get("model", "")
        out.write(
            f"\n── analysis {message['analysis_id']} ({who}) of "
            f"{', '.join(message.get('incident_ids', []))}\n"
        )
    elif kind == "analysis.token":
        out.write(message.get("text", ""))
    elif kind == "analysis.retry":
        out.write("\n(the model is asked again)\n")
    elif kind == "analysis.completed":
        if message.get("fallback"):
            out.write(message.get("text", ""))
        out.write("\n──\n")
    elif kind == "analysis.failed":
        out.write(f"\n── analysis failed: {message.get('reason')}\n")
    elif kind == "rating.recorded":
        rated = message["rating"]
        out.write(f"rated {rated['rating']}: {message['analysis_id']}\n")
    out.flush()
