"""Store protocol: the signal inbox (numbering, its own write, finished and unknown instances) and
`due` (what is due, pending instances included, in which order, and what a live lease hides), with the rule that a suspend
which missed a signal stays due."""

from __future__ import annotations

import pytest

from tideflow.errors import SignalError, UnknownInstance

from .facade import SyncFacade
from .protocol import AWKWARD, FINISHED, T0, blob, claim, commit, finish, loaded, new


def due_at(store: SyncFacade, iid: str) -> float | None:
    """The stored due time of an existing instance."""
    return loaded(store, iid).meta.due_at


def ids(store: SyncFacade, now: float, limit: int | None = None) -> list[str]:
    """The ids `due` returns, checking that each row is the stored one."""
    rows = store.due(now, limit)
    assert rows == [loaded(store, m.id).meta for m in rows]
    return [m.id for m in rows]


def test_signals_are_numbered_per_instance_in_arrival_order(store: SyncFacade) -> None:
    new(store, "a")
    new(store, "b")
    sent = {"a": [blob(), b"\x00", AWKWARD[3]], "b": [blob()]}
    numbers = [store.send_signal("a", sent["a"][0], T0 + 1)]
    numbers.append(store.send_signal("b", sent["b"][0], T0 + 1))
    numbers += [store.send_signal("a", r, T0 + 2) for r in sent["a"][1:]]
    assert numbers == [1, 1, 2, 3]
    assert store.signals("a", 0) == [(1, sent["a"][0]), (2, sent["a"][1]), (3, sent["a"][2])]
    assert store.signals("b", 0) == [(1, sent["b"][0])]


def test_a_signal_is_its_own_write_and_leaves_the_log_alone(store: SyncFacade) -> None:
    header, first = new(store, "l")
    store.send_signal("l", blob(), T0 + 1)
    got = loaded(store, "l")
    # no version bump: else the engine driving the instance would be rejected as a stale writer
    assert (got.meta.version, got.header, got.records) == (1, header, first)
    store.commit(commit("l", 1, "running"))  # a writer that loaded version 1 still commits


@pytest.mark.parametrize("status", FINISHED)
def test_a_signal_to_a_finished_instance_is_a_signal_error(store: SyncFacade, status: str) -> None:
    new(store, "f")
    store.send_signal("f", blob(), T0 + 1)
    finish(store, "f", status, T0 + 2)
    before = loaded(store, "f")
    with pytest.raises(SignalError):
        store.send_signal("f", blob(), T0 + 3)
    assert loaded(store, "f") == before


def test_a_signal_to_an_unknown_instance_is_unknown_instance(store: SyncFacade) -> None:
    with pytest.raises(UnknownInstance):
        store.send_signal("ghost", blob(), T0)
    assert store.load("ghost") is None


def test_a_signal_makes_the_instance_due_now_keeping_an_earlier_due_time(
    store: SyncFacade,
) -> None:
    for iid, due in (("later", T0 + 100), ("earlier", T0 + 5), ("never", None)):
        new(store, iid)
        store.commit(commit(iid, 1, "suspended", at=T0 + 1, due_at=due))
    for iid in ("later", "earlier", "never"):
        store.send_signal(iid, blob(), T0 + 10)
    assert [due_at(store, i) for i in ("later", "earlier", "never")] == [T0 + 10, T0 + 5, T0 + 10]
    got = ids(store, T0 + 10)
    assert got[0] == "earlier" and sorted(got[1:]) == ["later", "never"]  # the last two tie
    assert ids(store, T0 + 9.75) == ["earlier"]


def test_a_signal_to_a_leased_instance_keeps_the_lease(store: SyncFacade) -> None:
    new(store, "x", status="pending")
    store.claim(claim("w1", T0, lease=10))
    store.send_signal("x", blob(), T0 + 1)
    m = loaded(store, "x").meta
    assert (m.owner, m.lease_until, m.due_at, m.version) == ("w1", T0 + 10, T0 + 1, 1)


