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
from spanwatch.sim import TOPOLOGIES
from spanwatch.store import FORMATS

from . import _eval_llm
from . import _ops as ops
from . import _training as training
from ._demo import demo
from ._eval import CONDITIONS, evaluate
from ._simulate import SCENARIOS, simulate
from ._training import DEFAULT_API, DEFAULT_WS, Api, CliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spanwatch", description="spanwatch sidecar commands")
    parser.add_argument("--version", action="version", version=f"spanwatch {__version__}")
    parser.add_argument(
        "--api",
        default=os.environ.get("SPANWATCH_API", DEFAULT_API),
        metavar="URL",
        help=f"the daemon's HTTP API (env SPANWATCH_API; default {DEFAULT_API})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("SPANWATCH_TOKEN", ""),
        help="bearer token when the daemon wants one (env SPANWATCH_TOKEN)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rate_cmd = commands.add_parser("rate", help="rate an analysis good or bad")
    rate_cmd.add_argument("analysis_id", metavar="ID")
    rate_cmd.add_argument("rating", choices=["good", "bad"])
    given = rate_cmd.add_mutually_exclusive_group()
    given.add_argument(
        "--correction",
        metavar="TEXT",
        help="for bad: what it should have said ($EDITOR opens when omitted on a terminal)",
    )
    given.add_argument("--correction-file", type=Path, metavar="FILE")

    stats_cmd = commands.add_parser("stats", help="rating counts, per pattern and per model")
    stats_cmd.add_argument("--json", action="store_true")

    export_cmd = commands.add_parser("export", help="rated analyses as JSONL training data")
    export_cmd.add_argument("--format", required=True, choices=list(FORMATS))
    export_cmd.add_argument("--since", metavar="DATE", help="ratings from this date or time")
    export_cmd.add_argument(
        "--val-split",
        type=float,
        default=0.0,
        metavar="F",
        help="also write FILE.val.jsonl with this share of the records",
    )
    export_cmd.add_argument("-o", "--output", type=Path, metavar="FILE")

    tail_cmd = commands.add_parser("tail", help="follow incidents and analyses as they come")
    tail_cmd.add_argument(
        "--ws",
        default=os.environ.get("SPANWATCH_WS", DEFAULT_WS),
        metavar="URL",
        help=f"the event stream (env SPANWATCH_WS; default {DEFAULT_WS})",
    )
    tail_cmd.add_argument("--min-severity", type=int, choices=range(1, 6), metavar="N")
    tail_cmd.add_argument(
        "--follow",
        action="store_true",
        help=f"keep trying to connect (default: give up after {ops.TAIL_ATTEMPTS} failures)",
    )
    tail_cmd.add_argument("--once", action="store_true", help=argparse.SUPPRESS)

    inc_cmd = commands.add_parser("incidents", help="list incidents, newest first")
    state = inc_cmd.add_mutually_exclusive_group()
    state.add_argument("--open", action="store_const", const="open", dest="status")
    state.add_argument("--resolved", action="store_const", const="resolved", dest="status")
    inc_cmd.add_argument("--service", metavar="S", help="the incident's or its root cause's")
    inc_cmd.add_argument("--pattern", choices=[p.value for p in Pattern])
    inc_cmd.add_argument("--namespace", metavar="NS", help="service.namespace")
    inc_cmd.add_argument("--environment", metavar="ENV", help="deployment.environment.name")
    inc_cmd.add_argument(
        "--min-severity", type=int, choices=range(1, 6), metavar="N", help="2 keeps SEV1-2"
    )
    inc_cmd.add_argument("--limit", type=int, default=20)
    inc_cmd.add_argument("--json", action="store_true")

    demo_cmd = commands.add_parser(
        "demo", help="a daemon fed with simulated faults, up until Ctrl-C (make demo)"
    )
    demo_cmd.add_argument("--grpc-listen", default="127.0.0.1:4317", metavar="H:P")
    demo_cmd.add_argument("--http-listen", default="127.0.0.1:4318", metavar="H:P")
    demo_cmd.add_argument("--ws-listen", default="127.0.0.1:8765", metavar="H:P")
    demo_cmd.add_argument("--data-dir", type=Path, default=Path("spanwatch-demo-data"))
    demo_cmd.add_argument("--config", type=Path, metavar="FILE", help="for the daemon")
    demo_cmd.add_argument("--speed", type=float, default=20.0, help="event s per wall s (20)")
    demo_cmd.add_argument("--scenario", default="demo", choices=SCENARIOS)
    demo_cmd.add_argument("--duration", type=float, metavar="SECONDS", help="event time to send")
    demo_cmd.add_argument("--llm", action="store_true", help="ask the LLM too (needs Ollama)")

    analyses_cmd = commands.add_parser("analyses", help="list analyses or show one")
    which = analyses_cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    list_cmd = which.add_parser("list", help="the latest analyses")
    list_cmd.add_argument("--limit", type=int, default=20)
    show_cmd = which.add_parser("show", help="one analysis: incidents, text, ratings")
    show_cmd.add_argument("analysis_id", metavar="ID")
    show_cmd.add_argument("--json", action="store_true")
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

    tr = commands.add_parser("train", help="LoRA fine-tuning on rated analyses (spanwatch[train])")
    tr.add_argument(
        "--base-model",
        default="meta-llama/Llama-3.2-1B-Instruct",
        metavar="PATH_OR_ID",
        help="a local directory or a Hugging Face model id",
    )
    tr.add_argument("--data", type=Path, metavar="FILE", help="an export (spanwatch export)")
    tr.add_argument("--output", type=Path, metavar="DIR", help="a new directory for the results")
    tr.add_argument("--max-steps", type=int, default=200)
    tr.add_argument("--rank", type=int, default=16)
    tr.add_argument("--alpha", type=int, default=32)
    tr.add_argument("--dropout", type=float, default=0.05)
    tr.add_argument("--learning-rate", type=float, default=2e-4)
    tr.add_argument("--batch-size", type=int, default=4)
    tr.add_argument("--max-length", type=int, default=2048)
    tr.add_argument("--val-split", type=float, default=0.2)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--target-modules",
        default="",
        help="comma-separated module names to adapt (default: the attention and MLP projections)",
    )
    tr.add_argument(
        "--ollama-base",
        default="llama3.2:1b",
        help="the Ollama model the adapter applies to (FROM in the Modelfile)",
    )
    tr.add_argument(
        "--ollama-name",
        default="spanwatch-analyst",
        help="the name ollama create gives the adapted model",
    )
    tr.add_argument(
        "--dpo",
        type=int,
        default=0,
        metavar="STEPS",
        help="then a DPO stage of STEPS steps on the corrected examples",
    )
    tr.add_argument(
        "--merge",
        action="store_true",
        help="also write the merged model as model.gguf (f16) and a Modelfile FROM it",
    )
    tr.add_argument(
        "--llama-cpp",
        type=Path,
        metavar="DIR",
        help="folder of llama.cpp's convert_hf_to_gguf.py (default: $SPANWATCH_LLAMA_CPP, "
        "then <venv>/share/llama.cpp)",
    )
    tr.add_argument(
        "--no-ollama",
        action="store_true",
        help="do not run ollama create even when ollama is installed",
    )
    tr.add_argument(
        "--emit-axolotl",
        type=Path,
        metavar="FILE",
        help="write the equivalent Axolotl config to FILE and stop",
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
    ev.add_argument(
        "--topology",
        default="shop",
        help=f"simulated system(s): {', '.join(TOPOLOGIES)}, or all (default shop)",
    )
    ev.add_argument(
        "--condition",
        default="clean",
        help=f"fleet trouble applied to every run: {', '.join(CONDITIONS)}, or all",
    )
    ev.add_argument("--json", action="store_true", help="print the scores as JSON")
    _eval_llm.add_arguments(ev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except CliError as exc:
        print(f"spanwatch: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    api = Api(args.api, args.token)
    if args.command == "rate":
        return training.rate(
            api, args.analysis_id, args.rating, args.correction, args.correction_file
        )
    if args.command == "stats":
        return training.stats(api, args.json)
    if args.command == "export":
        return training.export(api, args.format, args.since, args.val_split, args.output)
    if args.command == "tail":
        return ops.tail(args.ws, args.token, args.min_severity, args.once, args.follow)
    if args.command == "incidents":
        return ops.incidents(
            api,
            {
                "status": args.status,
                "service": args.service,
                "pattern": args.pattern,
                "namespace": args.namespace,
                "environment": args.environment,
                "min_severity": args.min_severity,
            },
            args.limit,
            args.json,
        )
    if args.command == "demo":
        return demo(
            args.grpc_listen,
            args.http_listen,
            args.ws_listen,
            args.data_dir,
            args.speed,
            args.scenario,
            args.duration,
            args.llm,
            args.config,
        )
    if args.command == "analyses":
        if args.action == "list":
            return training.analyses_list(api, args.limit)
        return training.analyses_show(api, args.analysis_id, args.json)
    if args.command == "train":
        return _train(args)
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
    elif args.command == "eval" and args.what == "llm":
        try:
            host = load().llm.host
        except ConfigError:
            host = os.environ.get("OLLAMA_HOST", "http://127.0.0.1:11434")
        return _eval_llm.run(args, api, host)
    elif args.command == "eval":
        patterns = [p for p in args.patterns.split(",") if p] or None
        topologies = list(TOPOLOGIES) if args.topology == "all" else args.topology.split(",")
        conditions = CONDITIONS if args.condition == "all" else args.condition.split(",")
        unknown = [c for c in conditions if c not in CONDITIONS]
        if unknown:
            build_parser().error(
                f"--condition: unknown {', '.join(unknown)}; one of {', '.join(CONDITIONS)}"
            )
        for topology, condition in [(t, c) for t in topologies for c in conditions]:
            report = evaluate(
                range(args.seeds),
                patterns,
                args.healthy_hours * 3600,
                condition=condition,
                topology=topology,
            )
            if args.json:
                print(
                    json.dumps(
                        {
                            "topology": topology,
                            "condition": condition,
                            "patterns": report.rows(),
                            "totals": report.totals(),
                        },
                        indent=2,
                    )
                )
            else:
                print(report.table(), end="\n\n")
    return 0


def _train(args: argparse.Namespace) -> int:
    try:
        from spanwatch import training
    except ImportError as exc:
        raise CliError(
            f"training needs the train extra: pip install 'spanwatch[train]' ({exc})"
        ) from exc
    settings = training.LoraSettings(
        rank=args.rank,
        alpha=args.alpha,
        dropout=args.dropout,
        target_modules=tuple(m for m in args.target_modules.split(",") if m)
        or training.LLAMA_MODULES,
        learning_rate=args.learning_rate,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
    )
    if args.emit_axolotl is not None:
        data = str(args.data or "train.chat.jsonl")
        args.emit_axolotl.write_text(
            training.axolotl_config(
                args.base_model, data, settings, str(args.output or "./axolotl-out"), args.val_split
            )
        )
        print(f"wrote {args.emit_axolotl}")
        return 0
    if args.data is None or args.output is None:
        raise CliError("train needs --data FILE and --output DIR")
    try:
        report = training.train(
            args.base_model,
            args.data,
            args.output,
            settings,
            args.val_split,
            args.ollama_base,
            args.ollama_name,
            run_ollama=not args.no_ollama,
            dpo_steps=args.dpo,
            merge=args.merge,
            llama_cpp=args.llama_cpp,
        )
    except training.TrainingError as exc:
        raise CliError(str(exc)) from exc
    print("\n".join(training.summary(report)))
    written = ", ".join(report["outputs"].values())
    print(f"wrote {args.output}/: {written}, train_report.json")
    print(f"to use it: cd {args.output} && {report['ollama_create']}")
    return 0
