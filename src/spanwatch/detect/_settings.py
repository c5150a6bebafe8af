"""The detector's knobs. Defaults suit 10-second windows of ordinary service traffic."""

from __future__ import annotations

from dataclasses import dataclass

from spanwatch.model import IDENTITY_ATTRIBUTES

# the paths that load balancers, orchestrators and monitoring probe
PROBE_PATHS = (
    "/health",
    "/healthz",
    "/healthcheck",
    "/health/live",
    "/health/ready",
    "/livez",
    "/readyz",
    "/ready",
    "/ping",
    "/metrics",
)


@dataclass(frozen=True, slots=True)
class Settings:
    window_s: float = 10.0  # event-time window
    lateness_s: float = 5.0  # how late a span may arrive before its window closes
    # Event time on a fleet of clocks (see _clock.py). A source up to max_lag behind the fleet
    # (a slow collector) is waited for; one further behind, or more than max_ahead ahead
    # (a wrong clock), is judged on a corrected time. Two minutes covers collectors that batch
    # and retry; one minute ahead is more than batching can explain, and less than a clock
    # set to the wrong zone or year.
    max_lag_s: float = 120.0
    max_ahead_s: float = 60.0
    # whole batches off the fleet's clock for this long of their own time (two windows, over
    # two or more batches) and nothing on time between them: time has started over
    epoch_after_s: float = 20.0
    # a lagging source that sends nothing for this long (of fleet time) is no longer waited for
    source_live_s: float = 30.0
    # resource attributes that, with service.name, make a service's identity
    identity: tuple[str, ...] = IDENTITY_ATTRIBUTES
    # server spans of these paths (by http.route, else url.path) are probes, not traffic: no
    # baseline, no key (nor are gRPC health checks, nor requests no route matched: a 404
    # without http.route)
    probe_paths: tuple[str, ...] = PROBE_PATHS
    warmup_windows: int = 12  # windows of traffic a key needs before it can alert
    learn_windows: int = 30  # windows during which every error signature is learned as known
    new_error_windows: int = 60  # how long a new signature stays "new"
    # a new signature's spans in a window (or since it appeared) before it can alert: one or
    # two failed spans are as likely a race as a new kind of failure
    min_new_errors: int = 3
    # a signature known for this many other services is a generic failure (a transport
    # status, a timeout), never new
    common_error_services: int = 2
    # new signatures tracked at most, per tracked key: they are per service, and one whose
    # message holds ids must not grow without bound
    new_errors_per_key: int = 4
    # the least rate a never-seen signature is assumed to have had (its prior is half a span
    # of the key's recent exposure): one in ten thousand spans
    min_new_error_rate: float = 1e-4
    # windows whose spans show no anomaly before an incident resolves (windows without any
    # span of it do not count: a key at a request every few windows is not well for being
    # silent); one whose root sends nothing for silent_resolve_windows resolves anyway
    quiet_windows: int = 6
    silent_resolve_windows: int = 36
    # a drift shows on and off as it creeps: its incident waits as long as its evidence spans
    # (the drift test reads 18 windows) before resolving, so one creep is one incident
    drift_quiet_windows: int = 18
    # services one incident may name; a symptom past it opens its own (or joins none)
    max_incident_services: int = 12
    # a failed handler span failed on an answer when its last call's callee answered OK and
    # it ended within answer_gap of its own time (or of its key's usual tail: the time its
    # spans spend after their last answer) after the answer came (an exception on
    # reading it; work of its own after its calls takes longer); when answer_share of a
    # finding's examples failed on the same callee's answers, that callee is the root (a
    # wrong result), as long as min_errors of them do
    answer_gap: float = 0.2
    # call signatures (a key's new calls) known per service at most: past it, the service's
    # calls are no longer judged new (names that grow without bound are not a structure)
    max_known_calls: int = 256
    answer_share: float = 0.8
    max_keys: int = 50_000  # tracked (service, operation, kind) keys; LRU past it
    max_traces: int = 20_000  # recent traces kept for trace-level analysis
    max_spans_per_trace: int = 512
    # callers learned per key: enough for any real fan-in, and a caller whose span names hold
    # ids cannot grow it
    max_parent_keys: int = 32
    # version changes kept to name in incidents (deploys in the half hour before one)
    max_deploys: int = 256
    p_value: float = 1e-6  # how unlikely under the baseline a finding must be
    min_errors: int = 4
    min_error_rate: float = 0.005  # floor of the baseline error rate
    # a window's error rate must reach both this share and this many times the baseline
    min_error_share: float = 0.05
    error_factor: float = 4.0
    min_slow: int = 3  # slow spans needed for a latency finding
    # baseline samples before spikes are judged: from few, the share of healthy spans that
    # passes the baseline's p99 is taken as 1/(samples + 1), not slow_expected (it is about
    # their largest), so a key at one span a window is judged after 5 minutes, not 17
    min_latency_samples: int = 30
    # the slow baseline's samples before drift is judged: a creep is measured against its
    # median, which a few dozen spans of one epoch place too roughly
    min_drift_samples: int = 100
    # Evidence accumulates over a run of up to this many windows that begins at a suspicious
    # one (above the error share, or with a fifth of its spans slow) and lasts while the
    # run's own rate stays so, so a key at one or two spans a window can still alert, within
    # a minute or two, at the same significance; past it the run slides.
    run_windows: int = 12
    # a window that is not suspicious itself carries a run on when its count is this likely at
    # the run's own rate (no error in one span of a run at 40%), and ends it when not (no
    # error in twenty)
    run_consistent: float = 0.05
    # spans per window expected before drops are judged: a run of quiet windows accumulates,
    # so a span every other window is enough (about 28 silent windows at p_value, fewer at a
    # span or more a window, more for a bursty key, whose counts are judged in units of its
    # dispersion)
    min_expected_count: float = 0.5
    # a run of quiet windows is not learned into the expected count for this long (6 minutes):
    # the sparsest key judged needs 28 windows to show a drop at p_value, a bursty one (ten
    # calls at a time) about 15, and a lasting change of level is learned after it
    drop_windows: int = 36
    drop_ratio: float = 0.3  # observed/expected at or below which traffic has dropped
    # a run of quiet windows is a drop only at a key that has had traffic in this many times
    # as many windows as the run holds: a key seen for a few minutes has not yet shown how
    # long its quiet spells can be (bursts, a daily low), and its first long one is no drop
    drop_history: float = 2.0
    rate_alpha: float = 0.1  # EWMA weight of a window in rate baselines
    fast_epoch_windows: int = 60  # latency baseline epoch (two epochs are kept)
    slow_epoch_windows: int = 360  # the slow baseline that drift is judged against
    retry_repeats: int = 3  # calls to the same operation in one trace that count as retries
    # --- latency. A span is slow above both slow_factor x the baseline p99 and p99 plus
    # min_latency_delta_ms: a change must matter in practice, not only be improbable (a 30 us
    # shift of a 95 us query on a loaded machine is not an incident).
    slow_factor: float = 1.2
    min_latency_delta_ms: float = 1.0
    slow_share: float = 0.2  # of a window's spans slow, for a spike
    slow_expected: float = 0.02  # the share slow that the baseline allows (above its p99)
    # A span far_factor x past the baseline's p99 is far beyond the key's usual range (5 sigma
    # of a lognormal at sigma 0.5, 3.7 at sigma 1), and far rarer than slow: such spans are
    # judged apart, against far_expected (or what the baseline's samples can tell: one in
    # samples + 1), from min_slow of them and min_error_share of the spans, as errors are. A
    # pause of hundreds of milliseconds in one span in twenty (a GC), or packets lost on one
    # call in four at a request or two a window, shows within minutes; a slow share of 20%
    # would never come.
    far_factor: float = 4.0
    far_expected: float = 1e-3
    # --- drift: over drift_windows windows, drift_share of spans above the slow baseline's
    # p75 (where 25% belong; tested against drift_expected for margin), and the last
    # drift_recent medians all above drift_factor x the slow median, by min_latency_delta_ms.
    # Half the spans above the old p75 is the median past it: a wide distribution (a fifth of
    # the calls going on to a slow external API) keeps more than that below it however far
    # the typical span has crept
    drift_windows: int = 18
    drift_recent: int = 6
    drift_share: float = 0.5
    drift_expected: float = 0.3
    drift_factor: float = 1.25
    # a drift whose last drift_recent medians are all over drift_step x the largest of its
    # first drift_recent came as a step, not a creep: a spike, at a key whose wide tail keeps
    # a step of its typical spans under the p99 the spike test reads (a creep to 3x over ten
    # minutes moves its median about 1.2x in those windows)
    drift_step: float = 1.5
    # --- traffic: a window below low_window_ratio x the expected count starts or extends a
    # run of quiet windows
    low_window_ratio: float = 0.5
    # --- retries: a retry storm is retried in retry_min_traces traces and retry_share of
    # those making the call, where the key's usual share was under retry_usual
    retry_min_traces: int = 3
    retry_share: float = 0.2
    retry_usual: float = 0.05
    # decay a window of a key's usual share of retried traces, counted in traces (learned only
    # from windows without a storm): as slow as the error rate (about 80 windows), so that at a
    # trace or two a window one retried trace is not a tenth of the baseline
    retry_alpha: float = 0.025
    # --- structure: a usual call that a key's spans no longer make (a handler that stops
    # short: an exception swallowed, or returned without a status code). Per key, the share of
    # its non-failed spans that call each child key is learned as the error rate is (slowly,
    # from windows without findings on it); a call made by structure_usual of them is usual,
    # and spans without it are judged as errors are (min_errors, min_error_share,
    # error_factor, p_value) against the share that lacked it (at least min_error_rate, and
    # at least one span in the key's learned spans: what a short history could not have
    # shown). 0.95 leaves out calls made on some requests only (a cache hit, a branch).
    structure_usual: float = 0.95
    # child keys learned per key (a span name with ids in it must not grow it): the least
    # used goes past it
    max_child_keys: int = 16
    # a key whose spans this window mostly failed is left to the error finding
    structure_failed_share: float = 0.5
    # structure is judged (and learned) only while the trace buffer holds whole traces: its
    # oldest trace this many windows older than the window closing (under load the buffer
    # can churn faster than traces complete, and a trace evicted and made again holds a
    # parent without its earlier children)
    structure_guard_windows: int = 2
    # --- own time: a handler span's time outside its calls (its duration less the union of
    # its children's). A CPU-starved or stalled service shows there first: 1 ms of its own
    # in front of a 25 ms chain grows 8x while its whole span grows a fifth, under the spike
    # test's tail and the drift test's margin. Per key, the median own time of a window's
    # spans whose calls all succeeded is learned slowly (as the error rate), and spans over
    # own_factor x it (and over it by min_latency_delta_ms) are judged as errors are
    # (min_slow, min_error_share, error_factor, p_value) against the share of them the
    # key's healthy windows held; min_latency_samples such spans are learned first. A span
    # with a failed call is left out: its retries and backoff are the callee's story.
    own_factor: float = 2.0
    # --- severity: one step worse for a large deviation (error rate, latency ratio, share of
    # traffic lost, calls per trace) or a wide blast radius (an entry point, or this many
    # services); one step milder under minor_share of the window's spans affected
    severe_error_rate: float = 0.25
    severe_latency_ratio: float = 5.0
    severe_drop: float = 0.8
    severe_retries: float = 5.0
    wide_services: int = 3
    minor_share: float = 0.01
    cascade_services: int = 3  # failing servers along one call chain that make a cascade
    trace_windows: int = 6  # windows a kept trace lives for root-cause analysis
    max_silence_windows: int = 360  # after a longer silence only its last hour is judged

    @property
    def window_ns(self) -> int:
        return int(self.window_s * 1e9)

    @property
    def slow_alpha(self) -> float:
        """The EWMA weight of what is learned slower than rates (the error rate, a count's
        variance, usual calls: about 80 windows): a few errors, or a noisy window, must not
        move them much."""
        return self.rate_alpha / 4
