"""The benchmark suite's summary: one table (summary.md) and plots (PNG) from results/*.json.

Run by ``make bench`` after the benchmarks; it only reads what they wrote, so it can be rerun
alone: python benchmarks/report.py
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from _common import RESULTS


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def ingest_rows(data: dict[str, Any]) -> list[str]:
    median = data["median_spans_per_cpu_s"]
    fields = median["reference-fields"]
    rows = [
        f"| ingest: {name} | {value:,.0f} spans/CPU-s | {value / fields:.2f}× reference-fields |"
        for name, value in median.items()
    ]
    fig, ax = plt.subplots(figsize=(7, 3))
    names = list(median)
    ax.barh(names, [median[n] for n in names], color=["#999", "#777", "#2a6"][: len(names)])
    ax.set_xlabel("spans per CPU-second of the receiver (median of rounds)")
    ax.set_title("Ingest: 8192-span OTLP/gRPC requests from 3 clients")
    ax.invert_yaxis()
    save(fig, "ingest.png")
    return rows


def memory_rows(data: dict[str, Any]) -> list[str]:
    points = sorted(data["rows"], key=lambda r: r["keys"])
    rows = [
        f"| memory: {r['keys']:,} active keys | {r['rss_mib']:.0f} MiB RSS in all "
        f"(detector +{r['rss_growth_mib']:.0f} MiB) | {r['bytes_per_key']:,.0f} bytes per key |"
        for r in points
    ]
    keys = [r["keys"] for r in points]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(keys, [r["rss_mib"] for r in points], "o-", color="#2a6", label="process RSS")
    ax.plot(keys, [r["rss_growth_mib"] for r in points], "o--", color="#6a6", label="detector")
    ax.axhline(300, color="#c33", linestyle="--", label="target: 300 MiB at 100,000 keys")
    ax.set_xlabel("active (service, operation) keys")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_title("Detector memory against active keys")
    ax.legend()
    save(fig, "memory.png")
    return rows


def latency_rows(data: dict[str, Any]) -> list[str]:
    rows = []
    fig, ax = plt.subplots(figsize=(7, 3))
    styles = iter(["-", "--", ":", "-."])
    for size, result in data["request_spans"].items():
        style = next(styles, "-")
        for name, r in result["rows"].items():
            rows.append(
                f"| detection latency, {int(size):,}-span requests: {name} | "
                f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms | "
                + (f"p99 {result['p99_ratio']:.1f}× reference |" if name != "reference" else "|")
            )
            lags = sorted(result["lags_ms"][name])
            ax.plot(
                lags,
                [(i + 1) / len(lags) for i in range(len(lags))],
                style,
                color="#777" if name == "reference" else "#2a6",
                label=f"{name}, {int(size):,} spans",
            )
    ax.axvline(100, color="#c33", linestyle="--", label="target p99: 100 ms")
    ax.set_xlabel("ms from the Export that closes the window")
    ax.set_ylabel("fraction of incidents")
    ax.set_title("Export → incident.opened on the WebSocket")
    ax.legend(fontsize=7)
    save(fig, "latency.png")
    return rows


def fanout_rows(data: dict[str, Any]) -> list[str]:
    results = data["results"]
    rows = [
        f"| fan-out ({data['subscribers']} subscribers, {data['rate']} msg/s): {name} | "
        f"p50 {r['p50_ms']:.1f} ms | p99 {r['p99_ms']:.1f} ms |"
        for name, r in results.items()
    ]
    fig, ax = plt.subplots(figsize=(7, 3))
    names = list(results)
    for offset, (q, color) in enumerate((("p50_ms", "#999"), ("p99_ms", "#2a6"))):
        ax.bar(
            [i + offset * 0.4 for i in range(len(names))],
            [results[n][q] for n in names],
            width=0.4,
            color=color,
            label=q.split("_")[0],
        )
    ax.set_xticks([i + 0.2 for i in range(len(names))], names)
    ax.set_ylabel("lag (ms)")
    ax.set_title("WebSocket fan-out lag")
    ax.legend()
    save(fig, "fanout.png")
    return rows


def llm_rows(data: dict[str, Any]) -> list[str]:
    return [
        f"| LLM tokens: ollama client alone | p50 {data['reference_p50_ms']:.2f} ms | "
        f"p99 {data['reference_p99_ms']:.2f} ms |",
        f"| LLM tokens: through the daemon to a subscriber | p50 {data['spanwatch_p50_ms']:.2f} ms "
        f"| p99 {data['spanwatch_p99_ms']:.2f} ms |",
    ]


def save(fig: Any, name: str) -> None:
    fig.tight_layout()
    fig.savefig(RESULTS / name, dpi=100)
    plt.close(fig)


def main() -> int:
    lines = ["| benchmark | figure | against the reference |", "| --- | ---: | ---: |"]
    for name, rows in (
        ("ingest", ingest_rows),
        ("memory", memory_rows),
        ("latency", latency_rows),
        ("fanout", fanout_rows),
        ("llm_tokens", llm_rows),
    ):
        data = load(name)
        if data is None:
            print(f"no results/{name}.json: run benchmarks/{name}.py", file=sys.stderr)
            continue
        lines += rows(data)
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten: {RESULTS / 'summary.md'} and the plots beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
