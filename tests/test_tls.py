"""TLS and mutual TLS on the gRPC, HTTP and WebSocket listeners, with certificates made here."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from websockets.asyncio.client import connect

from spanwatch.config import ConfigError, load
from tests.conftest import RunningDaemon
from tests.otlp_client import EXPORT_METHOD
from tests.otlp_payloads import request, span

BODY = request(span()).SerializeToString()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
    usage: x509.ObjectIdentifier | None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1, a client certificate, and one from elsewhere."""
    out = tmp_path_factory.mktemp("pki")

    def write(name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        (out / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (out / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    write("ca", ca_key, _cert("test ca", ca_key, "test ca", ca_key, True, None))
    for name, issuer, issuer_key, usage in (
        ("server", "test ca", ca_key, ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", "test ca", ca_key, ExtendedKeyUsageOID.CLIENT_AUTH),
        ("stranger", "other ca", other_key, ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        write(name, key, _cert(name, key, issuer, issuer_key, False, usage))
    return Pki(
        out / "ca.crt",
        out / "server.crt",
        out / "server.key",
        out / "client.crt",
        out / "client.key",
        out / "stranger.crt",
        out / "stranger.key",
    )


def _tls(pki: Pki, mutual: bool = False) -> dict[str, str]:
    """Daemon settings for TLS, and for mutual TLS with the test CA."""
    settings = {"tls.cert_file": str(pki.server_cert), "tls.key_file": str(pki.server_key)}
    if mutual:
        settings["tls.client_ca_file"] = str(pki.ca)
    return settings


def _grpc(target: str, pki: Pki, client: str | None) -> grpc.StatusCode:
    cert = key = None
    if client is not None:
        cert = (pki.client_cert if client == "client" else pki.stranger_cert).read_bytes()
        key = (pki.client_key if client == "client" else pki.stranger_key).read_bytes()
    creds = grpc.ssl_channel_credentials(pki.ca.read_bytes(), key, cert)
    with grpc.secure_channel(target, creds) as channel:
        try:
            channel.unary_unary(EXPORT_METHOD).with_call(BODY, timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def _https(url: str, pki: Pki, client: str | None) -> int | str:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client == "client":
        context.load_cert_chain(pki.client_cert, pki.client_key)
    elif client == "stranger":
        context.load_cert_chain(pki.stranger_cert, pki.stranger_key)
    req = urllib.request.Request(
        url, data=BODY, method="POST", headers={"Content-Type": "application/x-protobuf"}
    )
    try:
        with urllib.request.urlopen(req, context=context, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        return type(exc).__name__


def test_tls_on_every_listener(make_daemon: Callable[..., RunningDaemon], pki: Pki) -> None:
    """With a certificate set, gRPC, HTTP and WebSocket speak TLS, and plain text is refused."""
    d = make_daemon(**_tls(pki))
    assert _grpc(d.grpc_target, pki, None) == grpc.StatusCode.OK
    with grpc.insecure_channel(d.grpc_target) as channel, pytest.raises(grpc.RpcError):
        channel.unary_unary(EXPORT_METHOD).with_call(BODY, timeout=5)
    assert _https(f"https://127.0.0.1:{d.daemon.http_port}/v1/traces", pki, None) == 200
    plain = urllib.request.Request(f"http://127.0.0.1:{d.daemon.http_port}/healthz")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(plain, timeout=5)

    async def wss() -> str:
        context = ssl.create_default_context(cafile=str(pki.ca))
        async with connect(f"wss://127.0.0.1:{d.daemon.ws.port}/events", ssl=context) as ws:
            await ws.send('{"type": "ping"}')
            return str(await asyncio.wait_for(ws.recv(), 5))

    assert '"pong"' in asyncio.run(wss())
    assert d.metric("spanwatch_receiver_accepted_spans_total", transport="grpc") == 1


def test_mutual_tls_wants_a_client_certificate_from_the_ca(
    make_daemon: Callable[..., RunningDaemon], pki: Pki
) -> None:
    """With tls.client_ca_file: no client certificate or a stranger's is refused."""
    d = make_daemon(**_tls(pki, mutual=True))
    assert _grpc(d.grpc_target, pki, "client") == grpc.StatusCode.OK
    assert _grpc(d.grpc_target, pki, None) == grpc.StatusCode.UNAVAILABLE
    assert _grpc(d.grpc_target, pki, "stranger") == grpc.StatusCode.UNAVAILABLE
    url = f"https://127.0.0.1:{d.daemon.http_port}/v1/traces"
    assert _https(url, pki, "client") == 200
    assert _https(url, pki, None) != 200
    assert _https(url, pki, "stranger") != 200
    assert d.metric("spanwatch_receiver_accepted_spans_total", transport="grpc") == 1
    assert d.metric("spanwatch_receiver_accepted_spans_total", transport="http") == 1


def test_the_sdk_exporter_sends_over_mutual_tls(
    make_daemon: Callable[..., RunningDaemon], pki: Pki
) -> None:
    """The OpenTelemetry SDK's gRPC exporter, with its client certificate, gets through."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    d = make_daemon(**_tls(pki, mutual=True))
    creds = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
    )
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=d.grpc_target, credentials=creds))
    )
    with provider.get_tracer("t").start_as_current_span("over tls"):
        pass
    provider.shutdown()
    assert [s.name for s in d.wait_for_spans(1)] == ["over tls"]


def test_incomplete_tls_settings_are_refused(pki: Pki, tmp_path: Path) -> None:
    """A certificate without its key, or a missing file, stops the daemon at configuration."""
    with pytest.raises(ConfigError, match=r"set tls\.cert_file and tls\.key_file together"):
        load(env={"SPANWATCH_TLS__CERT_FILE": str(pki.server_cert)})
    with pytest.raises(ConfigError, match="is not a readable file"):
        load(
            env={
                "SPANWATCH_TLS__CERT_FILE": str(tmp_path / "nope.crt"),
                "SPANWATCH_TLS__KEY_FILE": str(pki.server_key),
            }
        )
