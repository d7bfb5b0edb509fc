"""The stores an engine keeps its checkpoints in.

``Engine(store=...)`` takes one of these objects, a URL, or a store written in Python:
``None``/``"memory"`` for the in-memory store, ``"sqlite:///relative/path.db"`` or
``"sqlite:////absolute/path.db"`` (add ``?durability=full`` to sync every commit) for SQLite,
``"postgresql://user:password@host:port/db"`` (``PostgresStore``, extra ``tideflow[postgres]``),
``"redis://host:port/0"`` (``RedisStore``, extra ``tideflow[redis]``),
``"mongodb://host:port/db"`` (``MongoStore``, extra ``tideflow[mongo]``), or an object
implementing ``tideflow.stores.base.Store`` or ``AsyncStore``. Memory and SQLite
are native (Rust): ``MemoryStore`` and ``SQLiteStore`` are store objects with the synchronous
protocol of ``base.Store`` (``describe``, ``claim``, ``list``, ...), and ``engine.store`` is
the store an engine runs on. The server stores are imported on first use (``from
tideflow.stores import PostgresStore``), and each imports its driver only when it is built.
"""

from __future__ import annotations

import os

from tideflow import _core
from tideflow._args import check_text
from tideflow.errors import InvalidArgument, StoreError

TYPE_CHECKING = False  # (see tideflow.retry: importing typing costs a minimal run)
if TYPE_CHECKING:
    from typing_extensions import Self

    from tideflow.stores.mongo import MongoStore
    from tideflow.stores.postgres import PostgresStore
    from tideflow.stores.redis import RedisStore

__all__ = [
    "MemoryStore",
    "MongoStore",
    "NativeStore",
    "PostgresStore",
    "RedisStore",
    "SQLiteStore",
    "parse_store",
]

#: The server stores: class name -> the module that defines it (imported on first use).
_SERVER_STORES = {
    "PostgresStore": "tideflow.stores.postgres",
    "RedisStore": "tideflow.stores.redis",
    "MongoStore": "tideflow.stores.mongo",
}

#: URL scheme -> the server store class that opens it.
_SCHEMES = {
    "postgresql": "PostgresStore",
    "postgres": "PostgresStore",
    "redis": "RedisStore",
    "rediss": "RedisStore",
    "mongodb": "MongoStore",
    "mongodb+srv": "MongoStore",
}


def __getattr__(name: str) -> object:
    module = _SERVER_STORES.get(name)
    if module is None:
        raise AttributeError(f"module 'tideflow.stores' has no attribute {name!r}")
    import importlib

    cls = getattr(importlib.import_module(module), name)
    globals()[name] = cls
    return cls


#: The native store class: the base of ``MemoryStore`` and ``SQLiteStore``.
NativeStore = _core.NativeStore


class MemoryStore(_core.NativeStore):
    """The in-memory store (the default): fast, and gone when the process exits. Engines given
    the same ``MemoryStore`` object share its instances."""

    __slots__ = ()

    def __new__(cls) -> Self:
        return super().__new__(cls)

    def __repr__(self) -> str:
        return "MemoryStore()"


class SQLiteStore(_core.NativeStore):
    """A durable store in one SQLite file (WAL mode), shared safely by several processes; the
    file is opened (created, migrated) at once.

    ``durability="normal"`` (the default) survives a crash of the process; after a power loss the
    last commits may be lost, so a step may run again (which its idempotency key covers).
    ``durability="full"`` syncs every commit to disk before the next step starts.
    """

    __slots__ = ()

    def __new__(cls, path: str | os.PathLike[str], durability: str = "normal") -> Self:
        if durability not in ("normal", "full"):
            raise StoreError(f"durability must be 'normal' or 'full', got {durability!r}")
        try:
            fspath = os.fspath(path)
        except TypeError:
            msg = f"a SQLite store's path must be a str or an os.PathLike, got {type(path).__name__} {path!r}"
            raise InvalidArgument(msg) from None
        if not isinstance(fspath, str):
            msg = f"a SQLite store's path must be a str or an os.PathLike, got {type(path).__name__} {path!r}"
            raise InvalidArgument(msg)
        if not fspath:
            raise StoreError("a SQLite store needs a file path")
        check_text(fspath, "the SQLite store's path")  # UTF-8 must encode it (no lone surrogate)
        return super().__new__(cls, fspath, durability)

    @property
    def path(self) -> str:
        """The file's path."""
        return str(super().path)

    @property
    def durability(self) -> str:
        """``"normal"`` or ``"full"``."""
        return str(super().durability)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, durability={self.durability!r})"


def parse_store(store: object) -> object:
    """Resolves what ``Engine(store=...)`` was given into the store the engine runs on: a
    ``MemoryStore`` or ``SQLiteStore`` (given, or opened from a URL), or an object implementing
    the Python store protocol (``tideflow.stores.base.Store`` or ``AsyncStore``)."""
    if store is None or (isinstance(store, str) and store in ("memory", "memory://")):
        return MemoryStore()
    if isinstance(store, str) and store.startswith("sqlite://"):
        rest = store[len("sqlite://") :]
        if not rest.startswith("/"):
            raise StoreError(
                f"a SQLite URL looks like sqlite:///relative.db or sqlite:////abs.db, got {store!r}"
            )
        path, _, query = rest[1:].partition("?")
        durability = "normal"
        for part in filter(None, query.split("&")):
            key, _, value = part.partition("=")
            if key != "durability":
                raise StoreError(f"unknown SQLite URL option {key!r} in {store!r}")
            durability = value
        return SQLiteStore(path, durability)
    if isinstance(store, str) and "://" in store:
        cls_name = _SCHEMES.get(store.partition("://")[0].lower())
        if cls_name is not None:
            cls = __getattr__(cls_name)
            return cls(store)  # type: ignore[operator]
    if isinstance(store, _core.NativeStore):
        return store
    if not isinstance(store, str) and all(
        callable(getattr(store, m, None)) for m in ("create", "commit", "get", "records", "list")
    ):
        return store  # a Python store; the engine checks the whole protocol
    raise StoreError(
        f"unknown store {_shown(store)}: use None, 'memory', 'sqlite:///path.db', "
        "'postgresql://...', 'redis://...', 'mongodb://...', or a store object"
    )


def _shown(store: object) -> str:
    if isinstance(store, str):
        from tideflow.stores._server import redact

        return repr(redact(store))
    return repr(store)
