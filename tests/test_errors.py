"""One exception tree: every error spanwatch raises on purpose is a SpanwatchError, and every
REST route answers a store that cannot be used now with the same 503."""

from __future__ import annotations

import asyncio
import inspect
import pkgutil
from importlib import import_module
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import spanwatch
from spanwatch import SpanwatchError
from spanwatch.daemon._rest import RestApi
from spanwatch.store import StoreError

# The demo's signal handler stops its loop with an exception of its own, never raised to a caller.
CONTROL_FLOW = {"_Stop"}
SKIP_MODULES = ("spanwatch.daemon.__main__",)


def _own_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(spanwatch.__path__, "spanwatch."):
        if info.name.startswith(SKIP_MODULES) or info.name.endswith("__main__"):
            continue
        module = import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__.startswith("spanwatch.")
            ):
                found[f"{obj.__module__}.{name}"] = obj
    return list(found.values())


def test_every_error_of_spanwatch_derives_from_its_root() -> None:
    """Each exception class spanwatch defines is a SpanwatchError (the demo's own stop aside)."""
    strays = [
        f"{e.__module__}.{e.__qualname__}"
        for e in _own_exceptions()
        if not issubclass(e, SpanwatchError) and not any(issubclass(e, n) for n in _control_flow(e))
    ]
    assert not strays, strays


def _control_flow(error: type[BaseException]) -> list[type[BaseException]]:
    return [base for base in error.__mro__ if base.__name__ in CONTROL_FLOW]


class _Unavailable:
    """A store (and a rating desk) every call of which finds the database unusable."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise StoreError(f"cannot {name}: database or disk is full")

        return fail

    async def rate(self, body: Any, rater: str = "") -> Any:
        raise StoreError("cannot rate: database or disk is full")


# A request that would succeed with a working store, for each route; path parameters filled in.
REQUESTS = {
    "/api/training/rate": {"json": {"analysis_id": "a1", "rating": "good"}},
    "/api/training/export": {"params": {"format": "seed"}},
    "/api/analyses/{analysis_id}": {"path": "/api/analyses/a1"},
}
# Routes that still answer 200 without the store, saying what they cannot tell.
DEGRADED = {"/api/status"}


def test_every_route_answers_an_unusable_store_with_503() -> None:
    """Walk every REST route with the store unavailable: 503 and an error message, never 500."""
    api = RestApi(_Unavailable(), _Unavailable())  # type: ignore[arg-type]
    app = web.Application()
    app.add_routes(api.routes())
    routes = [(r.method, r.resource.canonical) for r in app.router.routes() if r.resource]

    async def walk() -> dict[str, tuple[int, Any]]:
        answers: dict[str, tuple[int, Any]] = {}
        async with TestClient(TestServer(app)) as client:
            for method, path in routes:
                spec = REQUESTS.get(path, {})
                response = await client.request(
                    method,
                    spec.get("path", path),
                    params=spec.get("params"),
                    json=spec.get("json"),
                )
                answers[path] = (response.status, await response.json())
        return answers

    answers = asyncio.run(walk())
    assert len(answers) == len(api.routes())
    for path, (status, body) in answers.items():
        if path in DEGRADED:
            assert status == 200 and "error" in body["incidents"], (path, body)
        else:
            assert status == 503, (path, status, body)
            assert "database or disk is full" in body["error"], (path, body)


@pytest.mark.parametrize("name", ["InvalidRating", "UnknownAnalysis", "StorageUnavailable"])
def test_the_model_errors_keep_their_builtin_bases(name: str) -> None:
    """Code that catches ValueError or LookupError still catches the refined errors."""
    error = getattr(import_module("spanwatch.model"), name)
    assert issubclass(error, SpanwatchError)
    if name == "InvalidRating":
        assert issubclass(error, ValueError)
    if name == "UnknownAnalysis":
        assert issubclass(error, LookupError)