def test_due_lists_suspended_instances_due_by_now_earliest_first(store: SyncFacade) -> None:
    for iid, due in (("t3", T0 + 3), ("t1", T0 + 1), ("t2", T0 + 2), ("t9", T0 + 9)):
        new(store, iid)
        store.commit(commit(iid, 1, "suspended", due_at=due))
    new(store, "no-timer")
    store.commit(commit("no-timer", 1, "suspended", due_at=None))
    new(store, "running")
    store.send_signal("running", blob(), T0)  # due, but not suspended: someone drives it
    new(store, "done")
    finish(store, "done", "completed", T0)

    assert ids(store, T0 + 0.75) == []
    assert ids(store, T0 + 2) == ["t1", "t2"]  # at or before now
    assert ids(store, T0 + 3.5) == ["t1", "t2", "t3"]
    assert ids(store, T0 + 100, 2) == ["t1", "t2"]
    assert ids(store, T0 + 100) == ["t1", "t2", "t3", "t9"]
    store.commit(commit("t1", 2, "running"))  # picked up: no longer due
    assert ids(store, T0 + 100) == ["t2", "t3", "t9"]


def test_due_leaves_out_instances_under_a_live_lease(store: SyncFacade) -> None:
    for iid, due in (("a", T0 + 1), ("b", T0 + 1.5)):  # distinct: ties have no set order
        new(store, iid)
        store.commit(commit(iid, 1, "suspended", at=T0, due_at=due))
    [got] = store.claim(claim("w1", T0 + 2, limit=1, lease=10))
    assert got.id == "a"
    assert ids(store, T0 + 2) == ["b"]
    assert ids(store, T0 + 11.75) == ["b"]
    assert ids(store, T0 + 12) == ["a", "b"]  # the lease ran out at T0 + 12
    store.extend("a", "w1", 10, T0 + 11)
    assert ids(store, T0 + 12) == ["b"]
    assert store.release("a", "w1") is True
    assert ids(store, T0 + 12) == ["a", "b"]


@pytest.mark.parametrize("timer", [None, T0 + 1000], ids=["no-timer", "timer"])
def test_a_suspend_that_missed_a_signal_stays_due_at_updated_at(
    store: SyncFacade, timer: float | None
) -> None:
    new(store, "m")
    store.send_signal("m", blob(), T0 + 1)
    store.send_signal("m", blob(), T0 + 2)
    # the writer read signal 1 only, and suspends at T0 + 5: signal 2 must not be left unnoticed
    store.commit(commit("m", 1, "suspended", at=T0 + 5, due_at=timer, seen=1))
    assert due_at(store, "m") == T0 + 5
    assert ids(store, T0 + 5) == ["m"]
    # a writer that saw both suspends until its own timer
    store.commit(commit("m", 2, "suspended", at=T0 + 6, due_at=timer, seen=2))
    assert due_at(store, "m") == timer
    assert store.due(T0 + 6, None) == []


def test_a_missed_signal_keeps_an_earlier_timer(store: SyncFacade) -> None:
    new(store, "m")
    store.send_signal("m", blob(), T0 + 1)
    store.commit(commit("m", 1, "suspended", at=T0 + 5, due_at=T0 + 3, seen=0))
    assert due_at(store, "m") == T0 + 3


def test_only_a_suspending_commit_is_kept_due_for_a_missed_signal(store: SyncFacade) -> None:
    new(store, "r")
    store.send_signal("r", blob(), T0 + 1)
    store.commit(commit("r", 1, "running", at=T0 + 5, due_at=None, seen=0))
    assert due_at(store, "r") is None
    store.commit(commit("r", 2, "completed", at=T0 + 6, header=blob(), seen=0))
    assert due_at(store, "r") is None
    assert store.due(T0 + 100, None) == []


def test_a_pending_instance_is_due_from_the_due_time_it_was_created_with(
    store: SyncFacade,
) -> None:
    new(store, "p", status="pending", at=T0, due_at=T0)
    new(store, "later", status="pending", at=T0, due_at=T0 + 5)
    new(store, "s", at=T0)
    store.commit(commit("s", 1, "suspended", at=T0 + 0.5, due_at=T0 + 2))
    assert ids(store, T0) == ["p"]
    assert ids(store, T0 + 10) == ["p", "s", "later"]
    store.claim(claim("w1", T0 + 10, plans=["plan-a"], limit=1))  # takes "p": earliest due
    assert ids(store, T0 + 10) == ["s", "later"]
