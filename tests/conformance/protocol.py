"""Helpers of the store-protocol suite (`test_protocol_*.py`): instances, commits and claims as
the engine would pass them, with opaque bytes that a store must never parse.

Times move in quarter seconds from `T0`: exact in binary and in microseconds, so that a store
keeping timestamps at microsecond precision compares equal.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tideflow.stores.base import Claim, Commit, InstanceMeta, Loaded, Store

__all__ = [
    "AWKWARD",
    "FINISHED",
    "PLAN",
    "T0",
    "UNFINISHED",
    "blob",
    "claim",
    "commit",
    "finish",
    "loaded",
    "meta",
    "new",
    "version",
]

T0 = 1_700_000_000.0
FINISHED = ("completed", "failed", "cancelled")
UNFINISHED = ("pending", "running", "suspended")
#: The plan hash instances get unless a test says otherwise.
PLAN = "plan-a"


def blob(n: int = 48) -> bytes:
    """An opaque record of `n` random bytes."""
    return os.urandom(n)


#: Records a store might mangle if it treated them as text, escaped them or cut them at a NUL.
AWKWARD = [
    b"",
    b"\x00",
    b"\x00" * 17,
    bytes(range(256)),
    b"\xff\xfe\xfd\x00\x80\x7f",
    b"TF\x01\x00" + os.urandom(61) + b"\x00\x00",
    "é,漢\n'\";--".encode(),
    b"\\x00 not an escape",
    os.urandom(200_000),
]


def meta(
    iid: str,
    workflow: str = "orders",
    status: str = "running",
    at: float = T0,
    plan_hash: str = PLAN,
    due_at: float | None = None,
) -> InstanceMeta:
    """The indexed fields of a new instance, as the engine passes them to `create`."""
    return InstanceMeta(iid, workflow, plan_hash, status, 1, at, at, due_at, None, None, None)


def new(
    store: Store,
    iid: str,
    workflow: str = "orders",
    status: str = "running",
    at: float = T0,
    records: Sequence[bytes] | None = None,
    plan_hash: str = PLAN,
    due_at: float | None = None,
) -> tuple[bytes, list[bytes]]:
    """Creates an instance; its header and first records."""
    header, first = blob(), [blob(), blob(9)] if records is None else list(records)
    m = meta(iid, workflow, status, at, plan_hash, due_at)
    assert store.create(m, header, first) is None
    return header, first


def commit(
    iid: str,
    expected: int,
    status: str = "running",
    at: float = T0 + 1,
    due_at: float | None = None,
    header: bytes | None = None,
    records: Sequence[bytes] = (),
    seen: int = 0,
    owner: str | None = None,
    error: str | None = None,
) -> Commit:
    """A commit as the engine would send it."""
    return Commit(iid, expected, status, at, due_at, header, records, seen, owner, error)


def claim(
    owner: str,
    now: float,
    limit: int = 10,
    lease: float = 30.0,
    plans: Sequence[str] = (PLAN,),
) -> Claim:
    """A claim as a worker would send it."""
    return Claim(owner, limit, lease, now, plans)


def loaded(store: Store, iid: str) -> Loaded:
    """`load`, which must find the instance."""
    got = store.load(iid)
    assert got is not None, f"{iid!r} should exist in {store.describe()}"
    return got


def version(store: Store, iid: str) -> int:
    """The stored version of an existing instance."""
    return loaded(store, iid).meta.version


def finish(store: Store, iid: str, status: str, at: float) -> None:
    """Moves a new instance (version 1) to `status` at `at`."""
    store.commit(commit(iid, 1, status, at=at, header=blob() if status in FINISHED else None))
