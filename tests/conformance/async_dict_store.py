"""The reference asynchronous store (`tideflow.stores.base.AsyncStore`): the dict store's rules,
awaited.

Each operation first yields to the event loop (``asyncio.sleep(delay)``, 0 by default), then
delegates to a `DictStore`: the rules live there once. A test makes the store deliberately slow
by giving ``delay`` (every call) or ``delays`` (per operation name), to show that a driver never
blocks the event loop on it and that a slow store cannot let a lease or a version check slip.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from tideflow.stores.base import (
    Claim,
    Commit,
    Count,
    InstanceMeta,
    ListPage,
    ListQuery,
    Loaded,
    StoredInstance,
)

from .dict_store import DictStore

__all__ = ["AsyncDictStore"]

T = TypeVar("T")


class AsyncDictStore:
    """An `AsyncStore` over a `DictStore`; describes itself as ``async-dict``."""

    def __init__(self, delay: float = 0.0, delays: Mapping[str, float] | None = None) -> None:
        #: Seconds every operation waits before it runs (on the event loop, never blocking it).
        self.delay = delay
        #: Per operation name, a wait that replaces `delay` (e.g. ``{"commit": 0.05}``).
        self.delays: dict[str, float] = dict(delays or {})
        #: The store that holds the data and applies the rules.
        self.sync = DictStore()

    async def _run(self, name: str, call: Callable[[], T]) -> T:
        await asyncio.sleep(self.delays.get(name, self.delay))
        return call()

    async def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None:
        """See `DictStore.create`."""
        return await self._run("create", lambda: self.sync.create(meta, header, records))

    async def commit(self, commit: Commit) -> None:
        """See `DictStore.commit`."""
        await self._run("commit", lambda: self.sync.commit(commit))

    async def get(self, id: str) -> StoredInstance | None:
        """See `DictStore.get`."""
        return await self._run("get", lambda: self.sync.get(id))

    async def load(self, id: str) -> Loaded | None:
        """See `DictStore.load`."""
        return await self._run("load", lambda: self.sync.load(id))

    async def records(self, id: str, after: int) -> builtins.list[bytes]:
        """See `DictStore.records`."""
        return await self._run("records", lambda: self.sync.records(id, after))

    async def signals(self, id: str, after: int) -> builtins.list[tuple[int, bytes]]:
        """See `DictStore.signals`."""
        return await self._run("signals", lambda: self.sync.signals(id, after))

    async def list(self, query: ListQuery) -> ListPage:
        """See `DictStore.list`."""
        return await self._run("list", lambda: self.sync.list(query))

    async def counts(self) -> builtins.list[Count]:
        """See `DictStore.counts`."""
        return await self._run("counts", self.sync.counts)

    async def delete(self, id: str) -> bool:
        """See `DictStore.delete`."""
        return await self._run("delete", lambda: self.sync.delete(id))

    async def purge(self, before: float, statuses: Sequence[str]) -> int:
        """See `DictStore.purge`."""
        return await self._run("purge", lambda: self.sync.purge(before, statuses))

    async def send_signal(self, id: str, record: bytes, now: float) -> int:
        """See `DictStore.send_signal`."""
        return await self._run("send_signal", lambda: self.sync.send_signal(id, record, now))

    async def due(self, now: float, limit: int | None) -> builtins.list[InstanceMeta]:
        """See `DictStore.due`."""
        return await self._run("due", lambda: self.sync.due(now, limit))

    async def claim(self, claim: Claim) -> builtins.list[InstanceMeta]:
        """See `DictStore.claim`."""
        return await self._run("claim", lambda: self.sync.claim(claim))

    async def extend(self, id: str, owner: str, lease: float, now: float) -> float:
        """See `DictStore.extend`."""
        return await self._run("extend", lambda: self.sync.extend(id, owner, lease, now))

    async def release(self, id: str, owner: str) -> bool:
        """See `DictStore.release`."""
        return await self._run("release", lambda: self.sync.release(id, owner))

    def describe(self) -> str:
        """``async-dict``."""
        return "async-dict"
