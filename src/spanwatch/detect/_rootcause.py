"""Root cause: where in the recent traces a key's anomaly comes from.

Errors are followed down through the failing child, latency through the child whose own extra
time explains most of its parent's; the deepest span reached votes for the root (the callee
of a call whose own span is normal: the trouble is on the edge in front of it; the system a
call reaches, when it is not instrumented). A traffic drop is walked up the call graph
instead, to the highest caller that drops too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial

from spanwatch.model import Operation, PathStep, SpanKind

from ._calls import CLIENT_KINDS
from ._keys import Key
from ._own import OwnBaseline
from ._settings import Settings
from ._stats import ERROR_EXAMPLES, EXAMPLES, Family, Finding, KeyStats, WindowAcc
from ._structure import HANDLER_KINDS, INNER_DEPTH
from ._traces import ANSWERED, INTERNAL, Traces, TraceSpan, calls_of, example_spans, reach, read

_CLIENT, _SERVER = int(SpanKind.CLIENT), int(SpanKind.SERVER)
# a critical path's steps at most: deeper than any call chain worth reading in an incident
PATH_STEPS = 12
# a child explains its parent's slowness when its own extra time is over this share of the
# parent's (two children cannot both hold more than half)
EXPLAINS = 0.5
# client keys whose callee (from the call graph) is remembered at most: a scan of the graph
# each, for the failed calls that never reached one
_CALLEE_CACHE = 1024

# where the trouble is when the root's own spans are normal: on the edge in front of it
# (network, ingress), or in its answers (its callers fail on them)
EDGE, ANSWER = "edge", "answer"
# (root, root is a dependency, errors cascaded through callers, EDGE or ANSWER or "", example
# (trace id, span id) pairs)
Cause = tuple[Operation, bool, bool, str, list[tuple[bytes, bytes]]]


class RootCause:
    """Finds roots from the call graph (``parents``) and the baselines (``stats``: latency
    is blamed on the child whose time is most above its own)."""

    def __init__(
        self,
        settings: Settings,
        stats: dict[Key, KeyStats],
        parents: dict[Key, set[Key]],
        own: dict[Key, OwnBaseline] | None = None,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.parents = parents
        self.own = {} if own is None else own  # each handler key's own time and usual tail
        self._callees: dict[Key, Key] = {}  # client key -> the server key it reaches

    def find(
        self,
        traces: Traces,
        key: Key,
        finding: Finding,
        acc: WindowAcc | None,
        dropping: set[Key],
        stopped: dict[Key, Key],
    ) -> Cause:
        """The cause of one finding. ``dropping``: the keys whose traffic dropped this window;
        ``stopped``: the keys that stopped short this window, and the call each no longer
        makes."""
        if finding.family is Family.TRAFFIC:
            top = key
            seen = {key}
            parents = self.parents
            while True:
                # a client key is an edge, and one that several calls share (GET catalog)
                # may not drop with this one: the walk looks through it to its callers
                above = set()
                for p in parents.get(top, ()):
                    if p in dropping:
                        above.add(p)
                    elif p.kind in CLIENT_KINDS:
                        above.update(g for g in parents.get(p, ()) if g in dropping)
                up = [p for p in above if p not in seen]
                if not up:
                    break
                top = min(up)
                seen.add(top)
            return Operation(top.service, top.operation, top.scope), False, False, "", []
        if finding.metric == "missing_call_rate":
            return self._stopped_root(traces, key, finding, stopped)
        if finding.metric == "abrupt_end_rate":
            return self._abrupt_root(traces, key, finding)
        if finding.metric in ("new_call_count", "own_time_ms"):  # what its own spans now do
            own = Operation(key.service, key.operation, key.scope)
            return own, False, False, "", list(finding.examples)
        if acc is None:
            return Operation(key.service, key.operation, key.scope), False, False, "", []
        if finding.family is Family.LATENCY and finding.drift:
            # A creep moves the typical span, not the tail: typical examples, each span against
            # the slow baseline the drift was judged on. (The slowest are those whose calls
            # ran long, and the fast baseline has taken in part of the creep, so the parent's
            # own time would look normal beside a child's tail.)
            examples = acc.example_ids(limit=ERROR_EXAMPLES)
            step: Callable[[TraceSpan, list[TraceSpan]], TraceSpan | None] = partial(
                self._slow_child, drift=True
            )
        elif finding.family is Family.LATENCY:
            # The slow ones of the slowest (spans far past the p99 name their own: see
            # KeyStats._far): at a span or two a window a run's finding has one slow span
            # among normal ones, which would vote for whatever they called.
            stats = self.stats.get(key)
            bar = stats.slow_above(self.settings) if stats is not None else 0.0
            slowest = acc.slowest
            examples = (
                list(finding.examples)
                or [(t, sp) for d, t, sp in slowest if d > bar]
                or [(t, sp) for _, t, sp in slowest]
            )
            step = self._slow_child
        else:
            examples = acc.example_ids(errors=True)
            step = _failing_child
        # retried calls that show no failure (no status codes): the calls themselves lead to
        # the callee they retried; nothing says the time went in front of it
        unfailed = not examples and finding.family is Family.RETRY
        if unfailed:
            examples = acc.example_ids(limit=ERROR_EXAMPLES)
        votes: Counter[tuple[Operation, bool]] = Counter()
        answers: Counter[Key] = Counter()  # failed right after a call it answered OK
        errors = finding.family in (Family.ERRORS, Family.NEW_ERROR)
        cascades = edges = 0
        for trace, span in example_spans(traces, examples[:ERROR_EXAMPLES]):
            by_id, children = trace.by_id, trace.children
            while (child := step(span, children.get(span.span_id, []))) is not None:
                span = child
            # an INTERNAL span (a controller method) is its handler's own work: the handler
            # is what failed or slowed, and the answer rule reads its calls and usual tail
            for _ in range(INNER_DEPTH):
                outer = by_id.get(span.parent) if span.key.kind == INTERNAL else None
                if (
                    outer is None
                    or outer.key.service != span.key.service
                    or (outer.key.kind != INTERNAL and outer.key.kind not in HANDLER_KINDS)
                ):
                    break
                span = outer
            served: Key | None = None
            if span.key.kind == _CLIENT:
                below = children.get(span.span_id)
                served = next((c.key for c in below or () if c.key.kind == _SERVER), None)
                if served is None and span.error and not below and not span.dependency[0]:
                    # a call that failed with no answer (a timeout, a refused connection)
                    # into a service it reaches: the callee's, or its network's
                    served = self._callee(span.key)
            if served is not None:
                # The call was slow (or failed) and the callee's own span explains none of it:
                # the time went in front of the callee (network, ingress). It is the callee's.
                # (A call failed on the callee's HTTP error status was answered: a 404 its
                # server span leaves unset is the callee's, and no network trouble.)
                votes[(Operation(served.service, served.operation, served.scope), False)] += 1
                edges += span.error != ANSWERED
            elif (
                span.key.kind in CLIENT_KINDS
                and span.dependency[0]
                and not children.get(span.span_id)
            ):
                name, operation = span.dependency
                votes[(Operation(name, operation, span.key.scope), True)] += 1
            else:
                votes[(Operation(span.key.service, span.key.operation, span.key.scope), False)] += 1
                answered = self._answered(span, children) if errors else None
                if answered is not None:
                    answers[answered] += 1
            if errors:
                services = set()
                node: TraceSpan | None = span
                while node is not None:
                    if node.error and node.key.kind in (SpanKind.SERVER, SpanKind.CONSUMER):
                        services.add(node.key.service)
                    node = by_id.get(node.parent)
                cascades += len(services) >= self.settings.cascade_services
        if not votes:
            return (
                Operation(key.service, key.operation, key.scope),
                False,
                False,
                "",
                examples[:EXAMPLES],
            )
        (root, is_dep), _ = votes.most_common(1)[0]
        total = sum(votes.values())
        cascading = cascades * 2 > total
        # failures that all come as an answer arrives, the same callee's each time: the
        # answers are wrong, not the spans that failed on them
        if (answerer := self._answerer(answers, total)) is not None:
            root = Operation(answerer.service, answerer.operation, answerer.scope)
            return root, False, cascading, ANSWER, examples[:EXAMPLES]
        # cascading, and on the edge, when most of the examples say so
        front = EDGE if edges * 2 > total and not unfailed else ""
        return root, is_dep, cascading, front, examples[:EXAMPLES]

    def _callee(self, client: Key) -> Key | None:
        """The server key that calls of ``client`` reach, from the call graph, when there is
        one (remembered once found: the graph is scanned once a key)."""
        cache = self._callees
        found = cache.get(client)
        if found is None:
            reached = {
                key
                for key, parents in self.parents.items()
                if key.kind == _SERVER and client in parents
            }
            if len(reached) != 1:
                return None  # not remembered: the graph may learn it yet
            if len(cache) >= _CALLEE_CACHE:
                cache.clear()
            found = cache[client] = reached.pop()
        return found

    def forget(self, key: Key) -> None:
        self._callees.pop(key, None)

    def _answerer(self, answers: Counter[Key], total: int) -> Key | None:
        """The callee on whose answers most of ``total`` examples failed, if they agree."""
        if not answers:
            return None
        answerer, count = max(answers.items(), key=lambda kv: (kv[1], kv[0]))
        return answerer if self._answers_agree(count, total) else None

    def _answers_agree(self, count: int, total: int) -> bool:
        """Whether ``count`` of ``total`` examples failing on one callee's answers say it is
        the root: answer_share of them, and min_errors, or all of them when there are fewer
        (a key at a span or two a window has a failed example or two in each window)."""
        s = self.settings
        return count >= max(s.answer_share * total, min(s.min_errors, total))

    def _answered(
        self, span: TraceSpan, children: dict[bytes, list[TraceSpan]], timed: bool = True
    ) -> Key | None:
        """The callee whose answer a failed (or stopped short) handler span failed on, if it
        did: its last call was to a service that answered OK, and (``timed``) it ended within
        answer_gap of its own time after that answer came (it failed on reading it, not on
        work of its own after)."""
        if span.key.kind not in HANDLER_KINDS and span.key.kind != INTERNAL:
            return None
        below = calls_of(span.span_id, children)
        if not below:
            return None
        last = max(below, key=lambda c: (c.end, c.span_id))
        if last.error or last.key.kind != _CLIENT:
            return None
        callee = next((c for c in children.get(last.span_id, ()) if c.key.kind == _SERVER), None)
        if callee is None or callee.error:
            return None
        if not timed:
            return callee.key
        own = span.duration - sum(c.duration for c in below)
        gap = span.end - last.end
        # within answer_gap of its own time, or of its key's usual tail (the time its spans
        # spend after their last answer: parsing it, the work after)
        base = self.own.get(span.key)
        bar = max(self.settings.answer_gap * own, base.abrupt_bar(self.settings) if base else 0)
        if gap < 0 or gap > bar:
            return None  # a call that outlived it, or work of its own after the answer
        return callee.key

    def _abrupt_root(self, traces: Traces, key: Key, finding: Finding) -> Cause:
        """The root of a key's spans ending as their last call answers: that callee when the
        examples agree on it (its answers are wrong), else the key (its own spans fail)."""
        answers: Counter[Key] = Counter()
        total = 0
        for trace, span in example_spans(traces, finding.examples):
            total += 1
            # (their tails were judged short against the key's own: no gap test again)
            if (answered := self._answered(span, trace.children, timed=False)) is not None:
                answers[answered] += 1
        examples = list(finding.examples)
        if (answerer := self._answerer(answers, total)) is not None:
            root = Operation(answerer.service, answerer.operation, answerer.scope)
            return root, False, False, ANSWER, examples
        return Operation(key.service, key.operation, key.scope), False, False, "", examples

    def _stopped_root(
        self, traces: Traces, key: Key, finding: Finding, stopped: dict[Key, Key]
    ) -> Cause:
        """The root of a key's spans stopping short: from its example spans down through the
        calls they made into spans that stopped short too (of keys that did this window, and
        without the call those no longer make), to the deepest; a cascade when that passes
        through cascade_services services, as failing servers do."""
        votes: Counter[Key] = Counter()
        answers: Counter[Key] = Counter()  # stopped right after a call it answered OK
        cascades = 0
        for trace, node in example_spans(traces, finding.examples):
            children = trace.children
            services = {node.key.service}
            for _ in range(self.settings.max_incident_services):
                below = calls_of(node.span_id, children)
                # handlers under it, directly or through the client span that called them
                handlers = [c for c in below if c.key.kind in HANDLER_KINDS] + [
                    g
                    for c in below
                    if c.key.kind not in HANDLER_KINDS
                    for g in children.get(c.span_id, ())
                    if g.key.kind in HANDLER_KINDS
                ]
                short = [
                    h
                    for h in handlers
                    if (missing := stopped.get(h.key)) is not None
                    and not h.error
                    and all(c.key != missing for c in reach(h.span_id, children))
                ]
                if not short:
                    break
                node = min(short, key=lambda h: h.span_id)
                services.add(node.key.service)
            votes[node.key] += 1
            if (answered := self._answered(node, children)) is not None:
                answers[answered] += 1
            cascades += len(services) >= self.settings.cascade_services
        total = sum(votes.values())
        top = max(votes, key=lambda k: (votes[k], k)) if votes else key
        front = ""
        # as for errors: they all stopped as the same callee's answers came
        if (answerer := self._answerer(answers, total)) is not None:
            top, front = answerer, ANSWER
        root = Operation(top.service, top.operation, top.scope)
        return root, False, cascades * 2 > total > 0, front, list(finding.examples)

    def _slow_child(
        self, span: TraceSpan, children: list[TraceSpan], drift: bool = False
    ) -> TraceSpan | None:
        """The child whose own extra time explains most of this span's extra time, each
        measured from its key's median (of the slow baseline for a drift)."""
        median = self._slow_median if drift else self._fast_median
        own = median(span.key)
        excess = span.duration - (own if own is not None else 0)
        best, best_excess = None, EXPLAINS * excess
        for child in children:
            base = median(child.key)
            if base is None:
                continue
            child_excess = child.duration - base
            if child_excess > best_excess:
                best, best_excess = child, child_excess
        return best

    def _fast_median(self, key: Key) -> float | None:
        stats = self.stats.get(key)
        if stats is None or stats.fast.count() < self.settings.min_latency_samples:
            return None
        return stats.quantiles()[0]

    def _slow_median(self, key: Key) -> float | None:
        stats = self.stats.get(key)
        if stats is None or stats.slow.count() < self.settings.min_drift_samples:
            return None
        return stats.slow.quantile(0.5)


def _failing_child(span: TraceSpan, children: list[TraceSpan]) -> TraceSpan | None:
    failing = [c for c in children if c.error]
    return max(failing, key=lambda c: c.duration) if failing else None


def critical_path(traces: Traces, trace_ids: list[bytes]) -> tuple[PathStep, ...]:
    """From the entry span of the first kept trace down, following the failing child, else
    the longest one."""
    for trace_id in trace_ids:
        trace = read(traces, trace_id)
        if trace is None:
            continue
        children = trace.children
        roots = [sp for sp in trace.spans if sp.parent not in trace.by_id]
        node = max(roots, key=lambda sp: sp.duration) if roots else None
        steps: list[PathStep] = []
        while node is not None and len(steps) < PATH_STEPS:
            steps.append(
                PathStep(
                    node.key.service,
                    node.key.operation,
                    SpanKind(node.key.kind).name.lower(),
                    round(node.duration / 1e6, 3),
                    "error" if node.error else "",
                )
            )
            below = children.get(node.span_id, [])
            failing = [c for c in below if c.error]
            node = max(failing or below, key=lambda c: c.duration) if below else None
        return tuple(steps)
    return ()
