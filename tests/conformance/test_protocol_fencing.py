"""Store protocol: how a commit is fenced, and what changes the version.

A commit is checked in one order: the instance exists (`UnknownInstance`), then the lease
(`LeaseLost`), then the version (`StoreConflict`); a rejected commit changes nothing (a full
`load` before and after compares equal). Only commits change the version: claims, extends,
releases and signals do not, or a worker's own heartbeat would make its next commit stale.
"""

from __future__ import annotations

import pytest

from tideflow.errors import LeaseLost, StoreConflict, StoreError, UnknownInstance

from .facade import SyncFacade
from .protocol import T0, blob, claim, commit, loaded, new, version


def _suspended_with_a_signal(store: SyncFacade, iid: str) -> None:
    """An instance at version 3, suspended, with one signal waiting."""
    new(store, iid)
    store.commit(commit(iid, 1, records=[blob()]))
    store.commit(commit(iid, 2, "suspended", due_at=T0 + 9, records=[blob()]))
    store.send_signal(iid, blob(), T0 + 3)


@pytest.mark.parametrize("expected", [0, 1, 2, 4, 10**12], ids=lambda v: f"expected={v}")
def test_a_stale_commit_raises_store_conflict_and_changes_nothing(
    store: SyncFacade, expected: int
) -> None:
    _suspended_with_a_signal(store, "s")
    before = loaded(store, "s")
    stale = commit("s", expected, "completed", at=T0 + 50, header=blob(), records=[blob()], seen=1)
    with pytest.raises(StoreConflict) as err:
        store.commit(stale)
    assert isinstance(err.value, StoreError)
    assert (err.value.instance_id, err.value.expected, err.value.found) == ("s", expected, 3)
    assert loaded(store, "s") == before
    store.commit(commit("s", 3, "running"))  # the current writer still commits
    assert version(store, "s") == 4


def test_a_commit_to_an_unknown_instance_raises_unknown_instance(store: SyncFacade) -> None:
    new(store, "real")
    before = loaded(store, "real")
    with pytest.raises(UnknownInstance):
        store.commit(commit("ghost", 1, "completed", header=blob(), records=[blob()]))
    assert store.load("ghost") is None
    assert loaded(store, "real") == before


def test_unknown_is_checked_before_the_lease_and_the_version(store: SyncFacade) -> None:
    with pytest.raises(UnknownInstance):
        store.commit(commit("ghost", 99, owner="w1"))


def test_the_lease_is_checked_before_the_version(store: SyncFacade) -> None:
    new(store, "x", status="pending")
    store.claim(claim("w1", T0))
    before = loaded(store, "x")
    for owner in ("w2", None):
        with pytest.raises(LeaseLost) as err:  # a stale version too, yet the lease comes first
            store.commit(commit("x", 7, owner=owner, at=T0 + 1))
        assert (err.value.instance_id, err.value.owner, err.value.holder) == ("x", owner, "w1")
        assert not isinstance(err.value, StoreConflict)
    assert loaded(store, "x") == before
    with pytest.raises(StoreConflict):  # the holder with a stale version: a conflict
        store.commit(commit("x", 7, owner="w1", at=T0 + 1))
    assert loaded(store, "x") == before


def test_a_commit_without_owner_on_a_live_lease_is_lease_lost(store: SyncFacade) -> None:
    new(store, "x", status="pending")
    assert len(store.claim(claim("w1", T0, lease=10))) == 1
    before = loaded(store, "x")
    with pytest.raises(LeaseLost) as err:
        store.commit(commit("x", 1, "completed", at=T0 + 9.75, header=blob(), records=[blob()]))
    assert (err.value.owner, err.value.holder) == (None, "w1")
    assert isinstance(err.value, StoreError)
    assert loaded(store, "x") == before
    # once the lease has run out, an engine in its own process may commit, and clears it
    store.commit(commit("x", 1, "running", at=T0 + 10))
    m = loaded(store, "x").meta
    assert (m.version, m.owner, m.lease_until) == (2, None, None)


def test_a_commit_by_a_worker_without_a_lease_is_lease_lost(store: SyncFacade) -> None:
    new(store, "x", status="pending")
    before = loaded(store, "x")
    with pytest.raises(LeaseLost) as err:
        store.commit(commit("x", 1, owner="w1"))
    assert (err.value.owner, err.value.holder) == ("w1", None)
    assert loaded(store, "x") == before


def test_a_workers_commit_keeps_its_lease_until_it_finishes(store: SyncFacade) -> None:
    new(store, "x", status="pending")
    assert len(store.claim(claim("w1", T0, lease=30))) == 1
    store.commit(commit("x", 1, "running", at=T0 + 1, owner="w1", records=[blob()]))
    m = loaded(store, "x").meta
    assert (m.version, m.owner, m.lease_until) == (2, "w1", T0 + 30)
    store.commit(commit("x", 2, "suspended", at=T0 + 2, due_at=T0 + 5, owner="w1"))
    assert (loaded(store, "x").meta.owner, loaded(store, "x").meta.lease_until) == ("w1", T0 + 30)


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_a_finishing_commit_releases_the_lease(store: SyncFacade, status: str) -> None:
    new(store, "x", status="pending")
    store.claim(claim("w1", T0))
    store.commit(commit("x", 1, status, at=T0 + 1, owner="w1", header=blob()))
    m = loaded(store, "x").meta
    assert (m.status, m.owner, m.lease_until) == (status, None, None)
    assert store.claim(claim("w2", T0 + 100)) == []  # finished: never claimed again


def test_claims_leases_and_signals_do_not_change_the_version(store: SyncFacade) -> None:
    new(store, "x", status="pending")
    header = loaded(store, "x").header
    store.claim(claim("w1", T0, lease=10))
    assert version(store, "x") == 1
    assert store.extend("x", "w1", 20, T0 + 5) == T0 + 25
    assert version(store, "x") == 1
    store.send_signal("x", blob(), T0 + 6)
    assert version(store, "x") == 1
    assert store.release("x", "w1") is True
    assert version(store, "x") == 1
    store.claim(claim("w2", T0 + 7))
    store.release("x", "w1")  # not the holder: refused, and nothing moves
    got = loaded(store, "x")
    assert (got.meta.version, got.header, len(got.records)) == (1, header, 2)
    store.commit(commit("x", 1, owner="w2", at=T0 + 8))  # the version it loaded still holds
    assert version(store, "x") == 2


def test_the_rejected_old_owner_changes_nothing_after_a_takeover(store: SyncFacade) -> None:
    new(store, "x", status="pending")
    store.claim(claim("w1", T0, lease=10))
    store.commit(commit("x", 1, "running", at=T0 + 1, owner="w1", records=[b"w1"]))
    [taken] = store.claim(claim("w2", T0 + 10, lease=10))  # w1's lease ran out: w2 takes over
    assert (taken.id, taken.owner, taken.lease_until, taken.version) == ("x", "w2", T0 + 20, 2)
    before = loaded(store, "x")
    for at in (T0 + 10, T0 + 11, T0 + 25):  # during w2's lease, and after it expired too
        with pytest.raises(LeaseLost) as err:
            store.commit(commit("x", 2, "completed", at=at, owner="w1", header=blob()))
        assert err.value.owner == "w1"
        assert err.value.holder == ("w2" if at < T0 + 20 else None)
    assert loaded(store, "x") == before
    store.commit(commit("x", 2, "completed", at=T0 + 12, owner="w2", header=b"done"))
    got = loaded(store, "x")
    assert (got.meta.status, got.header, got.records[-1]) == ("completed", b"done", b"w1")
