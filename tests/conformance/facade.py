"""One synchronous face on any store, so that the protocol suite is written once.

`SyncFacade` wraps a synchronous `Store` (calls go straight through) or an `AsyncStore` (each
coroutine runs to completion on a private event loop that the facade owns and closes). It adds
one thing the protocols do not have: `race`, which runs several calls at the same time, on
threads released together by a barrier for a synchronous store, or interleaved on the event loop
(``asyncio.gather``) for an asynchronous one, and returns each call's result or exception. A
store with `peers` (SQLite) races over separate connections to the same data, as processes do.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from tideflow.stores.base import (
    AsyncStore,
    Claim,
    Commit,
    Count,
    InstanceMeta,
    ListPage,
    ListQuery,
    Loaded,
    Store,
    StoredInstance,
)

__all__ = ["SyncFacade"]

T = TypeVar("T")


class SyncFacade:
    """The synchronous store protocol over a `Store` or an `AsyncStore` (see the module doc)."""

    def __init__(
        self, name: str, store: Store | AsyncStore, peers: Callable[[], Store] | None = None
    ) -> None:
        #: The fixture parameter the store was made by ("dict", "async-dict", "memory", ...).
        self.name = name
        #: The store under test, as given.
        self.inner = store
        #: Opens another handle on the same data (another connection, as another process would
        #: have), for the threads of `race`; None: they share `inner`.
        self.peers = peers
        #: Whether `inner` is an `AsyncStore` (its operations are coroutine functions).
        self.is_async = inspect.iscoroutinefunction(getattr(store, "commit", None))
        self._loop = asyncio.new_event_loop() if self.is_async else None

    def close(self) -> None:
        """Closes the private event loop (if any)."""
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def _call(self, method: str, *args: Any) -> Any:
        result = getattr(self.inner, method)(*args)
        if self._loop is not None:
            return self._loop.run_until_complete(cast("Awaitable[Any]", result))
        return result

    def race(self, calls: Sequence[tuple[str, tuple[Any, ...]]]) -> builtins.list[object]:
        """Runs ``(method name, arguments)`` calls at once; each one's result or exception."""
        if self._loop is not None:

            async def together() -> builtins.list[object]:
                coros = [getattr(self.inner, m)(*a) for m, a in calls]
                results: builtins.list[object] = await asyncio.gather(
                    *coros, return_exceptions=True
                )
                return results

            return self._loop.run_until_complete(together())
        barrier = threading.Barrier(len(calls))
        out: builtins.list[object] = [None] * len(calls)
        handles = [self.inner] + [
            self.inner if self.peers is None else self.peers() for _ in calls[1:]
        ]

        def run(i: int, method: str, args: tuple[Any, ...]) -> None:
            barrier.wait()
            try:
                out[i] = getattr(handles[i], method)(*args)
            except Exception as e:
                out[i] = e

        threads = [threading.Thread(target=run, args=(i, m, a)) for i, (m, a) in enumerate(calls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None:
        """See `Store.create`."""
        return cast("StoredInstance | None", self._call("create", meta, header, records))

    def commit(self, commit: Commit) -> None:
        """See `Store.commit`."""
        self._call("commit", commit)

    def get(self, id: str) -> StoredInstance | None:
        """See `Store.get`."""
        return cast("StoredInstance | None", self._call("get", id))

    def load(self, id: str) -> Loaded | None:
        """See `Store.load`."""
        return cast("Loaded | None", self._call("load", id))

    def records(self, id: str, after: int) -> builtins.list[bytes]:
        """See `Store.records`."""
        return cast("list[bytes]", self._call("records", id, after))

    def signals(self, id: str, after: int) -> builtins.list[tuple[int, bytes]]:
        """See `Store.signals`."""
        return cast("list[tuple[int, bytes]]", self._call("signals", id, after))

    def list(self, query: ListQuery) -> ListPage:
        """See `Store.list`."""
        return cast(ListPage, self._call("list", query))

    def counts(self) -> builtins.list[Count]:
        """See `Store.counts`."""
        return cast("list[Count]", self._call("counts"))

    def delete(self, id: str) -> bool:
        """See `Store.delete`."""
        return cast(bool, self._call("delete", id))

    def purge(self, before: float, statuses: Sequence[str]) -> int:
        """See `Store.purge`."""
        return cast(int, self._call("purge", before, statuses))

    def send_signal(self, id: str, record: bytes, now: float) -> int:
        """See `Store.send_signal`."""
        return cast(int, self._call("send_signal", id, record, now))

    def due(self, now: float, limit: int | None) -> builtins.list[InstanceMeta]:
        """See `Store.due`."""
        return cast("list[InstanceMeta]", self._call("due", now, limit))

    def claim(self, claim: Claim) -> builtins.list[InstanceMeta]:
        """See `Store.claim`."""
        return cast("list[InstanceMeta]", self._call("claim", claim))

    def extend(self, id: str, owner: str, lease: float, now: float) -> float:
        """See `Store.extend`."""
        return cast(float, self._call("extend", id, owner, lease, now))

    def release(self, id: str, owner: str) -> bool:
        """See `Store.release`."""
        return cast(bool, self._call("release", id, owner))

    def describe(self) -> str:
        """See `Store.describe`."""
        return self.inner.describe()
