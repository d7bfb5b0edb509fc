"""The store contract, version 2, for stores written in Python (PostgreSQL, Redis, MongoDB, yours).

A store keeps, per instance, the few fields it indexes (``InstanceMeta``), one opaque header
record, an append-only log of opaque records and an inbox of signal records. Records are ``bytes``
written by the engine's codec: a store gives them back unchanged and never parses them.

There are two protocols with the same operations: ``Store`` (synchronous) and ``AsyncStore``
(every operation but ``describe`` is a coroutine). ``engine.run`` works on both; ``await
engine.run_async`` awaits an ``AsyncStore`` directly and never blocks the event loop on it. Pass
either as ``Engine(store=...)``. ``docs/stores.md`` states the rules; the conformance suite
(``tests/conformance/``) checks them on every store.

Every operation is atomic on its own. Commits are fenced twice: by version (a stale writer gets
``StoreConflict``) and by lease (a writer whose lease is gone gets ``LeaseLost``); either way the
store changes nothing. Leases are judged by one clock: the store's own where it has one (a
database server's), else the ``now`` the engine passes. Only commits change the version: claims,
lease changes and signals do not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

from tideflow.errors import LeaseLost, StoreConflict

if TYPE_CHECKING:
    import builtins
    from collections.abc import Sequence

__all__ = [
    "AsyncStore",
    "Claim",
    "Commit",
    "Count",
    "InstanceMeta",
    "LeaseLost",
    "ListPage",
    "ListQuery",
    "Loaded",
    "Store",
    "StoreConflict",
    "StoredInstance",
    "Watchable",
]


class InstanceMeta(NamedTuple):
    """The fields a store indexes for one instance."""

    #: The instance id (unique in the store).
    id: str
    #: The workflow name.
    workflow: str
    #: The content hash of the plan the instance runs on (workers claim only plans they have).
    plan_hash: str
    #: Lifecycle status, lowercase: pending, running, suspended, completed, failed, cancelled.
    status: str
    #: 1 after the create, incremented by every commit and by nothing else.
    version: int
    #: Seconds since the epoch.
    created_at: float
    #: Seconds since the epoch of the last commit.
    updated_at: float
    #: When a suspended instance next needs attention (a timer, a retry, a signal), or None.
    due_at: float | None
    #: Who holds (or last held) the lease, or None.
    owner: str | None
    #: Until when the lease holds (seconds since the epoch, on the lease clock), or None.
    lease_until: float | None
    #: A one-line summary of why a failed instance failed (for listings), else None.
    error: str | None


class StoredInstance(NamedTuple):
    """An instance as ``get`` and ``create`` return it: indexed fields and header record."""

    meta: InstanceMeta
    header: bytes


class Loaded(NamedTuple):
    """Everything a driver needs to resume an instance, read together by ``load``."""

    meta: InstanceMeta
    header: bytes
    #: The log, in commit order.
    records: list[bytes]
    #: The inbox: ``(sequence number, record)`` in arrival order.
    signals: list[tuple[int, bytes]]


class Commit(NamedTuple):
    """One atomic step boundary (see ``Store.commit``)."""

    #: The instance.
    id: str
    #: The version the writer loaded or last committed; any other is a ``StoreConflict``.
    expected_version: int
    #: The new status.
    status: str
    #: Commit time; also the lease clock's ``now`` for a store without a clock of its own.
    updated_at: float
    #: The new due time, or None.
    due_at: float | None
    #: A replacement header (when the instance finishes), or None to keep the stored one.
    header: bytes | None
    #: Records appended to the log, in order (possibly none).
    records: Sequence[bytes]
    #: The highest inbox number the writer had seen (see ``Store.commit`` on the due time).
    signals_seen: int
    #: The lease holder the writer is (a worker), or None (an engine in its own process).
    owner: str | None
    #: The failure summary to index with a ``failed`` status, else None.
    error: str | None


class ListQuery(NamedTuple):
    """Filters for ``Store.list``."""

    #: Only these statuses (empty: any).
    statuses: Sequence[str]
    #: Only this workflow (None: any).
    workflow: str | None
    #: Only this plan hash (None: any).
    plan_hash: str | None
    #: At most this many (None: all).
    limit: int | None
    #: Go on after the page that returned this cursor (None: from the newest).
    cursor: str | None


class ListPage(NamedTuple):
    """One page of a listing."""

    #: The instances, most recently created first.
    items: list[InstanceMeta]
    #: Where the next page starts when the limit cut this one short; None at the end.
    cursor: str | None


class Count(NamedTuple):
    """How many instances of one workflow have one status (see ``Store.counts``)."""

    #: The workflow name.
    workflow: str
    #: The status, lowercase.
    status: str
    #: How many instances (never 0: ``counts`` leaves zero counts out).
    instances: int


class Claim(NamedTuple):
    """A request for work (see ``Store.claim``)."""

    #: Who claims (a worker id).
    owner: str
    #: At most this many instances.
    limit: int
    #: How long the lease lasts, in seconds.
    lease: float
    #: The engine's clock: the lease clock for a store without one of its own.
    now: float
    #: Only instances on these plan hashes (empty: none).
    plan_hashes: Sequence[str]


@runtime_checkable
class Store(Protocol):
    """The synchronous store protocol; every method is atomic on its own."""

    def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None:
        """Writes a new instance at version 1 with its header and first records and returns None;
        if the id exists, changes nothing and returns the stored instance (create-or-return)."""
        ...

    def commit(self, commit: Commit) -> None:
        """Applies one step boundary atomically: appends the records (as version
        ``expected_version + 1``), sets status, updated_at, due_at and error, replaces the header
        when one is given, and bumps the version by one.

        Checks, in this order, changing nothing when one fails: the instance exists (else
        ``tideflow.UnknownInstance``); the lease (else ``LeaseLost``): with ``owner`` set, that
        owner must hold a live lease; without, no one else may; the version (else
        ``StoreConflict``). A commit without owner, or one that finishes the instance (completed,
        failed, cancelled), clears the lease. When the commit suspends the instance and the inbox
        holds a signal numbered above ``signals_seen``, the instance is left due at
        ``updated_at`` (or its ``due_at``, if earlier), so that a signal sent meanwhile is never
        left unnoticed."""
        ...

    def get(self, id: str) -> StoredInstance | None:
        """The instance's indexed fields and header, or None."""
        ...

    def load(self, id: str) -> Loaded | None:
        """Header, log and inbox together (one read, where the store can), or None."""
        ...

    def records(self, id: str, after: int) -> builtins.list[bytes]:
        """The log records of the commits after version ``after`` (0: all; the create's are
        version 1), in commit order; empty for an unknown instance."""
        ...

    def signals(self, id: str, after: int) -> builtins.list[tuple[int, bytes]]:
        """The inbox signals numbered above ``after`` (0: all), as ``(number, record)`` in arrival
        order; empty for an unknown instance."""
        ...

    def list(self, query: ListQuery) -> ListPage:
        """The instances matching ``query``, most recently created first, one page at a time:
        when ``query.limit`` cut the page short, its ``cursor`` continues after it (None on the
        last page). Raises ``tideflow.InvalidArgument`` for a cursor the store did not make."""
        ...

    def counts(self) -> builtins.list[Count]:
        """How many instances there are per workflow and status (only non-zero counts)."""
        ...

    def delete(self, id: str) -> bool:
        """Deletes the instance, its log and its inbox; whether it existed."""
        ...

    def purge(self, before: float, statuses: Sequence[str]) -> int:
        """Deletes finished (completed, failed, cancelled) instances last updated before
        ``before`` whose status is in ``statuses`` (empty: any finished); how many."""
        ...

    def send_signal(self, id: str, record: bytes, now: float) -> int:
        """Appends a signal record to the instance's inbox (its own transaction) and marks the
        instance due at ``now``, keeping an earlier due time; returns its number (1, 2, ... per
        instance). It does not change the version. Raises ``tideflow.UnknownInstance``, or
        ``tideflow.SignalError`` when the instance is finished."""
        ...

    def due(self, now: float, limit: int | None) -> builtins.list[InstanceMeta]:
        """Pending instances, and suspended ones whose ``due_at`` is at or before ``now``, that no
        one holds a live lease on, earliest due first, at most ``limit`` (a pending instance is
        created due at its creation time)."""
        ...

    def claim(self, claim: Claim) -> builtins.list[InstanceMeta]:
        """Atomically leases up to ``claim.limit`` unfinished instances whose plan hash is in
        ``claim.plan_hashes`` to ``claim.owner``, until ``now + claim.lease``: those pending, or
        suspended and due, that no one holds a live lease on, and those whose lease expired
        (whatever their status). Earliest due (or last updated) first. Two claimers never get
        the same instance. Returns them as leased (owner and lease_until set)."""
        ...

    def extend(self, id: str, owner: str, lease: float, now: float) -> float:
        """Renews ``owner``'s live lease on ``id`` to ``now + lease`` and returns the new expiry.
        Raises ``LeaseLost`` when ``owner`` holds no live lease on it, ``UnknownInstance`` when
        there is no such instance."""
        ...

    def release(self, id: str, owner: str) -> bool:
        """Gives ``owner``'s lease on ``id`` back (also an expired one, unless another owner claimed
        the instance since); whether ``owner`` held it. Raises ``UnknownInstance``."""
        ...

    def describe(self) -> str:
        """A short name for messages, e.g. ``postgres://host/db``."""
        ...


