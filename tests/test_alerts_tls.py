"""Alert delivery over TLS: the CA to trust, a client certificate for mutual TLS."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from spanwatch.config import load
from spanwatch.model import Event, EventType
from spanwatch.publish import Alerting
from tests.events import incident
from tests.test_tls import Pki, pki  # noqa: F401  (the fixture)


async def _https_server(certs: Pki) -> tuple[web.AppRunner, str, list[Any]]:
    calls: list[Any] = []

    async def handle(request: web.Request) -> web.Response:
        calls.append(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/api/v2/alerts", handle)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca))
    context.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, f"https://127.0.0.1:{runner.addresses[0][1]}", calls


def _deliver(certs: Pki, **overrides: Any) -> tuple[int, float]:
    """Send one alert; (alerts received by the server, alerts counted failed)."""

    async def run() -> tuple[int, float]:
        runner, url, calls = await _https_server(certs)
        registry = CollectorRegistry()
        settings = load(
            env={},
            overrides={"alerts.alertmanager_url": url, "alerts.attempts": 1, **overrides},
        ).alerts
        alerting = Alerting(settings, registry, "https://page.example/")
        alerting.start()
        try:
            event = Event.incident(EventType.INCIDENT_OPENED, incident(1))
            alerting({"type": event.type, "seq": 1, **event.fields})
            for _ in range(100):
                failed = registry.get_sample_value(
                    "spanwatch_alerts_failed_total", {"sink": "alertmanager"}
                )
                if calls or failed:
                    break
                await asyncio.sleep(0.05)
            return len(calls), failed or 0.0
        finally:
            await alerting.stop(flush_s=1)
            await runner.cleanup()

    return asyncio.run(run())


def test_mutual_tls_with_the_ca_and_a_client_certificate(pki: Pki) -> None:  # noqa: F811
    """alerts.ca_file, cert_file and key_file: the alert is delivered over mutual TLS."""
    received, failed = _deliver(
        pki,
        **{
            "alerts.ca_file": str(pki.ca),
            "alerts.cert_file": str(pki.client_cert),
            "alerts.key_file": str(pki.client_key),
        },
    )
    assert (received, failed) == (1, 0)


def test_an_untrusted_server_is_refused(pki: Pki) -> None:  # noqa: F811
    """Without the CA the server's certificate does not verify: nothing is sent, it counts."""
    received, failed = _deliver(
        pki,
        **{"alerts.cert_file": str(pki.client_cert), "alerts.key_file": str(pki.client_key)},
    )
    assert (received, failed) == (0, 1)


def test_no_client_certificate_is_refused_by_a_mutual_tls_server(pki: Pki) -> None:  # noqa: F811
    """With the CA but no client certificate, the mutual-TLS server refuses the connection."""
    received, failed = _deliver(pki, **{"alerts.ca_file": str(pki.ca)})
    assert (received, failed) == (0, 1)
