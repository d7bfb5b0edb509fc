"""Store protocol: leases. What a claim takes (and never takes), two claimers racing, a lease
running out and another owner taking over, `extend` and `release` by the holder and by others.

The lease clock here is the `now` passed in (the engine's clock: memory, SQLite, the dict
stores). A store with a clock of its own (a server) judges leases by that clock instead and
joins these tests with a factory that maps the suite's times onto it.
"""

from __future__ import annotations

import pytest

from tideflow.errors import LeaseLost, UnknownInstance
from tideflow.stores.base import InstanceMeta

from .facade import SyncFacade
from .protocol import PLAN, T0, claim, commit, finish, loaded, new


def test_a_claim_leases_pending_and_due_instances_to_the_claimer(store: SyncFacade) -> None:
    new(store, "pending", status="pending", at=T0)
    new(store, "due", at=T0)
    store.commit(commit("due", 1, "suspended", at=T0 + 1, due_at=T0 + 2))
    new(store, "not-yet", at=T0)
    store.commit(commit("not-yet", 1, "suspended", at=T0 + 1, due_at=T0 + 60))
    new(store, "no-timer", at=T0)
    store.commit(commit("no-timer", 1, "suspended", at=T0 + 1))
    new(store, "running", at=T0)  # an engine drives it in its own process: not up for claims
    new(store, "done", at=T0)
    finish(store, "done", "completed", T0 + 1)
    got = store.claim(claim("w1", T0 + 5, lease=30))
    assert all(type(m) is InstanceMeta for m in got)
    assert sorted(m.id for m in got) == ["due", "pending"]
    for m in got:
        assert (m.owner, m.lease_until) == ("w1", T0 + 35)
        assert m == loaded(store, m.id).meta  # returned as leased, and stored so
    assert loaded(store, "pending").meta.status == "pending"  # a claim changes no status
    assert store.claim(claim("w2", T0 + 6)) == []  # w1 holds them


def test_a_claim_takes_the_earliest_due_first_up_to_its_limit(store: SyncFacade) -> None:
    for iid, due in (("d3", T0 + 3), ("d1", T0 + 1), ("d2", T0 + 2)):
        new(store, iid, at=T0)
        store.commit(commit(iid, 1, "suspended", at=T0 + 0.5, due_at=due))
    first = store.claim(claim("w1", T0 + 10, limit=2))
    assert [m.id for m in first] == ["d1", "d2"]
    assert [m.id for m in store.claim(claim("w2", T0 + 10, limit=2))] == ["d3"]
    assert store.claim(claim("w3", T0 + 10, limit=0)) == []


def test_a_claim_never_returns_a_plan_it_was_not_asked_for(store: SyncFacade) -> None:
    for n, plan in enumerate(["p1", "p2", "p3", "p1", "p2"]):
        new(store, f"i{n}", status="pending", at=T0 + n, plan_hash=plan)
    assert store.claim(claim("w", T0 + 9, plans=[])) == []  # empty: none, not all
    assert store.claim(claim("w", T0 + 9, plans=["p4"])) == []
    got = store.claim(claim("w", T0 + 9, plans=["p1", "p3"]))
    assert sorted(m.id for m in got) == ["i0", "i2", "i3"]
    assert {m.plan_hash for m in got} == {"p1", "p3"}
    rest = store.claim(claim("v", T0 + 9, plans=["p2", "p1"]))
    assert sorted(m.id for m in rest) == ["i1", "i4"]


def test_two_claimers_racing_for_one_instance_one_wins(store: SyncFacade) -> None:
    for round in range(12):
        plan = f"race-{round}"
        new(store, f"r{round}", status="pending", plan_hash=plan)
        a, b = store.race(
            [
                ("claim", (claim("w1", T0 + 1, plans=[plan]),)),
                ("claim", (claim("w2", T0 + 1, plans=[plan]),)),
            ]
        )
        assert isinstance(a, list) and isinstance(b, list), (a, b)
        winners = [w for w, got in (("w1", a), ("w2", b)) if got]
        assert len(winners) == 1, (a, b)
        assert len(a) + len(b) == 1
        assert loaded(store, f"r{round}").meta.owner == winners[0]


def test_racing_claimers_split_many_instances_without_overlap(store: SyncFacade) -> None:
    for n in range(9):
        new(store, f"m{n}", status="pending", at=T0 + n)
    results = store.race([("claim", (claim(f"w{k}", T0 + 20, limit=4),)) for k in range(3)])
    taken: list[str] = []
    for k, got in enumerate(results):
        assert isinstance(got, list), got
        assert all(m.owner == f"w{k}" for m in got)
        taken += [m.id for m in got]
    assert sorted(taken) == sorted(set(taken)) == sorted(f"m{n}" for n in range(9))


