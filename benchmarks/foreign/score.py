#!/usr/bin/env python3
"""Score spanwatch's Detector on foreign traffic: the independent simulator in gen.py.

gen.py was written apart from spanwatch's own simulator (``spanwatch.sim``), after two public
microservice benchmark systems (Online Boutique and Train-Ticket), so that the detector is
scored here on trace shapes it was not built against. This tunes nothing: it runs the installed
``spanwatch`` as it is and reports what it finds.

Each run (system x kind x seed) is generated, fed to a fresh ``spanwatch.detect.Detector`` in
event time (one OTLP request per second of span end time, decoded by
``spanwatch.otlp.decode_protobuf``), and its incidents (last update per id) are saved to
``<out>/<system>_<kind>_<seed>.json``; a saved result is reused while gen.py and the detector's
sources are unchanged (``--force`` reruns). At the end it prints the report: per run, the
summary by system x kind with totals, the false alarms, the diagnoses of misses and wrong roots,
and checks of the detector's behaviour.

Run from the repository root (the whole matrix, 2 systems x 9 kinds x 2 seeds, takes a few
minutes of CPU):

    .venv/bin/python benchmarks/foreign/score.py [--only boutique|trainticket]
        [--kinds cpu,healthy] [--seeds 0,1] [--out DIR] [--force] [--no-run]

Without ``--out`` the results go to a new temporary directory, so nothing is written into the
repository unless asked.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime

import gen  # benchmarks/foreign/gen.py: the script's own directory is on sys.path

import spanwatch
from spanwatch.detect import Detector
from spanwatch.otlp import decode_protobuf

HERE = os.path.dirname(os.path.abspath(__file__))
NS = 1_000_000_000
GRACE_NS = 120 * NS
SYSTEMS = ("boutique", "trainticket")


def parse_ns(stamp: str) -> int:
    seconds, _, frac = stamp.rstrip("Z").partition(".")
    base = datetime.fromisoformat(seconds).replace(tzinfo=UTC).timestamp()
    return int(base) * NS + int(frac.ljust(9, "0")[:9])


def gen_hash():
    """gen.py's and the detector's sources: a saved result is reused only for both unchanged."""
    h = hashlib.sha256()
    with open(os.path.join(HERE, "gen.py"), "rb") as f:
        h.update(f.read())
    root = os.path.dirname(spanwatch.__file__)
    for d, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.endswith((".py", ".so", ".c")) and "__pycache__" not in d:
                with open(os.path.join(d, name), "rb") as f:
                    h.update(name.encode() + f.read())
    return h.hexdigest()[:16]


def detector_where():
    version = getattr(spanwatch, "__version__", "?")
    return f"{os.path.dirname(spanwatch.__file__)} (spanwatch {version})"


def slim(inc):
    keep = (
        "id",
        "severity",
        "pattern",
        "service",
        "operation",
        "root_cause",
        "started_at",
        "detected_at",
        "status",
        "evidence",
        "summary",
        "services",
        "environment",
        "resource",
        "deploys",
        "deploy",
        "critical_path",
        "trace_ids",
        "resolved_at",
    )
    out = {k: inc[k] for k in keep if k in inc}
    if "critical_path" in out:
        out["critical_path"] = out["critical_path"][:8]
    if "trace_ids" in out:
        out["trace_ids"] = out["trace_ids"][:2]
    out["_keys"] = sorted(inc.keys())
    return out


def run_one(system, kind, seed):
    t0 = time.process_time()
    run = gen.generate(system, kind, seed)
    t1 = time.process_time()
    det = Detector()
    incs, opened_at, events, problems = {}, {}, {}, []
    refused, sent = 0, 0
    resolved = {}
    for tns, body in run.bodies:
        r = decode_protobuf(body)
        if r.refused:
            refused += r.refused
            if len(problems) < 5:
                problems.append(f"refused {r.refused} spans at {tns}: {r.reason}")
        sent += len(r.batch)
        try:
            evs = det.process(r.batch)
        except Exception:  # a detector exception is a finding, not a harness crash
            problems.append("Detector.process raised:\n" + traceback.format_exc())
            break
        for ev in evs:
            events[ev.type] = events.get(ev.type, 0) + 1
            if ev.type in ("incident.opened", "incident.updated"):
                inc = ev.fields["incident"]
                first = None
                if inc["id"] not in opened_at:
                    opened_at[inc["id"]] = inc["detected_at"]
                    first = {
                        "evidence": inc.get("evidence"),
                        "summary": inc.get("summary"),
                        "severity": inc.get("severity"),
                        "root_cause": inc.get("root_cause"),
                        "pattern": inc.get("pattern"),
                    }
                    if ev.type != "incident.opened":
                        problems.append(f"incident {inc['id']} updated before it was opened")
                prev = incs.get(inc["id"])
                incs[inc["id"]] = slim(inc)
                incs[inc["id"]]["first"] = first or prev["first"]
                sevs = [
                    x
                    for x in (inc.get("severity"), prev and prev.get("sev_max"))
                    if isinstance(x, int)
                ]
                incs[inc["id"]]["sev_max"] = min(sevs) if sevs else None
                if prev and prev["root_cause"] != inc["root_cause"]:
                    incs[inc["id"]]["root_changed"] = (prev.get("root_changed") or []) + [
                        prev["root_cause"]
                    ]
            elif ev.type == "incident.resolved":
                inc = ev.fields.get("incident") or {}
                if inc.get("id"):
                    resolved[inc["id"]] = inc.get("resolved_at") or (run.bodies and tns)
    # no final advance(): the run's own traffic runs 4 min past the fault; flushing past
    # the end would read as every key's traffic dropping to zero
    lost = None
    with contextlib.suppress(Exception):
        lost = det.late_spans + det.clock.held_spans
    t2 = time.process_time()
    for i, inc in incs.items():
        inc["opened_at"] = opened_at[i]
        inc["resolved"] = i in resolved
    return {
        "label": run.label,
        "incidents": list(incs.values()),
        "events": events,
        "refused": refused,
        "sent": sent,
        "spans": run.n_spans,
        "lost": lost,
        "problems": problems,
        "services": sorted(run.services),
        "grpc_services": {
            s: sorted(
                {
                    o.grpc_service
                    for (sv, _), o in gen_ops(run).items()
                    if sv == s and o.grpc_service
                }
            )
            for s in run.services
        },
        "cpu_gen_s": round(t1 - t0, 2),
        "cpu_detect_s": round(t2 - t1, 2),
        "gen_hash": gen_hash(),
    }


def gen_ops(run):
    # the operations of the run's system (rebuilt: Run keeps services, not ops)
    sim = gen.Sim(run.system, 0, gen.Fault("healthy"), 1)
    gen.BUILDERS[run.system](sim)
    return sim.ops


# ---------------------------------------------------------------------------------------------
# scoring


def aliases(res):
    lab = res["label"]
    tgt = lab["service"]
    return tgt, set(res["grpc_services"].get(tgt, []))


def root_ok(inc, res):
    lab = res["label"]
    tgt, grpcs = aliases(res)
    svc = inc["root_cause"]["service"] or ""
    op = inc["root_cause"]["operation"] or ""
    if svc == tgt:
        return True
    if lab["kind"] in ("net_delay", "loss"):
        host = svc.rpartition(":")[0] if ":" in svc else svc
        if (
            host == tgt
            or tgt in svc.split()
            or any(tgt == t.strip(" ->→()").split(":")[0] for t in svc.split())
        ):
            return True
        # the edge: a caller's client key into the target
        if tgt in op or any(g in op for g in grpcs):
            return True
    return False


def sev(inc):
    s = inc.get("sev_max") or inc.get("severity")
    return s if isinstance(s, int) else 99


def score(res):
    lab = res["label"]
    incs = sorted(res["incidents"], key=lambda i: parse_ns(i["opened_at"]))
    for i in incs:
        i["_t"] = parse_ns(i["opened_at"])
    out = {
        "run": f"{lab['system']}/{lab['kind']}/{lab['seed']}",
        "target": lab["service"],
        "operation": lab.get("operation", ""),
        "label": lab,
    }
    if lab["kind"] == "healthy":
        out["false"] = incs
        out["false_h"] = lab["duration_s"] / 3600.0
        return out
    s, e = lab["start_ns"], lab["end_ns"] + GRACE_NS
    inside = [i for i in incs if s <= i["_t"] <= e]
    out["before"] = [i for i in incs if i["_t"] < s]
    out["after"] = [i for i in incs if i["_t"] > e]
    out["inside"] = inside
    out["false"] = out["before"]
    out["false_h"] = (s - gen.T0_NS) / NS / 3600.0
    out["detected"] = bool(inside)
    out["root1"] = bool(inside) and root_ok(inside[0], res)
    out["root_any"] = any(root_ok(i, res) for i in inside)
    if inside:
        top = min(inside, key=lambda i: (sev(i), i["_t"]))
        out["top"] = root_ok(top, res)
        out["delay"] = (inside[0]["_t"] - s) / NS
        ok = [i for i in inside if root_ok(i, res)]
        out["delay_ok"] = (ok[0]["_t"] - s) / NS if ok else None
    else:
        out["top"], out["delay"], out["delay_ok"] = False, None, None
    out["n_inside"] = len(inside)
    return out


def fmt_inc(i, ref_ns):
    ev = i.get("evidence") or {}
    rc = i.get("root_cause") or {}
    first = i.get("first") or {}
    fev = first.get("evidence") or {}
    evs = ", ".join(f"{k}={_r(v)}" for k, v in ev.items() if k not in ("series", "metric", "unit"))
    fevs = ", ".join(
        f"{k}={_r(v)}" for k, v in fev.items() if k not in ("series", "metric", "unit", "peak")
    )
    rel = (i["_t"] - ref_ns) / NS
    sv = f"SEV{i.get('severity')}" + (
        f" (max SEV{i['sev_max']})" if i.get("sev_max") not in (None, i.get("severity")) else ""
    )
    extra = ""
    if i.get("root_changed"):
        extra = f"\n               root changed from: {i['root_changed']}"
    if first.get("summary") and first.get("summary") != i.get("summary"):
        extra += f"\n               summary at open: {first.get('summary')}"
    return (
        f"    [{rel:+7.0f}s] {sv} {i.get('pattern')}: root={rc.get('service')} | "
        f"{rc.get('operation')}  (seen at {i.get('service')} | {i.get('operation')})\n"
        f"               evidence {ev.get('metric')} [{ev.get('unit')}]: "
        f"at open {fevs}; last {evs}\n"
        f"               summary: {i.get('summary')}{extra}\n"
        f"               services: {i.get('services')}"
    )


def _r(v):
    return round(v, 3) if isinstance(v, float) else v


def sanity(res):
    """Incident fields that look wrong."""
    notes = []
    known = set(res["services"])
    for i in res["incidents"]:
        rc = i.get("root_cause") or {}
        if sev(i) not in (1, 2, 3, 4, 5):
            notes.append(f"{i['id']}: severity {i.get('severity')!r}")
        if not rc.get("service"):
            notes.append(f"{i['id']}: empty root_cause.service ({i.get('pattern')})")
        try:
            if parse_ns(i["detected_at"]) < parse_ns(i["started_at"]):
                notes.append(
                    f"{i['id']}: detected_at {i['detected_at']} before started_at {i['started_at']}"
                )
        except Exception as e:
            notes.append(f"{i['id']}: bad timestamps ({e})")
        if i.get("service") and i["service"] not in known:
            notes.append(
                f"{i['id']}: incident service {i['service']!r} is no service of the system"
            )
        for s in i.get("services") or []:
            if s not in known and not any(s.startswith(k) for k in known):
                notes.append(f"{i['id']}: services lists {s!r}, no service of the system")
        ev = i.get("evidence") or {}
        for k in ("observed", "baseline", "peak", "share"):
            v = ev.get(k)
            if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
                notes.append(f"{i['id']}: evidence.{k} = {v}")
        if isinstance(ev.get("share"), float) and not 0 <= ev["share"] <= 1:
            notes.append(f"{i['id']}: evidence.share = {ev['share']} outside [0, 1]")
        deps = i.get("deploys") or []
        flips = sum(
            1
            for a, b in itertools.pairwise(deps)
            if a.get("service") == b.get("service")
            and a.get("to") == b.get("from")
            and a.get("from") == b.get("to")
        )
        if flips:
            notes.append(
                f"{i['id']}: deploys lists {len(deps)} version changes of "
                f"{deps[0].get('service')} ({flips} back-and-forth, "
                f"{deps[0].get('at')} .. {deps[-1].get('at')}) for one rolling deploy"
            )
        if i.get("opened_at") != i.get("detected_at"):
            notes.append(
                f"{i['id']}: detected_at changed from {i.get('opened_at')} (opened) "
                f"to {i.get('detected_at')}"
            )
    return notes


def _csv(text, conv=str):
    return [conv(x) for x in text.split(",") if x.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=SYSTEMS, help="one system only")
    ap.add_argument("--kinds", default=",".join(gen.KINDS), help="comma-separated fault kinds")
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    ap.add_argument("--out", help="results directory (default: a new temporary directory)")
    ap.add_argument("--force", action="store_true", help="rerun runs saved in --out")
    ap.add_argument("--no-run", action="store_true", help="score the results saved in --out only")
    args = ap.parse_args()
    kinds = _csv(args.kinds)
    bad = [k for k in kinds if k not in gen.KINDS]
    if bad:
        ap.error(f"unknown kind(s) {', '.join(bad)}; known: {', '.join(gen.KINDS)}")
    try:
        seeds = _csv(args.seeds, int)
    except ValueError:
        ap.error(f"--seeds takes comma-separated integers, not {args.seeds!r}")
    out = args.out or tempfile.mkdtemp(prefix="spanwatch-foreign-")
    os.makedirs(out, exist_ok=True)
    h = gen_hash()
    results = []
    t_start = time.process_time()
    for system in SYSTEMS:
        if args.only and system != args.only:
            continue
        for kind in gen.KINDS:
            if kind not in kinds:
                continue
            for seed in seeds:
                path = os.path.join(out, f"{system}_{kind}_{seed}.json")
                res = None
                if os.path.exists(path) and not args.force:
                    with open(path) as f:
                        res = json.load(f)
                    if res.get("gen_hash") != h and not args.no_run:
                        res = None
                if res is None:
                    if args.no_run:
                        continue
                    res = run_one(system, kind, seed)
                    with open(path, "w") as f:
                        json.dump(res, f, indent=1, default=str)
                    print(
                        f"ran {system}/{kind}/{seed}: {res['spans']} spans, "
                        f"{len(res['incidents'])} incidents, cpu gen {res['cpu_gen_s']}s "
                        f"detect {res['cpu_detect_s']}s",
                        file=sys.stderr,
                        flush=True,
                    )
                results.append(res)
    print(f"detector: {detector_where()}, sources hash {h}")
    print(f"results: {out}")
    report(results)
    print(f"\n(score.py CPU this invocation: {time.process_time() - t_start:.0f}s)")


def yn(b):
    return "Y" if b else "-"


def report(results):
    scored = [score(r) for r in results]
    print("=" * 118)
    print("per run")
    print(
        f"{'run':36} {'target':24} {'det':>3} {'r@1':>3} {'any':>3} {'top':>3} {'#inc':>4} "
        f"{'delay':>6} {'dly_ok':>6} {'pre':>3} {'post':>4} {'params'}"
    )
    for s in scored:
        lab = s["label"]
        if lab["kind"] == "healthy":
            print(
                f"{s['run']:36} {'(deploy ' + lab['service'] + ')':24} "
                f"{'':>3} {'':>3} {'':>3} {'':>3} "
                f"{len(s['false']):4} {'':>6} {'':>6} {'':>3} {'':>4}"
            )
            continue
        d = f"{s['delay']:.0f}" if s["delay"] is not None else "-"
        dk = f"{s['delay_ok']:.0f}" if s["delay_ok"] is not None else "-"
        print(
            f"{s['run']:36} {s['target'][:24]:24} {yn(s['detected']):>3} {yn(s['root1']):>3} "
            f"{yn(s['root_any']):>3} {yn(s['top']):>3} {s['n_inside']:4} {d:>6} {dk:>6} "
            f"{len(s['before']):3} {len(s['after']):4} {lab['params']}"
        )
    print("=" * 118)
    print("summary by system x kind (over seeds)")
    print(
        f"{'system':12} {'kind':22} {'runs':>4} {'detected':>8} {'root@1':>6} {'root@any':>8} "
        f"{'top':>4} "
        f"{'inc/fault':>9} {'delay s (median)':>16}"
    )
    for system in SYSTEMS:
        for kind in gen.KINDS:
            ss = [
                s for s in scored if s["label"]["system"] == system and s["label"]["kind"] == kind
            ]
            if not ss or kind == "healthy":
                continue
            n = len(ss)
            det = sum(s["detected"] for s in ss)
            dl = sorted(s["delay"] for s in ss if s["delay"] is not None)
            med = f"{dl[len(dl) // 2]:.0f}" if dl else "-"
            ipf = sum(s["n_inside"] for s in ss) / max(1, det)
            print(
                f"{system:12} {kind:22} {n:4} {det:>5}/{n:<2} "
                f"{sum(s['root1'] for s in ss):>4}/{n:<1} "
                f"{sum(s['root_any'] for s in ss):>6}/{n:<1} {sum(s['top'] for s in ss):>2}/{n:<1} "
                f"{ipf:9.2f} {med:>16}"
            )
        ss = [
            s for s in scored if s["label"]["system"] == system and s["label"]["kind"] != "healthy"
        ]
        if ss:
            n = len(ss)
            print(
                f"{system:12} {'ALL FAULTS':22} {n:4} {sum(s['detected'] for s in ss):>5}/{n:<2} "
                f"{sum(s['root1'] for s in ss):>4}/{n:<1} "
                f"{sum(s['root_any'] for s in ss):>6}/{n:<1} "
                f"{sum(s['top'] for s in ss):>2}/{n:<1}"
            )
    print("=" * 118)
    print("false alarms")
    for system in SYSTEMS:
        hs = [
            s for s in scored if s["label"]["system"] == system and s["label"]["kind"] == "healthy"
        ]
        fs = [
            s for s in scored if s["label"]["system"] == system and s["label"]["kind"] != "healthy"
        ]
        if hs:
            n = sum(len(s["false"]) for s in hs)
            hrs = sum(s["false_h"] for s in hs)
            print(f"  {system:12} healthy runs: {n} incidents in {hrs:.2f} h = {n / hrs:.2f}/h")
        if fs:
            n = sum(len(s["false"]) for s in fs)
            hrs = sum(s["false_h"] for s in fs)
            print(
                f"  {system:12} fault runs before fault start: {n} incidents in {hrs:.2f} h "
                f"= {n / hrs:.2f}/h"
                f"   (after fault end + 2 min: {sum(len(s['after']) for s in fs)})"
            )
    # false alarm signatures
    sig = {}
    for s in scored:
        for i in s["false"]:
            k = (
                s["label"]["system"],
                i["pattern"],
                i["root_cause"]["service"],
                i["root_cause"]["operation"],
            )
            sig.setdefault(k, []).append(s["run"])
    if sig:
        print("  false alarms by (system, pattern, root):")
        for k, runs in sorted(sig.items(), key=lambda kv: -len(kv[1])):
            print(
                f"    {len(runs):3}x {k[0]:12} {k[1]:18} {k[2]} | {k[3]}   "
                f"runs: {', '.join(sorted(set(runs)))[:120]}"
            )
    print("=" * 118)
    print("diagnoses: misses and wrong roots")
    for s in scored:
        lab = s["label"]
        if lab["kind"] == "healthy":
            continue
        if s["detected"] and s["root1"] and s["top"]:
            continue
        what = []
        if not s["detected"]:
            what.append("MISSED")
        else:
            if not s["root1"]:
                what.append("first incident names the wrong root")
            if not s["root_any"]:
                what.append("no incident names the injected service")
            if not s["top"]:
                what.append("top-severity incident names the wrong root")
        print(f"\n  {s['run']}: {'; '.join(what)}")
        print(
            f"    truth: {lab['kind']} on {lab['service']}"
            f"{(' op ' + lab['operation']) if lab.get('operation') else ''} "
            f"params {lab['params']}, "
            f"from +{(lab['start_ns'] - gen.T0_NS) / NS / 60:.0f} min "
            f"for {(lab['end_ns'] - lab['start_ns']) / NS / 60:.0f} min"
            f"{' (no status codes anywhere)' if lab.get('no_status') else ''}"
        )
        if s["inside"]:
            print("    incidents in the interval (time from fault start):")
            for i in s["inside"]:
                print(fmt_inc(i, lab["start_ns"]))
        near = [i for i in s["before"] + s["after"]]
        if near:
            print("    other incidents in the run:")
            for i in near[:6]:
                print(fmt_inc(i, lab["start_ns"]))
        if not s["inside"] and not near:
            print("    no incident at all in the run")
    print("=" * 118)
    print("false alarms in healthy runs (time from run start)")
    for s in scored:
        if s["label"]["kind"] != "healthy" or not s["false"]:
            continue
        print(
            f"\n  {s['run']} (no-op deploy of {s['label']['service']} "
            f"at +{s['label']['duration_s'] / 120:.1f} min):"
        )
        for i in s["false"]:
            print(fmt_inc(i, gen.T0_NS))
    print("=" * 118)
    print("detector behaviour checks")
    any_p = False
    for r in results:
        lab = r["label"]
        tag = f"{lab['system']}/{lab['kind']}/{lab['seed']}"
        notes = list(r["problems"]) + sanity(r)
        if r.get("lost"):
            notes.append(f"{r['lost']} spans lost (late or held) of {r['sent']}")
        if r["sent"] != r["spans"]:
            notes.append(f"decoded {r['sent']} spans of {r['spans']} sent")
        for n in notes:
            any_p = True
            print(f"  {tag}: {n}")
    if not any_p:
        print("  none: no exception, no refused span, no lost span, no odd incident field")
    tot_gen = sum(r["cpu_gen_s"] for r in results)
    tot_det = sum(r["cpu_detect_s"] for r in results)
    print(
        f"\n(CPU of the saved runs: generation {tot_gen:.0f}s, detection {tot_det:.0f}s; "
        f"{sum(r['spans'] for r in results)} spans)"
    )


if __name__ == "__main__":
    main()
