"""``spanwatch eval llm``: a model's write-ups scored on incidents with known truth.

The cases: labelled simulated faults (each run through a fresh detector, as ``spanwatch eval``
does; the incident it opens is the one explained, the fault's label the truth), and the
operators' rated analyses (a ``seed`` export, or those rated since a date, read from the
daemon): their stored prompts, incidents, and the corrected or good answers. The models: the
facts-only summary, Ollama models by name, and a GGUF with and without a LoRA adapter in
llama.cpp, all on the same cases. Scores in ``spanwatch.analyze._evaluate``.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spanwatch.detect import Detector
from spanwatch.model import Pattern
from spanwatch.sim import TOPOLOGIES, Fault, Simulator

from ._eval import DURATIONS, FAULT_S, GRACE_NS, TOPOLOGY_TARGETS, WARMUP_S, _parse_ns
from ._training import Api, CliError

if TYPE_CHECKING:
    from spanwatch.analyze import _evaluate as ev

MAX_TOKENS = 512  # spanwatch.analyze._evaluate.MAX_TOKENS, without importing it for --help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``spanwatch eval llm`` (``spanwatch eval`` alone scores the detector)."""
    parser.add_argument(
        "what",
        nargs="?",
        choices=["detector", "llm"],
        default="detector",
        help="detector (default): the detector on labelled faults; llm: a model's write-ups",
    )
    group = parser.add_argument_group("eval llm")
    group.add_argument(
        "--model", action="append", default=[], metavar="NAME", help="an Ollama model (repeat)"
    )
    group.add_argument(
        "--host",
        default="",
        metavar="URL",
        help="Ollama (default: llm.host of the configuration, else OLLAMA_HOST)",
    )
    group.add_argument("--gguf", type=Path, metavar="FILE", help="a GGUF model for llama.cpp")
    group.add_argument(
        "--adapter",
        type=Path,
        metavar="FILE",
        help="a LoRA adapter GGUF: the GGUF is scored without it and with it",
    )
    group.add_argument("--facts-only", action="store_true", help="score the facts-only summary too")
    group.add_argument(
        "--sim",
        type=int,
        default=1,
        metavar="N",
        help="simulated faults per pattern (default 1; 0 for none)",
    )
    group.add_argument("--rated", type=Path, metavar="FILE", help="a seed export of ratings")
    group.add_argument(
        "--since",
        metavar="DATE",
        help="the analyses rated since DATE, read from the daemon (--api): held out by date",
    )
    group.add_argument("--max-tokens", type=int, default=MAX_TOKENS, metavar="N")
    group.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="add the scores to this JSON file (e.g. a run's train_report.json) as eval_llm",
    )
    group.add_argument(
        "--rows", type=Path, metavar="FILE", help="write every case's result here (JSONL)"
    )


def sim_cases(seeds: int, patterns: list[str] | None, topology: str = "shop") -> list[ev.Case]:
    """One case per simulated fault the detector opened an incident for."""
    from spanwatch.analyze import _evaluate as ev

    targets = TOPOLOGY_TARGETS[topology]
    kinds = patterns or [p.value for p in Pattern if p.value in targets]
    cases = []
    for kind in kinds:
        pattern = Pattern(kind)
        for seed in range(seeds):
            service, operation, magnitude = targets[kind][seed % len(targets[kind])]
            duration = DURATIONS.get(pattern, FAULT_S)
            fault = Fault(pattern, service, operation, WARMUP_S, duration, magnitude)
            sim = Simulator(TOPOLOGIES[topology](), seed=seed, faults=(fault,))
            (label,) = sim.labels
            incident = _first_incident(sim, WARMUP_S + duration + 300, label)
            if incident is None:
                continue
            truth = (label.root_cause.service, label.root_cause.operation)
            if pattern is Pattern.SLOW_DEPENDENCY:
                truth = (truth[0], "")  # a dependency is named by itself
            cases.append(ev.case_from_incidents(f"sim:{kind}:{seed}", [incident], truth))
    return cases


def _first_incident(sim: Simulator, seconds: float, label: Any) -> dict[str, Any] | None:
    """The first incident opened during the fault (its latest state), preferring one that
    names the fault's root cause or pattern."""
    detector = Detector()
    seen: dict[str, dict[str, Any]] = {}
    for batch in sim.batches(seconds):
        for event in detector.process(batch):
            if event.type in ("incident.opened", "incident.updated"):
                inc = event.fields["incident"]
                seen[inc["id"]] = inc
    start, end = label.start_ns, label.end_ns + GRACE_NS

    def when(inc: dict[str, Any]) -> int:
        return _parse_ns(inc["detected_at"])

    during = sorted((i for i in seen.values() if start <= when(i) <= end), key=when)
    root = (label.root_cause.service, label.root_cause.operation)
    for inc in during:
        named = (inc["root_cause"]["service"], inc["root_cause"]["operation"])
        if named == root or inc["pattern"] == label.pattern.value:
            return inc
    return during[0] if during else None


