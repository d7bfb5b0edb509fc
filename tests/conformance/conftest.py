"""The store fixture: the conformance suite runs once per store.

Each parameter gives a `Stores` handle whose `engine()` opens an engine on the store under test;
`engine(fresh=True)` stands for a restarted process (a new engine on the same data where the store
outlives an engine; the same engine for the in-memory store, whose data lives in it). Stores
that need a server (PostgreSQL, Redis, MongoDB) will be added here; a missing server will skip
locally and fail under CI=true.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tideflow import Engine, VirtualClock


class Stores:
    """Opens engines on one store under test, sharing one virtual clock."""

    def __init__(self, name: str, make: Callable[[VirtualClock], Engine], durable: bool) -> None:
        self.name = name
        self.durable = durable
        self.clock = VirtualClock()
        self._make = make
        self._current: Engine | None = None

    def engine(self, fresh: bool = False) -> Engine:
        """The engine on this store; `fresh=True` simulates a restarted process."""
        if self._current is None or (fresh and self.durable):
            self._current = self._make(self.clock)
        return self._current


def _sqlite(tmp: Path) -> Callable[[VirtualClock], Engine]:
    path = tmp / "conformance.db"
    return lambda clock: Engine(store=f"sqlite:///{path}", clock=clock)


STORES = ["memory", "sqlite", "python"]
DURABLE = ["sqlite", "python"]


@pytest.fixture(params=STORES)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    """A handle on the store under test."""
    return _open(request.param, tmp_path)


@pytest.fixture(params=DURABLE)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    """A handle on a store whose data outlives an engine (a restart is a new engine)."""
    return _open(request.param, tmp_path)


def _open(name: str, tmp_path: Path) -> Stores:
    if name == "memory":
        return Stores(name, lambda clock: Engine(clock=clock), durable=False)
    if name == "sqlite":
        return Stores(name, _sqlite(tmp_path), durable=True)
    if name == "python":
        from .dict_store import DictStore

        data = DictStore()  # outlives each engine, like a database would
        return Stores(name, lambda clock: Engine(store=data, clock=clock), durable=True)
    raise ValueError(f"unknown store {name!r} in the conformance parameters")
