"""Server-side TLS settings as an ``ssl.SSLContext`` (for aiohttp and websockets)."""

from __future__ import annotations

import ssl

from ._schema import TLS


def ssl_context(tls: TLS) -> ssl.SSLContext | None:
    """An SSL context for aiohttp and websockets; None without TLS."""
    if not tls.enabled:
        return None
    assert tls.cert_file is not None and tls.key_file is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        context.load_verify_locations(tls.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