def test_an_expired_lease_passes_to_the_next_claimer(store: SyncFacade) -> None:
    new(store, "x", status="pending")
    store.claim(claim("w1", T0, lease=10))
    store.commit(commit("x", 1, "running", at=T0 + 1, owner="w1"))
    assert store.claim(claim("w2", T0 + 9.75)) == []
    [got] = store.claim(claim("w2", T0 + 10, lease=5))  # a lease holds until, not at, its end
    assert (got.owner, got.lease_until, got.status, got.version) == ("w2", T0 + 15, "running", 2)
    with pytest.raises(LeaseLost):
        store.extend("x", "w1", 10, T0 + 10)
    store.commit(commit("x", 2, "suspended", at=T0 + 11, owner="w2", due_at=T0 + 99))
    assert loaded(store, "x").meta.owner == "w2"


def test_an_expired_lease_on_a_not_yet_due_instance_is_claimable(store: SyncFacade) -> None:
    new(store, "x", status="pending")
    store.claim(claim("w1", T0, lease=10))
    store.commit(commit("x", 1, "suspended", at=T0 + 1, owner="w1", due_at=T0 + 1000))
    [got] = store.claim(claim("w2", T0 + 10))  # whatever its status: the holder is gone
    assert (got.id, got.owner) == ("x", "w2")


def test_extend_renews_only_the_holders_live_lease(store: SyncFacade) -> None:
    new(store, "x", status="pending")
    store.claim(claim("w1", T0, lease=10))
    assert store.extend("x", "w1", 10, T0 + 5) == T0 + 15
    assert loaded(store, "x").meta.lease_until == T0 + 15
    before = loaded(store, "x")
    with pytest.raises(LeaseLost) as err:
        store.extend("x", "w2", 100, T0 + 6)
    assert (err.value.instance_id, err.value.owner, err.value.holder) == ("x", "w2", "w1")
    assert loaded(store, "x") == before
    with pytest.raises(LeaseLost) as err:  # the holder, too late
        store.extend("x", "w1", 100, T0 + 15)
    assert (err.value.owner, err.value.holder) == ("w1", None)
    assert loaded(store, "x") == before
    with pytest.raises(UnknownInstance):
        store.extend("ghost", "w1", 10, T0)


def test_extend_of_an_unleased_instance_is_lease_lost(store: SyncFacade) -> None:
    new(store, "x", status="pending")
    with pytest.raises(LeaseLost):
        store.extend("x", "w1", 10, T0)
    assert loaded(store, "x").meta.owner is None


def test_release_gives_the_lease_back_only_for_its_holder(store: SyncFacade) -> None:
    new(store, "x", status="pending")
    store.claim(claim("w1", T0, lease=10))
    before = loaded(store, "x")
    assert store.release("x", "w2") is False
    assert loaded(store, "x") == before
    assert store.release("x", "w1") is True
    m = loaded(store, "x").meta
    assert (m.owner, m.lease_until, m.version) == (None, None, 1)
    assert store.release("x", "w1") is False  # nothing left to give back
    [got] = store.claim(claim("w2", T0 + 1))  # released: claimable again at once
    assert got.owner == "w2"
    with pytest.raises(UnknownInstance):
        store.release("ghost", "w1")


def test_release_of_an_expired_lease_by_its_last_holder(store: SyncFacade) -> None:
    new(store, "x", status="pending")
    new(store, "y", status="pending", plan_hash="other")
    store.claim(claim("w1", T0, lease=10))
    store.claim(claim("w1", T0, lease=10, plans=["other"]))
    store.claim(claim("w2", T0 + 20, plans=[PLAN]))  # w2 took "x" over after the expiry
    assert store.release("x", "w1") is False
    assert loaded(store, "x").meta.owner == "w2"
    assert store.release("y", "w1") is True  # no one claimed "y" since: its holder may give it back
    assert loaded(store, "y").meta.owner is None


def test_a_claimed_instance_is_committed_by_its_holder_end_to_end(store: SyncFacade) -> None:
    new(store, "x", status="pending", records=[b"start"])
    [m] = store.claim(claim("w1", T0, lease=10))
    store.commit(commit("x", m.version, "running", at=T0 + 1, owner="w1", records=[b"s1"]))
    until = store.extend("x", "w1", 10, T0 + 8)
    store.commit(commit("x", 2, "running", at=until - 1, owner="w1", records=[b"s2"]))
    store.commit(commit("x", 3, "completed", at=until - 0.5, owner="w1", header=b"H"))
    got = loaded(store, "x")
    assert (got.meta.status, got.meta.version, got.meta.owner) == ("completed", 4, None)
    assert (got.header, got.records) == (b"H", [b"start", b"s1", b"s2"])
    assert store.release("x", "w1") is False  # the finishing commit gave it back already
    assert store.claim(claim("w2", T0 + 1000)) == []