@runtime_checkable
class AsyncStore(Protocol):
    """The asynchronous store protocol: ``Store``'s operations as coroutines (``describe`` stays
    synchronous). Each means exactly what the ``Store`` method of the same name says."""

    async def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None:
        """See ``Store.create``."""
        ...

    async def commit(self, commit: Commit) -> None:
        """See ``Store.commit``."""
        ...

    async def get(self, id: str) -> StoredInstance | None:
        """See ``Store.get``."""
        ...

    async def load(self, id: str) -> Loaded | None:
        """See ``Store.load``."""
        ...

    async def records(self, id: str, after: int) -> builtins.list[bytes]:
        """See ``Store.records``."""
        ...

    async def signals(self, id: str, after: int) -> builtins.list[tuple[int, bytes]]:
        """See ``Store.signals``."""
        ...

    async def list(self, query: ListQuery) -> ListPage:
        """See ``Store.list``."""
        ...

    async def counts(self) -> builtins.list[Count]:
        """See ``Store.counts``."""
        ...

    async def delete(self, id: str) -> bool:
        """See ``Store.delete``."""
        ...

    async def purge(self, before: float, statuses: Sequence[str]) -> int:
        """See ``Store.purge``."""
        ...

    async def send_signal(self, id: str, record: bytes, now: float) -> int:
        """See ``Store.send_signal``."""
        ...

    async def due(self, now: float, limit: int | None) -> builtins.list[InstanceMeta]:
        """See ``Store.due``."""
        ...

    async def claim(self, claim: Claim) -> builtins.list[InstanceMeta]:
        """See ``Store.claim``."""
        ...

    async def extend(self, id: str, owner: str, lease: float, now: float) -> float:
        """See ``Store.extend``."""
        ...

    async def release(self, id: str, owner: str) -> bool:
        """See ``Store.release``."""
        ...

    def describe(self) -> str:
        """See ``Store.describe``."""
        ...


@runtime_checkable
class Watchable(Protocol):
    """An optional face of an ``AsyncStore`` (or its twin) whose server can push news: workers
    and ``Run.wait_async`` then wait on it instead of polling (PostgreSQL LISTEN/NOTIFY, Redis
    pub/sub). A store without it is polled with backoff and jitter; nothing is lost either way,
    since whoever waits reads the store after every wake-up."""

    async def watch(self, timeout: float) -> builtins.list[str]:
        """Waits until some instance had news since the previous call, or ``timeout`` seconds
        pass, and returns the ids that had news (each once, any order; empty after a timeout).

        News is: an instance created; a signal (or cancellation request) sent to it; a lease
        released on it; a commit that finished it, or that left it suspended and due at or
        before the commit's ``updated_at``. Every watcher (in any process) hears every piece of
        news. The first call subscribes (news before it is not reported), so a waiter calls
        ``watch(0)`` before it first reads the store. A lost connection is reopened within the
        store's timeout; news sent while it was down is lost, so after a reconnect ``watch``
        returns at once with an empty list (the caller then reads the store)."""
        ...
