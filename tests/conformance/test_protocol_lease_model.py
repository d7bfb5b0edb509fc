"""Store protocol: random interleavings of claims, commits, extends, releases, signals and the
passing of time on one instance, checked step by step against a tiny model of the lease and
version rules (hypothesis).

The model knows only what fencing needs: status, version, owner, lease expiry. After every
operation the store must have answered as the model does (the same result, or the same
exception with the same fields) and hold the same lease fields and version.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tideflow.errors import LeaseLost, StoreConflict

from .facade import SyncFacade
from .protocol import T0, claim, commit, loaded, new

OWNERS = ("w1", "w2")
FINISHED = ("completed", "failed", "cancelled")


@dataclass
class Model:
    """What the store should hold for the instance."""

    status: str = "pending"
    version: int = 1
    due_at: float | None = None
    owner: str | None = None
    until: float | None = None

    def live(self, now: float) -> bool:
        return self.until is not None and self.until > now

    def lease_error(self, iid: str, owner: str | None, now: float) -> LeaseLost | None:
        live = self.live(now)
        ok = (
            (self.owner == owner and live)
            if owner is not None
            else (self.owner is None or not live)
        )
        return None if ok else LeaseLost(iid, owner, self.owner if live else None)

    def claimable(self, now: float) -> bool:
        if self.status in FINISHED:
            return False
        if self.owner is not None:
            return self.until is None or self.until <= now
        return self.status == "pending" or (
            self.status == "suspended" and self.due_at is not None and self.due_at <= now
        )


ops = st.one_of(
    st.tuples(st.just("tick"), st.sampled_from([0.25, 1.0, 2.5, 5.0, 10.0])),
    st.tuples(st.just("claim"), st.sampled_from(OWNERS), st.sampled_from([2.0, 5.0, 10.0])),
    st.tuples(
        st.just("commit"),
        st.sampled_from([*OWNERS, None]),
        st.booleans(),  # with the current version (else a stale one)
        st.sampled_from(["running", "suspended", "completed"]),
    ),
    st.tuples(st.just("extend"), st.sampled_from(OWNERS), st.sampled_from([2.0, 5.0])),
    st.tuples(st.just("release"), st.sampled_from(OWNERS)),
    st.tuples(st.just("signal")),
)

_examples = itertools.count()  # hypothesis reuses the store: each example gets its own ids


def _same(got: object, want: object) -> bool:
    if isinstance(want, BaseException):
        return (
            type(got) is type(want) and isinstance(got, BaseException) and vars(got) == vars(want)
        )
    return got == want


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(ops, min_size=1, max_size=30))
def test_leases_and_versions_follow_the_model(
    store: SyncFacade, steps: list[tuple[object, ...]]
) -> None:
    n = next(_examples)
    iid, plan = f"model-{n}", f"plan-{n}"
    new(store, iid, status="pending", at=T0, plan_hash=plan)
    m = Model()
    now = T0
    for step in steps:
        kind = step[0]
        want: object
        if kind == "tick":
            now += float(step[1])  # type: ignore[arg-type]
            continue
        if kind == "claim":
            owner, lease = str(step[1]), float(step[2])  # type: ignore[arg-type]
            ok = m.claimable(now)
            got = store.claim(claim(owner, now, lease=lease, plans=[plan]))
            assert [x.id for x in got] == ([iid] if ok else []), (step, m)
            if ok:
                m.owner, m.until = owner, now + lease
            continue
        if kind == "commit":
            who = step[1] if step[1] is None else str(step[1])
            current, status = bool(step[2]), str(step[3])
            expected = m.version if current else m.version + 1
            due = now + 1 if status == "suspended" else None
            c = commit(iid, expected, status, at=now, due_at=due, owner=who, seen=10**6)
            want = m.lease_error(iid, who, now)  # the lease first, then the version
            if want is None and not current:
                want = StoreConflict(iid, expected, m.version)
            try:
                store.commit(c)
                got_r: object = None
            except (LeaseLost, StoreConflict) as e:
                got_r = e
            assert _same(got_r, want), (step, m, got_r, want)
            if want is None:
                m.version += 1
                m.status, m.due_at = status, due
                if who is None or status in FINISHED:
                    m.owner, m.until = None, None
        elif kind == "extend":
            owner, lease = str(step[1]), float(step[2])  # type: ignore[arg-type]
            want = m.lease_error(iid, owner, now)
            try:
                got_r = store.extend(iid, owner, lease, now)
            except LeaseLost as e:
                got_r = e
            if want is None:
                want = now + lease
                m.until = now + lease
            assert _same(got_r, want), (step, m, got_r, want)
        elif kind == "release":
            owner = str(step[1])
            want = m.owner == owner
            assert store.release(iid, owner) is want, (step, m)
            if want:
                m.owner, m.until = None, None
        elif kind == "signal":
            if m.status in FINISHED:
                continue
            store.send_signal(iid, b"s", now)
            m.due_at = now if m.due_at is None else min(m.due_at, now)
        s = loaded(store, iid).meta
        assert (s.status, s.version, s.owner, s.lease_until, s.due_at) == (
            m.status,
            m.version,
            m.owner,
            m.until,
            m.due_at,
        ), (step, m)
