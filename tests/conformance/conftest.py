"""The store fixtures: the conformance suite runs once per store.

Each parameter of `stores` gives a `Stores` handle whose `engine()` opens an engine on the store
under test; `engine(fresh=True)` stands for a restarted process (a new engine on the same data where
the store outlives an engine; the same engine for the in-memory store, whose data lives in it).
`durable` is the same over the stores whose data outlives an engine.

Stores written in Python are listed once, by name: synchronous ones (`tideflow.stores.base.Store`)
in `PYTHON_STORES`, asynchronous ones (`AsyncStore`) in `ASYNC_STORES`. A factory is a context
manager that takes the test's `tmp_path`, yields a new, empty store and cleans it up on exit.
Every store listed there runs the whole engine-level suite (through `stores` and `durable`) and
the store-protocol suite (`test_protocol_*.py`, through `store`, which gives every store, sync or
async, one synchronous face: `facade.SyncFacade`), unchanged. The native stores (memory, SQLite)
run the protocol suite through `Engine(...).store`. The server stores (PostgreSQL, Redis,
MongoDB) are listed in `ASYNC_STORES`, each on a fresh schema, key prefix or database of the
shared test server (`tests/servers`): a missing server skips, or fails under `CI=true`.

Run the suite on it alone with `pytest tests/conformance -k postgres`.

The store must be empty when yielded (each test starts from nothing) and must not share data with
another test; a store reached over the network should use a fresh schema, key prefix or database
per test rather than wiping a shared one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import cast

import pytest

from tideflow import Engine, VirtualClock
from tideflow.stores.base import AsyncStore, Store

from .facade import SyncFacade


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


@contextmanager
def _dict_store(tmp: Path) -> Iterator[Store]:
    from .dict_store import DictStore

    yield DictStore()


@contextmanager
def _async_dict_store(tmp: Path) -> Iterator[AsyncStore]:
    from .async_dict_store import AsyncDictStore

    yield AsyncDictStore()


#: Per server kind: its store class in ``tideflow.stores`` and the keyword that names a fresh
#: namespace (schema, key prefix, database) on the shared test server.
_SERVER_STORES = {
    "postgres": ("PostgresStore", "schema"),
    "redis": ("RedisStore", "prefix"),
    "mongo": ("MongoStore", "database"),
}


@contextmanager
def _server_store(kind: str, tmp: Path) -> Iterator[AsyncStore]:
    """A server store on a fresh namespace, judged by the engine's (virtual) lease clock, and
    dropped afterwards."""
    import tideflow.stores

    from ..servers import server_url, unique_name

    cls_name, keyword = _SERVER_STORES[kind]
    cls = getattr(tideflow.stores, cls_name)
    store = cls(server_url(kind), **{keyword: unique_name()}, lease_clock="engine")
    try:
        yield store
    finally:
        store.drop()
        store.close()


#: The synchronous stores written in Python, by name: a factory each (see the module docstring).
PYTHON_STORES: dict[str, Callable[[Path], AbstractContextManager[Store]]] = {
    "dict": _dict_store,  # the reference implementation, on dicts
}

#: The asynchronous stores written in Python, by name: a factory each (see the module docstring).
ASYNC_STORES: dict[str, Callable[[Path], AbstractContextManager[AsyncStore]]] = {
    "async-dict": _async_dict_store,  # the reference implementation, awaited
    **{kind: partial(_server_store, kind) for kind in _SERVER_STORES},
}


@contextmanager
def _blocking(name: str, tmp: Path) -> Iterator[Store]:
    with ASYNC_STORES[name](tmp) as store:
        yield cast(Store, store.blocking())  # type: ignore[attr-defined]


#: The synchronous twins of the server stores (``blocking()``), which ``engine.run`` uses: the
#: protocol suite runs on them too.
BLOCKING_STORES: dict[str, Callable[[Path], AbstractContextManager[Store]]] = {
    f"{name}-blocking": (lambda tmp, name=name: _blocking(name, tmp))  # type: ignore[misc]
    for name in _SERVER_STORES
}

#: The stores written in Python, synchronous or not.
ALL_PYTHON: dict[str, Callable[[Path], AbstractContextManager[Store | AsyncStore]]] = {
    **PYTHON_STORES,
    **ASYNC_STORES,
}

STORES = ["memory", "sqlite", *ALL_PYTHON]
DURABLE = ["sqlite", *ALL_PYTHON]
#: The native stores, which the protocol suite reaches as `Engine(...).store`.
NATIVE = ["memory", "sqlite"]
#: The stores the protocol suite calls directly.
PROTOCOL = [*NATIVE, *ALL_PYTHON, *BLOCKING_STORES]


@pytest.fixture(params=STORES)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """A handle on the store under test."""
    with _open(request.param, tmp_path) as handle:
        yield handle


@pytest.fixture(params=DURABLE)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """A handle on a store whose data outlives an engine (a restart is a new engine)."""
    with _open(request.param, tmp_path) as handle:
        yield handle


@pytest.fixture(params=PROTOCOL)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SyncFacade]:
    """A new, empty store, called directly through the store protocol, synchronously (an
    `AsyncStore`'s coroutines run on a private event loop)."""
    peers: Callable[[], Store] | None = None
    if request.param == "sqlite":
        from tideflow.stores import SQLiteStore

        path = tmp_path / "protocol.db"
        peers = lambda: SQLiteStore(path)  # noqa: E731 -- another connection, as another process
    with _protocol_store(request.param, tmp_path) as inner:
        facade = SyncFacade(request.param, inner, peers)
        try:
            yield facade
        finally:
            facade.close()


@contextmanager
def _protocol_store(name: str, tmp_path: Path) -> Iterator[Store | AsyncStore]:
    if name == "memory":
        yield cast(Store, Engine().store)
    elif name == "sqlite":
        yield cast(Store, Engine(store=f"sqlite:///{tmp_path / 'protocol.db'}").store)
    elif name in BLOCKING_STORES:
        with BLOCKING_STORES[name](tmp_path) as store:
            yield store
    else:
        with ALL_PYTHON[name](tmp_path) as store:
            yield store


@contextmanager
def _open(name: str, tmp_path: Path) -> Iterator[Stores]:
    if name == "memory":
        yield Stores(name, lambda clock: Engine(clock=clock), durable=False)
    elif name == "sqlite":
        path = tmp_path / "conformance.db"
        yield Stores(name, lambda clock: Engine(store=f"sqlite:///{path}", clock=clock), True)
    elif name in ALL_PYTHON:
        with ALL_PYTHON[name](tmp_path) as data:  # outlives each engine, like a database
            yield Stores(name, lambda clock: Engine(store=data, clock=clock), durable=True)
    else:
        raise ValueError(f"unknown store {name!r} in the conformance parameters")
