"""Shared fixtures: an engine on a virtual clock, a runner that drives sync and async, and a
durable store per backend (``server``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tideflow import Engine, Run, VirtualClock, Workflow

Runner = Callable[..., Run]


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clock, fresh per test."""
    return VirtualClock()


@pytest.fixture
def engine(clock: VirtualClock) -> Engine:
    """An in-memory engine on the virtual clock."""
    return Engine(clock=clock)


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest, engine: Engine) -> Runner:
    """Runs a workflow with `engine.run` or `engine.run_async` (each test runs under both)."""

    def sync(wf: Workflow, value: Any = None, **kw: Any) -> Run:
        return engine.run(wf, value, **kw)

    def asyn(wf: Workflow, value: Any = None, **kw: Any) -> Run:
        return asyncio.run(engine.run_async(wf, value, **kw))

    return sync if request.param == "sync" else asyn


@pytest.fixture
def server(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite (the test makes its own file), else the URL of a server store on a fresh
    namespace of its own, dropped afterwards. Parametrise it indirectly over
    ``tests.servers.BACKENDS``; a missing server skips, or fails under ``CI=true``."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        return None
    from tests.servers import namespaced

    url, drop = namespaced(kind)
    request.addfinalizer(drop)
    return url
