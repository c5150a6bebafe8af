"""Redaction of secrets and personal data, before text reaches a prompt, the store or an export.

Span names, attributes, exception messages and URLs are written by whoever sends traffic; they
carry credentials and personal data more often than anyone intends. Each rule replaces what it
finds with a marker naming what was there, so the model (and a reader) still sees the shape.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    # user:password@ in URLs and DSNs: keep the user and host, drop the password
    (
        "url_password",
        re.compile(r"(?P<keep>\b[a-zA-Z][\w+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)"),
        r"\g<keep>[REDACTED:password]",
    ),
    (
        "bearer_token",
        re.compile(r"(?i)\b(bearer|basic)\s+[a-z0-9._~+/=-]{8,}"),
        r"\1 [REDACTED:token]",
    ),
    (
        "key_value_secret",
        re.compile(
            r"(?i)(?P<key>\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|"
            r"client[_-]?secret|auth)\b\s*[=:]\s*)(?P<quote>[\"']?)[^\s\"'&,;]+"
        ),
        r"\g<key>\g<quote>[REDACTED:secret]",
    ),
    (
        "api_key",
        re.compile(
            r"\b(?:sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|"
            r"xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})"
        ),
        "[REDACTED:api_key]",
    ),
    (
        "email",
        re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
        "[REDACTED:email]",
    ),
)
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{1,4}(?![\w:])")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@dataclass
class Redactor:
    """``redact(text)`` → text with secrets replaced; ``counts`` says what was found."""

    ip_addresses: bool = False
    counts: Counter[str] = field(default_factory=Counter)

    def redact(self, text: str) -> str:
        if not text:
            return text
        for name, pattern, replacement in _RULES:
            text, n = pattern.subn(replacement, text)
            if n:
                self.counts[name] += n
        text = _CARD.sub(self._card, text)
        if self.ip_addresses:
            text = _IPV4.sub(self._ip, text)
            text = _IPV6.sub(self._ip, text)
        return text

    def _ip(self, match: re.Match[str]) -> str:
        try:
            ipaddress.ip_address(match.group(0))
        except ValueError:  # a time of day, a path with colons: not an address
            return match.group(0)
        self.counts["ip_address"] += 1
        return "[REDACTED:ip]"

    def _card(self, match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if 13 <= len(digits) <= 19 and _luhn(digits):
            self.counts["card_number"] += 1
            return "[REDACTED:card]"
        return match.group(0)

    def redact_mapping(self, value: dict[str, Any]) -> dict[str, Any]:
        """A copy of a JSON-like mapping with every string in it redacted."""
        return {k: self.redact_tree(v) for k, v in value.items()}

    def redact_tree(self, value: object) -> object:
        """Redact every string inside dicts, lists and tuples."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self.redact_tree(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_tree(v) for v in value]
        return value
