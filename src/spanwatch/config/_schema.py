"""The typed configuration. Every default runs on one machine with nothing else installed.

``config/spanwatch.toml`` documents each key; keep the two in step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._types import Address, Duration, ListenAddress, Size


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Receiver(_Section):
    """The OTLP receivers (DESIGN contract 3)."""

    grpc_listen: Address = ListenAddress("127.0.0.1", 4317)
    http_listen: Address = ListenAddress("127.0.0.1", 4318)
    max_request_size: Size = Field(default=64 << 20, gt=0)
    # Spans decoded but not yet processed; past this the receivers answer with a retryable status.
    queue_spans: int = Field(default=262_144, ge=8192)
    # Above this resident memory, requests are refused with a retryable status (like the
    # Collector's memory_limiter). 0 turns it off.
    memory_limit: Size = 1 << 30
    # What the Retry-After header and RetryInfo suggest when the queue is full.
    retry_after: Duration = 1.0
    # How long SIGTERM waits for in-flight Export calls before cutting them.
    shutdown_grace: Duration = 5.0


class Publish(_Section):
    """Where events go: the WebSocket listener (and the live page)."""

    ws_listen: Address = ListenAddress("127.0.0.1", 8765)
    # Events kept for subscribers that resume with ?since=SEQ.
    replay_ring: int = Field(default=10_000, ge=100)
    # Messages a subscriber may fall behind before it is disconnected (it can then resume).
    subscriber_queue: int = Field(default=1024, ge=16)
    # WebSocket ping interval (and pong timeout); 0 turns keepalive off.
    ping_interval: Duration = 20.0
    # Browser origins allowed besides the page's own, e.g. ["https://grafana.example.com"].
    allowed_origins: tuple[str, ...] = ()
    # Where people reach the live page (links in alerts); empty: http://<ws_listen>/.
    page_url: str = ""
    # A link to a trace in the tracing backend; {trace_id} is replaced by the hex id, e.g.
    # "https://tempo.example/trace/{trace_id}". Empty: trace ids are shown without links.
    trace_url: str = ""

    @model_validator(mode="after")
    def _trace_url_names_the_trace(self) -> Publish:
        if self.trace_url and "{trace_id}" not in self.trace_url:
            raise ValueError("trace_url must contain {trace_id}")
        return self


class Events(_Section):
    """OpenTelemetry log events out, through the SDK's OTLP log exporter (gRPC)."""

    # auto: on when events.endpoint or OTEL_EXPORTER_OTLP_(LOGS_)ENDPOINT is set.
    enabled: Literal["auto", "true", "false"] = "auto"
    # Empty: the standard OTEL_EXPORTER_OTLP_* variables decide.
    endpoint: str = ""
    insecure: bool = True
    queue_size: int = Field(default=2048, ge=16)
    export_timeout: Duration = 10.0


class Alerts(_Section):
    """Incidents to Prometheus Alertmanager (v2 API) and to a signed JSON webhook."""

    # e.g. "http://alertmanager:9093"; empty: no Alertmanager.
    alertmanager_url: str = ""
    # Incidents of this severity or worse (1 is worst) become alerts and webhook calls.
    min_severity: int = Field(default=3, ge=1, le=5)
    # How often open incidents are sent again (Alertmanager forgets an alert after its endsAt,
    # which is set resend_intervals ahead).
    resend_interval: Duration = 60.0
    resend_intervals: int = Field(default=4, ge=2)
    # A resolved incident is sent (with its endsAt) for this long, in case a send was lost.
    resolved_retention: Duration = 900.0
    # Attempts per send (with jittered exponential backoff), and the timeout of each attempt.
    attempts: int = Field(default=4, ge=1, le=20)
    timeout: Duration = 10.0
    # Alerts waiting to be sent; past this the oldest is dropped and counted.
    queue_size: int = Field(default=1000, ge=10)
    # Authentication to Alertmanager: a bearer token (or a file holding it), or basic auth.
    bearer_token: str = Field(default="", repr=False, exclude=True)
    bearer_token_file: Path | None = None
    basic_auth_user: str = ""
    basic_auth_password: str = Field(default="", repr=False, exclude=True)
    # TLS to Alertmanager and the webhook: a CA bundle, a client certificate, or no check.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False
    # A JSON webhook for everything else; the body is signed with HMAC-SHA256 of the secret.
    webhook_url: str = ""
    webhook_secret: str = Field(default="", repr=False, exclude=True)
    webhook_secret_file: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Alerts:
        for name in ("alertmanager_url", "webhook_url"):
            url = getattr(self, name)
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"{name} must start with http:// or https://, not {url!r}")
        if self.bearer_token and self.bearer_token_file:
            raise ValueError("set alerts.bearer_token or alerts.bearer_token_file, not both")
        if (self.bearer_token or self.bearer_token_file) and self.basic_auth_user:
            raise ValueError("set a bearer token or basic auth for Alertmanager, not both")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("set alerts.cert_file and alerts.key_file together")
        if self.webhook_secret and self.webhook_secret_file:
            raise ValueError("set alerts.webhook_secret or alerts.webhook_secret_file, not both")
        if self.webhook_url and not (self.webhook_secret or self.webhook_secret_file):
            raise ValueError("alerts.webhook_url needs alerts.webhook_secret(_file) to sign with")
        return self


