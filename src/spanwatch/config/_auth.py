"""The bearer token that every port checks, compared in constant time."""

from __future__ import annotations

import hmac

from ._schema import Auth


class BearerToken:
    """Checks ``Authorization: Bearer <token>`` values against the configured token.

    With no token configured every request is allowed. :meth:`reload` re-reads
    ``auth.token_file`` so a SIGHUP can rotate the token without a restart.
    """

    def __init__(self, auth: Auth) -> None:
        self._auth = auth
        self._expected = b""
        self.reload()

    @property
    def enabled(self) -> bool:
        return bool(self._expected)

    def reload(self, auth: Auth | None = None) -> None:
        if auth is not None:
            self._auth = auth
        self._expected = self._auth.resolve_token().encode()

    def allows(self, authorization: str | None) -> bool:
        if not self._expected:
            return True
        if not authorization:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self._expected)
