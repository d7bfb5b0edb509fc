"""Store configurations: where an engine keeps its checkpoints.

``Engine(store=...)`` takes one of these objects or a URL: ``None``/``"memory"`` for the in-memory
store, ``"sqlite:///relative/path.db"`` or ``"sqlite:////absolute/path.db"`` (add
``?durability=full`` to sync every commit) for SQLite. Both are native (Rust).
"""

from __future__ import annotations

import os

from tideflow.errors import InvalidArgument, StoreError

__all__ = ["MemoryStore", "SQLiteStore", "parse_store"]


class MemoryStore:
    """The in-memory store (the default): fast, and gone when the process exits."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MemoryStore()"


class SQLiteStore:
    """A durable store in one SQLite file (WAL mode), shared safely by several processes.

    ``durability="normal"`` (the default) survives a crash of the process; after a power loss the
    last commits may be lost, so a step may run again (which its idempotency key covers).
    ``durability="full"`` syncs every commit to disk before the next step starts.
    """

    __slots__ = ("durability", "path")

    def __init__(self, path: str | os.PathLike[str], durability: str = "normal") -> None:
        if durability not in ("normal", "full"):
            raise StoreError(f"durability must be 'normal' or 'full', got {durability!r}")
        try:
            self.path = os.fspath(path)
        except TypeError:
            msg = f"a SQLite store's path must be a str or an os.PathLike, got {type(path).__name__} {path!r}"
            raise InvalidArgument(msg) from None
        if not self.path:
            raise StoreError("a SQLite store needs a file path")
        self.durability = durability

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, durability={self.durability!r})"


def parse_store(store: object) -> object:
    """Resolves what ``Engine(store=...)`` was given: a ``MemoryStore``, a ``SQLiteStore``, or an
    object implementing the Python store protocol (``tideflow.stores.base.Store``)."""
    if store is None or isinstance(store, MemoryStore) or store in ("memory", "memory://"):
        return MemoryStore()
    if isinstance(store, SQLiteStore):
        return store
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
    if not isinstance(store, str) and all(
        callable(getattr(store, m, None)) for m in ("create", "commit", "get", "records", "list")
    ):
        return store  # a Python store; the engine checks the whole protocol
    raise StoreError(
        f"unknown store {store!r}: use None, 'memory', 'sqlite:///path.db', or a store object"
    )
