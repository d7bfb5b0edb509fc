"""Named leases in a store: leadership (one process acts alone, e.g. a scheduler or a purge job)
and the slots that cap how many instances of one workflow run at once across all workers.

A named lease is a small stored instance of the engine's own (workflow ``!lease``), never run,
taken with the store's ``claim`` and renewed with ``extend`` exactly like an instance lease, so
every store's fencing and clock rules apply: at most one owner holds it while its lease is live,
and a holder that dies loses it when the lease expires. tideflow builds no consensus protocol of
its own; the store is the arbiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, Any

from tideflow import _core
from tideflow._args import check_text
from tideflow.errors import InvalidArgument, LeaseLost, TideflowError, UnknownInstance
from tideflow.retry import to_seconds
from tideflow.stores.base import Claim, InstanceMeta

if TYPE_CHECKING:
    from datetime import timedelta

    from tideflow.engine import Engine

__all__ = ["LEASE_WORKFLOW", "Leadership", "lease_id", "lease_plan"]

#: The reserved workflow name of named leases.
LEASE_WORKFLOW = "!lease"


def lease_plan(name: str) -> str:
    """The plan hash that indexes the named leases of group ``name`` (a claim takes one)."""
    return f"{LEASE_WORKFLOW}:{name}"


def lease_id(name: str, index: int = 0) -> str:
    """The instance id of lease ``index`` of group ``name``."""
    return f"{LEASE_WORKFLOW}:{name}:{index}"


def lease_rows(name: str, count: int, now: float) -> list[tuple[InstanceMeta, bytes]]:
    """The ``count`` stored leases of group ``name``, to create (create-or-return: idempotent)."""
    plan = lease_plan(name)
    header = _core.task_header(plan, b"{}", now, None, LEASE_WORKFLOW)
    return [
        (
            InstanceMeta(
                lease_id(name, i),
                LEASE_WORKFLOW,
                plan,
                "pending",
                1,
                now,
                now,
                None,
                None,
                None,
                None,
            ),
            header,
        )
        for i in range(count)
    ]


async def _await(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value


class Leadership:
    """A lease named ``name`` in the engine's store that at most one process holds at a time:
    call ``acquire()`` (True if this process holds it now), then ``renew()`` well within
    ``lease`` seconds while acting (False: it was lost, stop acting), and ``release()`` when
    done. A holder that dies loses it once the lease expires; another's ``acquire()`` then
    takes it. ``*_async`` variants await an ``AsyncStore``."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        *,
        owner: str | None = None,
        lease: float | timedelta = 30.0,
    ) -> None:
        check_text(name, "a leadership name")
        if owner is not None:
            check_text(owner, "Leadership(owner=)")
        seconds = to_seconds(lease, "Leadership(lease=)", InvalidArgument)
        if seconds <= 0:
            raise InvalidArgument(f"Leadership(lease=) must be positive, got {lease!r}")
        #: The engine whose store holds the lease.
        self.engine = engine
        #: The lease's name.
        self.name = name
        #: Who this process claims as.
        self.owner = owner if owner is not None else f"{os.getpid()}:{os.urandom(4).hex()}"
        #: How long the lease holds without a renewal, in seconds.
        self.lease = seconds
        #: Whether this process held the lease at its last acquire or renew.
        self.held = False
        self._created = False

    def __repr__(self) -> str:
        return f"<tideflow Leadership {self.name!r} owner={self.owner} held={self.held}>"

    def _sync_store(self) -> Any:
        store = self.engine.store
        if self.engine._core.async_store:
            blocking = getattr(store, "blocking", None)
            if not callable(blocking):
                raise TideflowError(
                    f"{store.describe()} is an AsyncStore without a synchronous twin: use "
                    "acquire_async(), renew_async() and release_async()"
                )
            return blocking()
        return store

    async def _acquire(self, store: Any) -> bool:
        now = self.engine._core.now()
        if not self._created:
            for meta, header in lease_rows(self.name, 1, now):
                await _await(store.create(meta, header, []))
            self._created = True
        if self.held:
            return await self._renew(store)
        got = await _await(
            store.claim(Claim(self.owner, 1, self.lease, now, [lease_plan(self.name)]))
        )
        self.held = bool(got)
        return self.held

    async def _renew(self, store: Any) -> bool:
        try:
            await _await(
                store.extend(lease_id(self.name), self.owner, self.lease, self.engine._core.now())
            )
        except (LeaseLost, UnknownInstance):
            self.held = False
        else:
            self.held = True
        return self.held

    async def _release(self, store: Any) -> None:
        if self.held:
            self.held = False
            with contextlib.suppress(UnknownInstance):
                await _await(store.release(lease_id(self.name), self.owner))

    def acquire(self) -> bool:
        """Takes the lease if no one holds it live (or renews it if this process does);
        whether this process holds it now."""
        return bool(_sync(self._acquire(self._sync_store())))

    def renew(self) -> bool:
        """Extends this process's lease; False if it no longer holds it (expired, taken)."""
        return bool(_sync(self._renew(self._sync_store())))

    def release(self) -> None:
        """Gives the lease back, so another process's ``acquire()`` takes it at once."""
        _sync(self._release(self._sync_store()))

    async def acquire_async(self) -> bool:
        """``acquire()`` on an event loop."""
        return await self._acquire(self.engine.store)

    async def renew_async(self) -> bool:
        """``renew()`` on an event loop."""
        return await self._renew(self.engine.store)

    async def release_async(self) -> None:
        """``release()`` on an event loop."""
        await self._release(self.engine.store)


def _sync(coro: Any) -> Any:
    """Runs a coroutine that awaits nothing (every store call in it is synchronous)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise TideflowError("a synchronous store returned an awaitable")  # pragma: no cover
