"""One typed configuration: TOML file < ``SPANWATCH_<SECTION>__<KEY>`` environment < flags.

>>> cfg = load(env={"SPANWATCH_ANALYSIS__BATCH_WINDOW": "2s"})
>>> cfg.analysis.batch_window
2.0
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from spanwatch.errors import SpanwatchError

from ._auth import BearerToken
from ._schema import (
    LLM,
    TLS,
    Analysis,
    Auth,
    Config,
    Detector,
    Events,
    Log,
    Publish,
    Receiver,
    Storage,
)
from ._tls import ssl_context
from ._types import ListenAddress, format_duration, parse_duration, parse_size

__all__ = [
    "LLM",
    "TLS",
    "Analysis",
    "Auth",
    "BearerToken",
    "Config",
    "ConfigError",
    "Detector",
    "Events",
    "ListenAddress",
    "Log",
    "Publish",
    "Receiver",
    "Storage",
    "format_duration",
    "load",
    "parse_duration",
    "parse_size",
    "ssl_context",
]

ENV_PREFIX = "SPANWATCH_"


class ConfigError(SpanwatchError):
    """The configuration cannot be used; the message names each bad key and what it accepts."""


def load(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration from a TOML file, the environment and flag overrides.

    ``overrides`` maps dotted keys (``"receiver.grpc_listen"``) to values; later layers win.
    """
    layered: dict[str, Any] = {}
    if path is not None:
        _merge(layered, _read_toml(Path(path)), source=str(path))
    _merge(layered, _from_env(env), source="environment")
    if overrides:
        _merge(layered, _nest(overrides.items(), source="flags"), source="flags")
    try:
        return Config.model_validate(layered)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def _from_env(env: Mapping[str, str] | None) -> dict[str, Any]:
    import os

    source = os.environ if env is None else env
    pairs = []
    for name, value in source.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue  # e.g. SPANWATCH_API belongs to the CLI
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        pairs.append((f"{section.lower()}.{key.lower()}", value))
    return _nest(pairs, source="environment")


def _nest(items: Any, source: str) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in items:
        section, _, key = dotted.partition(".")
        if not key or "." in key:
            raise ConfigError(f"{source}: {dotted!r} is not SECTION.KEY")
        nested.setdefault(section, {})[key] = value
    return nested


def _merge(into: dict[str, Any], layer: Mapping[str, Any], source: str) -> None:
    for section, values in layer.items():
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: [{section}] must be a table of keys, not a value")
        into.setdefault(section, {}).update(values)


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "configuration"
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key; accepted: {_accepted(err['loc'])}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _accepted(loc: tuple[int | str, ...]) -> str:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            break
        model = field.annotation
    return ", ".join(sorted(model.model_fields))