def rated_cases(api: Api, path: Path | None, since: str | None) -> list[ev.Case]:
    from spanwatch.analyze import _evaluate as ev

    records: list[dict[str, Any]] = []
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc}") from exc
        records += [json.loads(line) for line in lines if line.strip()]
    if since:
        query = urllib.parse.urlencode({"format": "seed", "since": since})
        status, raw = api.request("GET", "/api/training/export?" + query)
        if status >= 400:
            raise CliError(raw.decode(errors="replace"))
        records += [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
    if any("completion" not in r for r in records):
        raise CliError("--rated wants a seed export (spanwatch export --format seed)")
    return [ev.case_from_record(r) for r in records]


def run(args: argparse.Namespace, api: Api, default_host: str) -> int:
    # the analysis package (Ollama's client and more) is loaded only for eval llm itself
    from spanwatch.analyze import _evaluate as ev

    try:
        return _run(args, api, default_host)
    except ev.EvalError as exc:
        raise CliError(str(exc)) from exc


def _run(args: argparse.Namespace, api: Api, default_host: str) -> int:
    from spanwatch.analyze import _evaluate as ev

    patterns = [p for p in args.patterns.split(",") if p] or None
    if args.adapter is not None and args.gguf is None:
        raise CliError("--adapter applies to a --gguf model")
    if not (args.model or args.gguf or args.facts_only):
        raise CliError("eval llm needs a model: --model NAME, --gguf FILE or --facts-only")
    cases = sim_cases(args.sim, patterns, args.topology) if args.sim else []
    cases += rated_cases(api, args.rated, args.since)
    if not cases:
        raise CliError("no cases to score: simulate faults (--sim N) or give rated analyses")
    print(
        f"scoring on {len(cases)} cases "
        f"({sum(c.source == 'sim' for c in cases)} simulated faults, "
        f"{sum(c.source == 'rated' for c in cases)} rated analyses)",
        file=sys.stderr,
    )
    results = []
    if args.facts_only:
        results.append(ev.evaluate(cases, ev.facts_only(), "facts-only"))
    for name in args.model:
        results.append(
            ev.evaluate(cases, ev.ollama(args.host or default_host, name, args.max_tokens), name)
        )
    if args.gguf is not None:
        results += gguf_results(cases, args.gguf, args.adapter, args.max_tokens)
    print(ev.table(results))
    if args.rows is not None:
        args.rows.write_text(
            "".join(
                json.dumps({"model": r["model"], **row}) + "\n"
                for r in results
                for row in r["rows"]
            )
        )
    summaries = {r["model"]: {k: v for k, v in r.items() if k != "rows"} for r in results}
    if args.report is not None:
        add_to_report(args.report, summaries, cases)
    if args.json:
        print(json.dumps(summaries, indent=2))
    return 0


def gguf_results(
    cases: list[ev.Case], gguf: Path, adapter: Path | None, max_tokens: int
) -> list[dict[str, Any]]:
    from spanwatch.analyze import _evaluate as ev

    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise CliError(
            f"--gguf needs llama-cpp-python: pip install 'spanwatch[train]' ({exc})"
        ) from exc
    out = []
    for label, lora in [("base", None), ("adapted", adapter)] if adapter else [("gguf", None)]:
        engine = ev.LlamaCpp(gguf, lora, max_tokens)
        try:
            name = f"{gguf.name}+{adapter.name}" if lora is not None and adapter else gguf.name
            result = ev.evaluate(cases, engine, name)
            result["role"] = label
            out.append(result)
        finally:
            engine.close()
    return out


def add_to_report(path: Path, summaries: dict[str, Any], cases: list[ev.Case]) -> None:
    """Merge the scores into a JSON report (train_report.json) under ``eval_llm``."""
    report = json.loads(path.read_text()) if path.exists() else {}
    section = report.setdefault("eval_llm", {"models": {}})
    section.setdefault("models", {}).update(summaries)
    section["cases"] = {
        "total": len(cases),
        "sim": sum(c.source == "sim" for c in cases),
        "rated": sum(c.source == "rated" for c in cases),
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
