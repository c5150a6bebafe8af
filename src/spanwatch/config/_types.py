"""Value types that configuration strings turn into: durations, sizes, listen addresses."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    None: 1,
}


def parse_duration(value: Any) -> float:
    """Seconds from ``500ms``, ``2s``, ``5m``, ``1h`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 2s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration: use 500ms, 2s, 5m or 1h")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"


def parse_size(value: Any) -> int:
    """Bytes from ``65536``, ``512KiB``, ``64MiB`` or ``1GB``."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 64MiB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        size = int(m.group(1)) * _SIZE_UNITS[unit]
    else:
        raise ValueError(f"{value!r} is not a size: use bytes or 512KiB, 64MiB, 1GiB")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A host and a TCP port to bind; port 0 asks the kernel for a free one."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, value: Any, default_host: str = "127.0.0.1") -> ListenAddress:
        if isinstance(value, ListenAddress):
            return value
        if not isinstance(value, str):
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:4317, [::1]:4317 or :4317")
        text = value.strip()
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            if not sep:
                raise ValueError(f"{value!r} is not HOST:PORT (an IPv6 host needs [..]:PORT)")
        else:
            host, sep, port = text.rpartition(":")
            if not sep or ":" in host:
                raise ValueError(
                    f"{value!r} is not HOST:PORT: use 127.0.0.1:4317, [::1]:4317 or :4317"
                )
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r}: the port must be a number from 0 to 65535")
        return cls(host or default_host, int(port))


Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
Size = Annotated[int, BeforeValidator(parse_size)]
Address = Annotated[
    ListenAddress, BeforeValidator(ListenAddress.parse), PlainSerializer(str, return_type=str)
]