class Storage(_Section):
    data_dir: Path = Path("spanwatch-data")
    # How long a write waits for a database lock held elsewhere before giving up (503).
    busy_timeout: Duration = 5.0


class Detector(_Section):
    """The streaming detector (event-time windows, baselines, incidents)."""

    window: Duration = 10.0
    lateness: Duration = 5.0
    warmup_windows: int = Field(default=12, ge=1)
    quiet_windows: int = Field(default=6, ge=1)
    max_keys: int = Field(default=50_000, ge=100)
    max_traces: int = Field(default=20_000, ge=100)
    snapshot_interval: Duration = 60.0
    # Event time on a fleet of clocks (docs/detection.md): a source up to max_lag behind is
    # waited for; one further behind or more than max_ahead ahead is judged on a corrected time.
    max_lag: Duration = 120.0
    max_ahead: Duration = 60.0
    # Resource attributes that, with service.name, make a service's identity.
    identity: list[str] = Field(
        default_factory=lambda: ["service.namespace", "deployment.environment.name"],
        max_length=8,
    )
    # Server spans of these paths (http.route, else url.path) are probes: they make no key
    # and no baseline (nor do gRPC health checks, nor requests no route matched).
    # The same defaults as the detector's own Settings (tests/test_config.py holds them equal).
    probe_paths: list[str] = Field(
        default_factory=lambda: [
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
        ],
        max_length=64,
    )


class Analysis(_Section):
    """The LLM write-up stage: which incidents, and how they are batched."""

    enabled: bool = True
    batch_window: Duration = 30.0
    min_severity: int = Field(default=3, ge=1, le=5)
    max_batch: int = Field(default=8, ge=1)
    queue_batches: int = Field(default=8, ge=1)
    prompt_tokens: int = Field(default=3000, ge=500)
    redact_ip_addresses: bool = False


class LLM(_Section):
    """The Ollama server the analysis stage talks to."""

    host: str = ""
    model: str = "llama3.2:1b"
    repeat_penalty: float = Field(default=1.3, gt=0)
    temperature: float = Field(default=0.2, ge=0)
    num_ctx: int = Field(default=4096, ge=512)
    num_predict: int = Field(default=512, ge=16)
    keep_alive: str = "5m"
    timeout: Duration = 120.0
    first_token_timeout: Duration = 30.0
    retries: int = Field(default=2, ge=0, le=10)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_cooldown: Duration = 60.0

    @model_validator(mode="after")
    def _host_from_environment(self) -> LLM:
        if not self.host:
            host = os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434"
            object.__setattr__(self, "host", host)
        return self


class Auth(_Section):
    """A bearer token every port asks for; empty means no authentication."""

    token: str = Field(default="", repr=False, exclude=True)
    token_file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Auth:
        if self.token and self.token_file:
            raise ValueError("set auth.token or auth.token_file, not both")
        return self

    def resolve_token(self) -> str:
        """The token in force: read from ``token_file`` each call, so SIGHUP can rotate it."""
        if self.token_file is not None:
            return self.token_file.read_text(encoding="utf-8").strip()
        return self.token


class TLS(_Section):
    """TLS on the gRPC, HTTP and WebSocket listeners; a client CA makes it mutual TLS."""

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None

    @model_validator(mode="after")
    def _complete(self) -> TLS:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("set tls.cert_file and tls.key_file together")
        if self.client_ca_file and not self.cert_file:
            raise ValueError("tls.client_ca_file needs tls.cert_file and tls.key_file")
        for path in (self.cert_file, self.key_file, self.client_ca_file):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a readable file")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class Log(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: pretty on a terminal, JSON otherwise.
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Section):
    receiver: Receiver = Field(default_factory=Receiver)
    publish: Publish = Field(default_factory=Publish)
    events: Events = Field(default_factory=Events)
    alerts: Alerts = Field(default_factory=Alerts)
    detector: Detector = Field(default_factory=Detector)
    storage: Storage = Field(default_factory=Storage)
    analysis: Analysis = Field(default_factory=Analysis)
    llm: LLM = Field(default_factory=LLM)
    auth: Auth = Field(default_factory=Auth)
    tls: TLS = Field(default_factory=TLS)
    log: Log = Field(default_factory=Log)
