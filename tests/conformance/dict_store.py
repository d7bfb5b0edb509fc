"""A store written in Python, on dicts: the reference implementation of the synchronous store
protocol, contract version 2 (`tideflow.stores.base.Store`), run through the conformance suite
like every store.

It mirrors the native memory store (`rust/core/src/store/memory.rs`) rule for rule, in plain
Python, so that a store author can read what each operation does. The lease clock is the `now`
(or, for a commit, the `updated_at`) passed in: the store has no clock of its own. One lock makes
every method atomic, so threads may call it concurrently (the lease race tests do).
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from tideflow.errors import InvalidArgument, SignalError, UnknownInstance
from tideflow.stores.base import (
    Claim,
    Commit,
    Count,
    InstanceMeta,
    LeaseLost,
    ListPage,
    ListQuery,
    Loaded,
    StoreConflict,
    StoredInstance,
)

__all__ = ["FINISHED", "STATUS_ORDER", "DictStore", "check_lease", "claimable"]

#: The statuses that end an instance: no lease is left on it, and it takes no more signals.
FINISHED = frozenset({"completed", "failed", "cancelled"})
#: Every status, in lifecycle order (the order `counts` sorts by, like the native stores).
STATUS_ORDER = ("pending", "running", "suspended", "completed", "failed", "cancelled")


@dataclass
class _Entry:
    """Everything held for one instance."""

    meta: InstanceMeta
    header: bytes
    #: ``(commit version, record)`` in commit order (the create's records are version 1).
    log: list[tuple[int, bytes]]
    #: Creation order: the listing order, and what the cursor names.
    seq: int
    #: The inbox; a signal's number is its position + 1.
    inbox: list[bytes] = field(default_factory=list)


def _unknown(iid: str) -> UnknownInstance:
    return UnknownInstance(f"no workflow instance with id {iid!r}")


def check_lease(
    iid: str, owner: str | None, holder: str | None, until: float | None, now: float
) -> None:
    """The lease check of a commit or extend by `owner` (None: an engine in its own process) at
    `now`: `owner` must hold a live lease; without an owner, no one else may. Raises
    `LeaseLost` naming the live holder (None when the lease expired or there is none)."""
    live = until is not None and until > now
    ok = (holder == owner and live) if owner is not None else (holder is None or not live)
    if not ok:
        raise LeaseLost(iid, owner, holder if live else None)


def claimable(m: InstanceMeta, now: float, plan_hashes: Sequence[str]) -> bool:
    """Whether a claim over `plan_hashes` at `now` may take the instance: unfinished, on one of
    the plans, and either under an expired lease (its holder is gone) or unleased and pending,
    or suspended and due."""
    if m.status in FINISHED or m.plan_hash not in plan_hashes:
        return False
    if m.owner is not None:
        return m.lease_until is None or m.lease_until <= now
    return m.status == "pending" or (
        m.status == "suspended" and m.due_at is not None and m.due_at <= now
    )


def _claim_order(m: InstanceMeta) -> float:
    """Claims and due lists take the earliest due first; an instance not due by its last update."""
    return m.updated_at if m.due_at is None else m.due_at


class DictStore:
    """Keeps instances in a dict, behind one lock; describes itself as ``dict``."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def _entry(self, iid: str) -> _Entry:
        try:
            return self._entries[iid]
        except KeyError:
            raise _unknown(iid) from None

    def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None:
        """Writes the instance at version 1, or returns the one stored under its id unchanged."""
        with self._lock:
            if (e := self._entries.get(meta.id)) is not None:
                return StoredInstance(e.meta, e.header)
            self._seq += 1
            self._entries[meta.id] = _Entry(
                meta=meta._replace(version=1),
                header=bytes(header),
                log=[(1, bytes(r)) for r in records],
                seq=self._seq,
            )
            return None

    def commit(self, commit: Commit) -> None:
        """One step boundary, fenced by existence, then lease, then version."""
        with self._lock:
            e = self._entry(commit.id)
            m = e.meta
            check_lease(commit.id, commit.owner, m.owner, m.lease_until, commit.updated_at)
            if commit.expected_version != m.version:
                raise StoreConflict(commit.id, commit.expected_version, m.version)
            due = commit.due_at
            if commit.status == "suspended" and len(e.inbox) > commit.signals_seen:
                due = commit.updated_at if due is None else min(due, commit.updated_at)
            owner, until = m.owner, m.lease_until
            if commit.owner is None or commit.status in FINISHED:
                owner, until = None, None  # no lease is left behind
            version = m.version + 1
            e.meta = m._replace(
                status=commit.status,
                version=version,
                updated_at=commit.updated_at,
                due_at=due,
                owner=owner,
                lease_until=until,
                error=commit.error,
            )
            if commit.header is not None:
                e.header = bytes(commit.header)
            e.log.extend((version, bytes(r)) for r in commit.records)

    def get(self, id: str) -> StoredInstance | None:
        """Indexed fields and header, or None."""
        with self._lock:
            e = self._entries.get(id)
            return None if e is None else StoredInstance(e.meta, e.header)

    def load(self, id: str) -> Loaded | None:
        """Indexed fields, header, log and inbox, read under one lock."""
        with self._lock:
            e = self._entries.get(id)
            if e is None:
                return None
            return Loaded(
                e.meta, e.header, [r for _, r in e.log], list(enumerate(e.inbox, start=1))
            )

    def records(self, id: str, after: int) -> builtins.list[bytes]:
        """The log records of the commits after version `after`."""
        with self._lock:
            e = self._entries.get(id)
            return [] if e is None else [r for v, r in e.log if v > after]

    def signals(self, id: str, after: int) -> builtins.list[tuple[int, bytes]]:
        """The inbox signals numbered above `after`."""
        with self._lock:
            e = self._entries.get(id)
            if e is None:
                return []
            return [(n, r) for n, r in enumerate(e.inbox, start=1) if n > after]

    def list(self, query: ListQuery) -> ListPage:
        """Newest first; the cursor is the creation number of the page's last (oldest) item."""
        before = None
        if query.cursor is not None:
            try:
                before = int(query.cursor)
            except ValueError:
                raise InvalidArgument(f"invalid list cursor {query.cursor!r}") from None
            if before < 1:
                raise InvalidArgument(f"invalid list cursor {query.cursor!r}")
        with self._lock:
            hits = [
                e
                for e in self._entries.values()
                if (before is None or e.seq < before)
                and (not query.statuses or e.meta.status in query.statuses)
                and (query.workflow is None or e.meta.workflow == query.workflow)
                and (query.plan_hash is None or e.meta.plan_hash == query.plan_hash)
            ]
        hits.sort(key=lambda e: -e.seq)
        cursor = None
        if query.limit is not None and len(hits) > query.limit:
            hits = hits[: query.limit]
            cursor = str(hits[-1].seq) if hits else None
        return ListPage([e.meta for e in hits], cursor)

    def counts(self) -> builtins.list[Count]:
        """Non-zero counts per (workflow, status), by workflow then lifecycle order."""
        by: dict[tuple[str, str], int] = {}
        with self._lock:
            for e in self._entries.values():
                key = (e.meta.workflow, e.meta.status)
                by[key] = by.get(key, 0) + 1
        keys = sorted(by, key=lambda k: (k[0], STATUS_ORDER.index(k[1])))
        return [Count(w, s, by[w, s]) for w, s in keys]

    def delete(self, id: str) -> bool:
        """Forgets the instance; whether it existed."""
        with self._lock:
            return self._entries.pop(id, None) is not None

    def purge(self, before: float, statuses: Sequence[str]) -> int:
        """Deletes the finished instances updated before `before` (of `statuses`, if any)."""
        with self._lock:
            doomed = [
                iid
                for iid, e in self._entries.items()
                if e.meta.status in FINISHED
                and (not statuses or e.meta.status in statuses)
                and e.meta.updated_at < before
            ]
            for iid in doomed:
                del self._entries[iid]
            return len(doomed)

    def send_signal(self, id: str, record: bytes, now: float) -> int:
        """Appends to the inbox and makes the instance due by `now`; the version stays."""
        with self._lock:
            e = self._entry(id)
            if e.meta.status in FINISHED:
                raise SignalError(f"instance {id!r} is {e.meta.status} and takes no more signals")
            e.inbox.append(bytes(record))
            due = now if e.meta.due_at is None else min(e.meta.due_at, now)
            e.meta = e.meta._replace(due_at=due)
            return len(e.inbox)

    def due(self, now: float, limit: int | None) -> builtins.list[InstanceMeta]:
        """Pending or suspended, due by `now`, and under no live lease; earliest due first."""
        with self._lock:
            hits = [
                e.meta
                for e in self._entries.values()
                if e.meta.status in ("pending", "suspended")
                and e.meta.due_at is not None
                and e.meta.due_at <= now
                and not (
                    e.meta.owner is not None
                    and e.meta.lease_until is not None
                    and e.meta.lease_until > now
                )
            ]
        hits.sort(key=_claim_order)
        return hits if limit is None else hits[:limit]

    def claim(self, claim: Claim) -> builtins.list[InstanceMeta]:
        """Leases the claimable instances (earliest due, then oldest, first) to the claimer."""
        with self._lock:
            hits = [
                e for e in self._entries.values() if claimable(e.meta, claim.now, claim.plan_hashes)
            ]
            hits.sort(key=lambda e: (_claim_order(e.meta), e.seq))
            out = []
            for e in hits[: max(claim.limit, 0)]:
                e.meta = e.meta._replace(owner=claim.owner, lease_until=claim.now + claim.lease)
                out.append(e.meta)
            return out

    def extend(self, id: str, owner: str, lease: float, now: float) -> float:
        """Renews the holder's live lease to `now + lease`."""
        with self._lock:
            e = self._entry(id)
            check_lease(id, owner, e.meta.owner, e.meta.lease_until, now)
            until = now + lease
            e.meta = e.meta._replace(lease_until=until)
            return until

    def release(self, id: str, owner: str) -> bool:
        """Clears the lease if `owner` is its (possibly expired) holder."""
        with self._lock:
            e = self._entry(id)
            if e.meta.owner != owner:
                return False
            e.meta = e.meta._replace(owner=None, lease_until=None)
            return True

    def describe(self) -> str:
        """``dict``."""
        return "dict"
