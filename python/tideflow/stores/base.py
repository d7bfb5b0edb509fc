"""The store contract for stores written in Python (PostgreSQL, Redis, MongoDB, your own).

A Python store receives checkpoint records as opaque ``bytes`` plus the few fields it indexes, and
must give them back unchanged; it never parses a record. The engine calls it synchronously, with
the GIL held, once per step boundary (``commit``). Pass an instance as ``Engine(store=...)``.
The rules are the same as for the native stores (``docs/stores.md``) and the same conformance
suite (``tests/conformance/``) checks them.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tideflow.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Commit", "InstanceMeta", "Store", "StoreConflict", "StoredInstance"]

#: The indexed fields of an instance:
#: ``(id, workflow, status, version, created_at, updated_at, due_at)``; ``status`` is a
#: lowercase status name, times are seconds since the epoch, ``due_at`` may be None.
InstanceMeta = tuple[str, str, str, int, float, float, "float | None"]

#: An instance as stored: its indexed fields and its header record.
StoredInstance = tuple[InstanceMeta, bytes]

#: One atomic step boundary: ``(id, expected_version, status, updated_at, due_at, header or
#: None, records, signals_seen)``; see ``Store.commit``.
Commit = tuple[str, int, str, float, "float | None", "bytes | None", "Sequence[bytes]", int]


class StoreConflict(StoreError):
    """A commit carried a stale version: another writer advanced the instance first."""

    def __init__(self, instance_id: str, expected: int, found: int) -> None:
        super().__init__(
            f"instance {instance_id!r} was advanced by another writer "
            f"(expected version {expected}, found {found})"
        )
        self.instance_id = instance_id
        self.expected = expected
        self.found = found


@runtime_checkable
class Store(Protocol):
    """What the engine needs of a store; every method is atomic on its own."""

    def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None:
        """Writes a new instance (version 1) with its header and first records and returns None;
        if the id exists, changes nothing and returns the stored instance."""
        ...

    def commit(self, commit: Commit) -> None:
        """Applies one step boundary atomically: appends the records, sets status, updated_at and
        due_at, replaces the header when one is given, and bumps the version by one. When the
        commit suspends the instance (status ``suspended``) and the inbox holds a signal numbered
        above ``signals_seen``, the instance stays due at ``updated_at`` instead of ``due_at``.
        Raises ``StoreConflict`` when the stored version is not ``expected_version`` and
        ``tideflow.UnknownInstance`` when there is no such instance; then changes nothing."""
        ...

    def commit_many(self, commits: Sequence[Commit]) -> None:
        """Applies several commits (of different instances) all or nothing."""
        ...

    def get(self, id: str) -> StoredInstance | None:
        """The instance's indexed fields and header, or None."""
        ...

    def records(self, id: str) -> list[bytes]:
        """The instance's log records in commit order (empty if there is no such instance)."""
        ...

    def list(
        self, statuses: Sequence[str], workflow: str | None, limit: int | None
    ) -> list[InstanceMeta]:
        """Indexed fields of the instances with one of ``statuses`` (empty: any) and of
        ``workflow`` (None: any), most recently created first, at most ``limit``."""
        ...

    def delete(self, id: str) -> bool:
        """Deletes the instance and its log; whether it existed."""
        ...

    def purge(self, before: float, statuses: Sequence[str]) -> int:
        """Deletes finished (completed, failed, cancelled) instances last updated before
        ``before`` whose status is in ``statuses`` (empty: any finished); how many."""
        ...

    def send_signal(self, id: str, record: bytes, now: float) -> int:
        """Appends a signal record to the instance's inbox (its own transaction) and marks the
        instance due at ``now`` (keeping an earlier due time); returns its number (1, 2, ... per
        instance). Raises ``tideflow.UnknownInstance``, or ``tideflow.SignalError`` when the
        instance is finished."""
        ...

    def signals(self, id: str) -> builtins.list[tuple[int, bytes]]:
        """The inbox: ``(number, record)`` in arrival order (empty for an unknown instance)."""
        ...

    def due(self, now: float, limit: int | None) -> builtins.list[InstanceMeta]:
        """Suspended instances whose ``due_at`` is at or before ``now``, earliest first."""
        ...

    def describe(self) -> str:
        """A short name for messages, e.g. ``postgres://host/db``."""
        ...
