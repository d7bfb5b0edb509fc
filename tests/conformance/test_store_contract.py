"""The parts of the store contract that a store could get wrong and still run every workflow: a
stale writer is rejected, `commit_many` is all or nothing, bytes come back unchanged, and the
indexed queries (list, purge, due) and the signal inbox mean exactly what `stores/base.py` says.

Two levels:

- through the public engine API, on every store whose data outlives an engine (`durable`): while
  engine A is inside a step, a second engine B on the same store (another process) moves the same
  instance on; A's commit must then be rejected and B's result must stand, and A, instead of
  raising, reloads the instance and returns (or goes on from) what the store holds;
- through the store protocol itself, on every store written in Python (`py_store`): the calls the
  engine makes, with opaque bytes (random, NULs, high bytes) that a store must never parse.

A new Python store joins both by adding its factory to `PYTHON_STORES` in conftest.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tideflow import (
    Context,
    Engine,
    SignalError,
    Status,
    StoreError,
    UnknownInstance,
    Workflow,
    step,
)
from tideflow.stores.base import Commit, InstanceMeta, Store, StoreConflict

from .conftest import Stores

# ---------------------------------------------------------------------------------------------
# Engine level: a stale writer, through the public API
# ---------------------------------------------------------------------------------------------


class Interrupt(BaseException):
    """Stands for a process dying mid-step."""


Snapshot = tuple[Status, Any, list[tuple[str, str, int, str]]]


def snapshot(engine: Engine, iid: str) -> Snapshot:
    """What the store holds for an instance, as the public API shows it."""
    run = engine.get(iid)
    return (
        run.status,
        run.output,
        [(e.position, e.step, e.attempt, e.status) for e in engine.steps(iid)],
    )


class SecondWriter:
    """Engine B: opened on the same store, used once, from inside a step engine A is running."""

    def __init__(self, durable: Stores) -> None:
        self.durable = durable
        self.workflows: list[Workflow] = []
        self.used = False
        self.seen: Snapshot | None = None  # the store as B left it
        self.result: Any = None

    def first_time(self, iid: str, act: Callable[[Engine], Any]) -> bool:
        """Runs `act` on engine B the first time it is called; whether it did. (B runs the step
        again: there, this returns False.)"""
        if self.used:
            return False
        self.used = True
        b = self.durable.engine(fresh=True)
        b.register(*self.workflows)
        self.result = act(b)
        self.seen = snapshot(b, iid)
        return True


ran: list[tuple[str, int]] = []  # (idempotency key, attempt) of every step execution


@pytest.fixture(autouse=True)
def _reset() -> None:
    ran.clear()


@step
def plus_one(ctx: Context, x: int) -> int:
    ran.append((ctx.idempotency_key, ctx.attempt))
    return x + 1


@step
def plus_three(ctx: Context, x: int) -> int:
    ran.append((ctx.idempotency_key, ctx.attempt))
    return x + 3


def test_a_stale_writer_is_rejected_and_the_other_writers_result_stands(durable: Stores) -> None:
    b = SecondWriter(durable)

    @step
    def middle(ctx: Context, x: int) -> int:
        ran.append((ctx.idempotency_key, ctx.attempt))
        if b.first_time(ctx.instance_id, lambda e: e.resume(ctx.instance_id)):
            return x * 1000  # A's output: must never be recorded
        return x * 10  # B's output

    wf = Workflow("race").then(plus_one).then(middle).then(plus_three)
    b.workflows.append(wf)
    a = durable.engine()
    run = a.run(wf, 1, id="race")  # A lost the race: it returns what B left, never raises
    assert (run.status, run.output) == (Status.COMPLETED, 2 * 10 + 3)
    assert (b.result.status, b.result.output) == (Status.COMPLETED, 2 * 10 + 3)

    after = snapshot(durable.engine(fresh=True), "race")
    assert after == b.seen  # the rejected commit changed nothing
    status, output, history = after
    assert (status, output) == (Status.COMPLETED, 23)
    # each step is recorded once; the middle one is B's attempt (A's was in flight when B resumed)
    assert history == [
        ("0", "plus_one", 1, "completed"),
        ("1", "middle", 2, "completed"),
        ("2", "plus_three", 1, "completed"),
    ]
    # A never went past the step it lost; the last step ran once, in B
    assert ran == [("race/0", 1), ("race/1", 1), ("race/1", 2), ("race/2", 1)]


def test_the_losing_engine_reads_the_winners_result_and_runs_nothing(durable: Stores) -> None:
    b = SecondWriter(durable)

    @step
    def middle(ctx: Context, x: int) -> int:
        if b.first_time(ctx.instance_id, lambda e: e.resume(ctx.instance_id)):
            return -1
        return x * 10

    wf = Workflow("loser").then(plus_one).then(middle).then(plus_three)
    b.workflows.append(wf)
    a = durable.engine()
    assert a.run(wf, 1, id="l").output == 23
    n = len(ran)
    assert a.get("l").output == 23
    assert (a.resume("l").status, a.run(wf, 99, id="l").output) == (Status.COMPLETED, 23)
    assert asyncio.run(a.run_async(wf, 99, id="l")).output == 23
    assert ran[n:] == []
    # the rejected commit left nothing open: A writes a new instance on the same store at once
    assert a.run(Workflow("after").then(plus_one), 1, id="next").output == 2
    assert snapshot(durable.engine(fresh=True), "l") == b.seen


def test_a_stale_fan_out_wave_is_rejected_as_a_whole(durable: Stores) -> None:
    b = SecondWriter(durable)

    @step
    def branch(ctx: Context, x: int) -> int:
        ran.append((ctx.idempotency_key, ctx.attempt))
        if ctx.idempotency_key == "f/0.p1" and b.first_time(
            ctx.instance_id, lambda e: e.resume(ctx.instance_id)
        ):
            return -1000
        return x + int(ctx.idempotency_key[-1])

    @step
    def total(ctx: Context, xs: tuple[int, ...]) -> int:
        return sum(xs)

    wf = Workflow("wave").parallel(branch, branch, branch).then(total)
    b.workflows.append(wf)
    assert durable.engine().run(wf, 10, id="f").output == 10 + 11 + 12
    after = snapshot(durable.engine(fresh=True), "f")
    assert after == b.seen
    assert after[1] == 10 + 11 + 12  # B's wave, not A's
    assert sorted(p for p, *_ in after[2]) == ["0.p0", "0.p1", "0.p2", "1"]  # each once


def test_a_stale_async_writer_is_rejected(durable: Stores) -> None:
    b = SecondWriter(durable)

    @step
    async def middle(ctx: Context, x: int) -> int:
        if not b.used:  # B is another process: it runs in its own thread, off this loop
            await asyncio.to_thread(b.first_time, ctx.instance_id, lambda e: e.resume("as"))
            return -1
        return x * 10

    wf = Workflow("async-race").then(plus_one).then(middle).then(plus_three)
    b.workflows.append(wf)
    run = asyncio.run(durable.engine().run_async(wf, 1, id="as"))
    assert (run.status, run.output) == (Status.COMPLETED, 23)
    after = snapshot(durable.engine(fresh=True), "as")
    assert after == b.seen
    assert (after[0], after[1], [p for p, *_ in after[2]]) == (
        Status.COMPLETED,
        23,
        ["0", "1", "2"],
    )


def test_a_stale_writer_loses_to_an_instance_the_other_left_waiting(durable: Stores) -> None:
    b = SecondWriter(durable)

    @step
    def middle(ctx: Context, x: int) -> int:
        if b.first_time(ctx.instance_id, lambda e: e.resume(ctx.instance_id)):
            return -1
        return x * 10

    @step
    def done(ctx: Context, payload: str) -> str:
        return payload

    wf = Workflow("wait-race").then(plus_one).then(middle).wait_signal("go").then(done)
    b.workflows.append(wf)
    assert durable.engine().run(wf, 1, id="w").status is Status.SUSPENDED
    assert b.result.status is Status.SUSPENDED
    c = durable.engine(fresh=True)
    c.register(wf)
    assert snapshot(c, "w") == b.seen
    c.signal("w", "go", "on")
    assert [(r.id, r.output) for r in c.run_due()] == [("w", "on")]
    assert [(p, s, a) for p, s, a, _ in snapshot(c, "w")[2]] == [
        ("0", "plus_one", 1),
        ("1", "middle", 2),
        ("3", "done", 1),
    ]


def test_a_stale_writer_loses_to_one_that_died_partway(durable: Stores) -> None:
    b = SecondWriter(durable)

    @step
    def middle(ctx: Context, x: int) -> int:
        ran.append((ctx.idempotency_key, ctx.attempt))
        if not b.used:
            try:
                b.first_time(ctx.instance_id, lambda e: e.resume(ctx.instance_id))
            except Interrupt:  # B's process died in the last step, after committing this one
                b.seen = snapshot(durable.engine(), ctx.instance_id)
            return -1
        return x * 10

    @step
    def last(ctx: Context, x: int) -> int:
        ran.append((ctx.idempotency_key, ctx.attempt))
        if len([k for k, _ in ran if k == ctx.idempotency_key]) == 1:
            raise Interrupt
        return x + 3

    wf = Workflow("partway").then(plus_one).then(middle).then(last)
    b.workflows.append(wf)
    a = durable.engine()
    # A's commit loses; A reloads what B left (running, its last step interrupted) and goes on
    assert a.run(wf, 1, id="p").output == 23  # B's middle output
    assert b.seen is not None and b.seen[0] is Status.RUNNING
    c = durable.engine(fresh=True)
    assert [(p, a) for p, _, a, _ in snapshot(c, "p")[2]] == [("0", 1), ("1", 2), ("2", 2)]
    assert [k for k, _ in ran].count("p/1") == 2  # A's attempt and B's; only B's recorded


def test_a_cancel_by_another_engine_wins_over_the_step_in_flight(durable: Stores) -> None:
    b = SecondWriter(durable)

    @step
    def middle(ctx: Context, x: int) -> int:
        if b.first_time(ctx.instance_id, lambda e: e.cancel(ctx.instance_id, "operator")):
            return -1
        return x * 10

    wf = Workflow("cancel-race").then(plus_one).then(middle).then(plus_three)
    b.workflows.append(wf)
    assert durable.engine().run(wf, 1, id="k").status is Status.CANCELLED
    assert b.result.status is Status.CANCELLED
    after = snapshot(durable.engine(fresh=True), "k")
    assert after == b.seen
    assert after[0] is Status.CANCELLED
    assert [p for p, *_ in after[2]] == ["0"]  # A's middle output was never recorded
    assert ("k/2", 1) not in ran


# ---------------------------------------------------------------------------------------------
# Protocol level: every store written in Python, called directly
# ---------------------------------------------------------------------------------------------

T0 = 1_700_000_000.0  # times move in quarter seconds: exact in binary and in microseconds
FINISHED = ("completed", "failed", "cancelled")
UNFINISHED = ("pending", "running", "suspended")


def blob(n: int = 48) -> bytes:
    """An opaque record: stores must keep it as it is, never parse it."""
    return os.urandom(n)


AWKWARD = [
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
    iid: str, workflow: str = "orders", status: str = "running", at: float = T0
) -> InstanceMeta:
    """The indexed fields of a new instance, as the engine passes them to `create`."""
    return (iid, workflow, status, 1, at, at, None)


def new(
    store: Store,
    iid: str,
    workflow: str = "orders",
    status: str = "running",
    at: float = T0,
    records: Sequence[bytes] | None = None,
) -> tuple[bytes, list[bytes]]:
    """Creates an instance; its header and first records."""
    header, first = blob(), [blob(), blob(9)] if records is None else list(records)
    assert store.create(meta(iid, workflow, status, at), header, first) is None
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
) -> Commit:
    return (iid, expected, status, at, due_at, header, records, seen)


def state(store: Store, iid: str) -> tuple[object, list[bytes], list[tuple[int, bytes]]]:
    """Everything a store holds for one instance."""
    return store.get(iid), store.records(iid), store.signals(iid)


def due_at(store: Store, iid: str) -> float | None:
    got = store.get(iid)
    assert got is not None
    return got[0][6]


def finish(store: Store, iid: str, status: str, at: float) -> None:
    """Moves a new instance (version 1) to `status` at `at`."""
    store.commit(commit(iid, 1, status, at=at, header=blob() if status in FINISHED else None))


def test_the_store_satisfies_the_protocol(py_store: Store) -> None:
    assert isinstance(py_store, Store)
    name = py_store.describe()
    assert isinstance(name, str) and name


def test_create_writes_version_1_and_is_idempotent_by_id(py_store: Store) -> None:
    header, first = new(py_store, "a", records=(blob(), blob()))
    stored = (("a", "orders", "running", 1, T0, T0, None), header)
    assert py_store.get("a") == stored
    assert py_store.records("a") == first
    again = py_store.create(("a", "other", "pending", 1, T0 + 5, T0 + 5, T0 + 9), blob(), [blob()])
    assert again == stored  # the stored instance, unchanged
    assert state(py_store, "a") == (stored, first, [])


def test_an_unknown_id_reads_as_nothing(py_store: Store) -> None:
    new(py_store, "known")
    assert state(py_store, "ghost") == (None, [], [])
    assert py_store.delete("ghost") is False


def test_commit_applies_one_step_boundary(py_store: Store) -> None:
    header, first = new(py_store, "c", at=T0)
    r1, r2, r3 = blob(), blob(200), blob(1)
    py_store.commit(commit("c", 1, "running", at=T0 + 1, records=(r1,)))
    assert py_store.get("c") == (("c", "orders", "running", 2, T0, T0 + 1, None), header)
    py_store.commit(commit("c", 2, "suspended", at=T0 + 2.5, due_at=T0 + 60, records=[r2, r3]))
    assert py_store.get("c") == (("c", "orders", "suspended", 3, T0, T0 + 2.5, T0 + 60), header)
    final = blob(300)
    py_store.commit(commit("c", 3, "completed", at=T0 + 70, header=final))  # no records
    assert py_store.get("c") == (("c", "orders", "completed", 4, T0, T0 + 70, None), final)
    assert py_store.records("c") == [*first, r1, r2, r3]


@pytest.mark.parametrize("expected", [0, 1, 2, 4, 10**12], ids=lambda v: f"expected={v}")
def test_a_stale_commit_raises_store_conflict_and_changes_nothing(
    py_store: Store, expected: int
) -> None:
    new(py_store, "s")
    py_store.commit(commit("s", 1, records=[blob()]))
    py_store.commit(commit("s", 2, "suspended", due_at=T0 + 9, records=[blob()]))
    py_store.send_signal("s", blob(), T0 + 3)
    before = state(py_store, "s")
    stale = commit("s", expected, "completed", at=T0 + 50, header=blob(), records=[blob()], seen=1)
    with pytest.raises(StoreConflict) as err:
        py_store.commit(stale)
    assert isinstance(err.value, StoreError)  # what the engine surfaces, "another writer"
    assert (err.value.instance_id, err.value.expected, err.value.found) == ("s", expected, 3)
    assert state(py_store, "s") == before
    py_store.commit(commit("s", 3, "running"))  # the current writer still commits
    assert py_store.get("s")[0][3] == 4  # type: ignore[index]


def test_a_commit_to_an_unknown_instance_raises_unknown_instance(py_store: Store) -> None:
    new(py_store, "real")
    before = state(py_store, "real")
    with pytest.raises(UnknownInstance):
        py_store.commit(commit("ghost", 1, "completed", header=blob(), records=[blob()]))
    assert state(py_store, "ghost") == (None, [], [])
    assert state(py_store, "real") == before
    assert py_store.list([], None, None) == [before[0][0]]  # type: ignore[index]


def test_commit_many_applies_every_commit(py_store: Store) -> None:
    for iid in ("x", "y", "z"):
        new(py_store, iid)
    rx, ry = blob(), blob()
    py_store.commit(commit("z", 1))
    py_store.commit_many(
        [commit("x", 1, records=[rx]), commit("y", 1, "suspended", due_at=T0 + 5, records=[ry])]
    )
    py_store.commit_many([commit("z", 2, "completed", header=b"\x00done")])
    assert [py_store.get(i)[0][2:4] for i in ("x", "y", "z")] == [  # type: ignore[index]
        ("running", 2),
        ("suspended", 2),
        ("completed", 3),
    ]
    assert py_store.records("x")[-1] == rx and py_store.records("y")[-1] == ry
    assert py_store.get("z")[1] == b"\x00done"  # type: ignore[index]


@pytest.mark.parametrize("bad", ["stale", "ahead", "unknown"])
def test_commit_many_is_all_or_nothing(py_store: Store, bad: str) -> None:
    for iid in ("first", "second", "third"):
        new(py_store, iid)
    py_store.commit(commit("second", 1, records=[blob()]))  # "second" is at version 2 now
    before = {iid: state(py_store, iid) for iid in ("first", "second", "third")}
    middle = {
        "stale": commit("second", 1, "completed", header=blob(), records=[blob()]),
        "ahead": commit("second", 3, "completed", header=blob(), records=[blob()]),
        "unknown": commit("ghost", 1, "completed", header=blob(), records=[blob()]),
    }[bad]
    batch = [
        commit("first", 1, "completed", at=T0 + 5, header=blob(), records=[blob(), blob()]),
        middle,
        commit("third", 1, "suspended", at=T0 + 5, due_at=T0 + 6, records=[blob()]),
    ]
    with pytest.raises(UnknownInstance if bad == "unknown" else StoreConflict):
        py_store.commit_many(batch)
    assert {iid: state(py_store, iid) for iid in before} == before
    assert py_store.get("ghost") is None


def test_records_and_headers_come_back_byte_identical(py_store: Store) -> None:
    header = b"\x00\xff" + bytes(range(255, -1, -1)) + b"\x00"
    new(py_store, "b", records=AWKWARD[:3])
    py_store.commit(commit("b", 1, records=AWKWARD[3:]))
    py_store.commit(commit("b", 2, "completed", header=header))
    got = py_store.records("b")
    assert got == AWKWARD
    assert all(type(r) is bytes for r in got)
    stored = py_store.get("b")
    assert stored is not None and stored[1] == header and type(stored[1]) is bytes


def test_records_keep_commit_order_and_never_mix_instances(py_store: Store) -> None:
    new(py_store, "one", records=[b"one:0"])
    new(py_store, "two", records=[])
    expected: dict[str, list[bytes]] = {"one": [b"one:0"], "two": []}
    versions = {"one": 1, "two": 1}
    for n in range(1, 31):
        iid = "one" if n % 3 else "two"
        batch = [iid.encode() + b":%d:" % n + blob(n % 4) for _ in range(n % 4)]
        py_store.commit(commit(iid, versions[iid], at=T0 + n, records=batch))
        versions[iid] += 1
        expected[iid].extend(batch)
    assert py_store.records("one") == expected["one"]
    assert py_store.records("two") == expected["two"]


def test_list_filters_by_status_and_workflow_newest_first(py_store: Store) -> None:
    layout = [  # created in this order, a second apart: (id, workflow, final status)
        ("o1", "orders", "completed"),
        ("b1", "billing", "running"),
        ("o2", "orders", "suspended"),
        ("b2", "billing", "failed"),
        ("o3", "orders", "running"),
    ]
    for n, (iid, workflow, _) in enumerate(layout):
        new(py_store, iid, workflow, at=T0 + n)
    for iid, _, status in layout[::-1]:  # updated in the reverse order: list ignores it
        if status != "running":
            finish(py_store, iid, status, T0 + 100)

    def ids(
        statuses: Sequence[str], workflow: str | None = None, limit: int | None = None
    ) -> list[str]:
        rows = py_store.list(statuses, workflow, limit)
        assert rows == [py_store.get(m[0])[0] for m in rows]  # type: ignore[index]
        return [m[0] for m in rows]

    assert ids([]) == ["o3", "b2", "o2", "b1", "o1"]
    assert ids(["running"]) == ["o3", "b1"]
    assert ids(["completed", "failed"]) == ["b2", "o1"]
    assert ids([], "orders") == ["o3", "o2", "o1"]
    assert ids(["running", "suspended"], "orders") == ["o3", "o2"]
    assert ids([], None, 2) == ["o3", "b2"]
    assert ids(["running", "failed", "suspended"], "billing", 1) == ["b2"]
    assert ids([], None, 0) == []
    assert ids([], "nope") == []
    assert ids(["cancelled"]) == []


def test_delete_removes_the_instance_its_log_and_its_inbox(py_store: Store) -> None:
    new(py_store, "d")
    py_store.commit(commit("d", 1, "suspended", records=[blob()]))
    py_store.send_signal("d", blob(), T0 + 2)
    keep = new(py_store, "keep")
    assert py_store.delete("d") is True
    assert state(py_store, "d") == (None, [], [])
    assert py_store.delete("d") is False
    assert py_store.records("keep") == keep[1]
    # the id can be used again, with nothing left over from before
    header, first = new(py_store, "d", at=T0 + 10)
    assert state(py_store, "d") == ((meta("d", at=T0 + 10), header), first, [])
    assert py_store.send_signal("d", b"again", T0 + 11) == 1


def test_purge_deletes_only_finished_instances_updated_before_the_time(py_store: Store) -> None:
    before = T0 + 100
    cases = {  # id: (status, last updated)
        "done-old": ("completed", before - 50),
        "failed-old": ("failed", before - 0.25),
        "cancelled-old": ("cancelled", before - 1),
        "done-at-the-time": ("completed", before),
        "done-new": ("completed", before + 1),
        "pending-old": ("pending", before - 50),
        "running-old": ("running", before - 50),
        "suspended-old": ("suspended", before - 50),
    }
    for iid, (status, at) in cases.items():
        new(py_store, iid, at=T0)
        finish(py_store, iid, status, at)
    py_store.send_signal("suspended-old", blob(), before - 40)

    assert py_store.purge(before, list(UNFINISHED)) == 0  # unfinished: never purged
    assert py_store.purge(before, ["failed"]) == 1
    assert state(py_store, "failed-old") == (None, [], [])
    assert py_store.purge(before, []) == 2  # any finished status
    left = {m[0] for m in py_store.list([], None, None)}
    assert left == {"done-at-the-time", "done-new", "pending-old", "running-old", "suspended-old"}
    assert py_store.purge(before, []) == 0
    assert py_store.purge(before + 2, ["completed", "cancelled"]) == 2
    assert {m[0] for m in py_store.list([], None, None)} == {
        "pending-old",
        "running-old",
        "suspended-old",
    }
    assert len(py_store.signals("suspended-old")) == 1  # an unfinished instance keeps its inbox


def test_signals_are_numbered_per_instance_in_arrival_order(py_store: Store) -> None:
    new(py_store, "a")
    new(py_store, "b")
    sent = {"a": [blob(), b"\x00", AWKWARD[2]], "b": [blob()]}
    numbers = [py_store.send_signal("a", sent["a"][0], T0 + 1)]
    numbers.append(py_store.send_signal("b", sent["b"][0], T0 + 1))
    numbers += [py_store.send_signal("a", r, T0 + 2) for r in sent["a"][1:]]
    assert numbers == [1, 1, 2, 3]
    got = py_store.signals("a")
    assert got == [(1, sent["a"][0]), (2, sent["a"][1]), (3, sent["a"][2])]
    assert all(type(r) is bytes for _, r in got)
    assert py_store.signals("b") == [(1, sent["b"][0])]
    assert py_store.signals("ghost") == []


def test_a_signal_is_its_own_write_and_leaves_the_log_alone(py_store: Store) -> None:
    header, first = new(py_store, "l")
    py_store.send_signal("l", blob(), T0 + 1)
    got = py_store.get("l")
    # no version bump: else the engine driving the instance would be rejected as a stale writer
    assert got is not None and got[0][3] == 1 and got[1] == header
    assert py_store.records("l") == first
    py_store.commit(commit("l", 1, "running"))  # a writer that loaded version 1 still commits


@pytest.mark.parametrize("status", FINISHED)
def test_a_signal_to_a_finished_instance_is_a_signal_error(py_store: Store, status: str) -> None:
    new(py_store, "f")
    py_store.send_signal("f", blob(), T0 + 1)
    finish(py_store, "f", status, T0 + 2)
    before = state(py_store, "f")
    with pytest.raises(SignalError):
        py_store.send_signal("f", blob(), T0 + 3)
    assert state(py_store, "f") == before


def test_a_signal_to_an_unknown_instance_is_unknown_instance(py_store: Store) -> None:
    with pytest.raises(UnknownInstance):
        py_store.send_signal("ghost", blob(), T0)
    assert state(py_store, "ghost") == (None, [], [])


def test_a_signal_makes_the_instance_due_now_keeping_an_earlier_due_time(py_store: Store) -> None:
    for iid, due in (("later", T0 + 100), ("earlier", T0 + 5), ("never", None)):
        new(py_store, iid)
        py_store.commit(commit(iid, 1, "suspended", at=T0 + 1, due_at=due))
    for iid in ("later", "earlier", "never"):
        py_store.send_signal(iid, blob(), T0 + 10)
    assert [due_at(py_store, i) for i in ("later", "earlier", "never")] == [
        T0 + 10,
        T0 + 5,
        T0 + 10,
    ]
    ids = [m[0] for m in py_store.due(T0 + 10, None)]
    assert ids[0] == "earlier" and sorted(ids[1:]) == ["later", "never"]  # the last two tie
    assert py_store.due(T0 + 9.75, None)[0][0] == "earlier"
    assert len(py_store.due(T0 + 9.75, None)) == 1


def test_due_lists_suspended_instances_due_by_now_earliest_first(py_store: Store) -> None:
    for iid, due in (("t3", T0 + 3), ("t1", T0 + 1), ("t2", T0 + 2), ("t9", T0 + 9)):
        new(py_store, iid)
        py_store.commit(commit(iid, 1, "suspended", due_at=due))
    new(py_store, "no-timer")
    py_store.commit(commit("no-timer", 1, "suspended", due_at=None))
    new(py_store, "running")
    py_store.send_signal("running", blob(), T0)  # due, but not suspended: someone drives it
    new(py_store, "done")
    finish(py_store, "done", "completed", T0)

    def ids(now: float, limit: int | None = None) -> list[str]:
        rows = py_store.due(now, limit)
        assert rows == [py_store.get(m[0])[0] for m in rows]  # type: ignore[index]
        return [m[0] for m in rows]

    assert ids(T0 + 0.75) == []
    assert ids(T0 + 2) == ["t1", "t2"]  # at or before now
    assert ids(T0 + 3.5) == ["t1", "t2", "t3"]
    assert ids(T0 + 100, 2) == ["t1", "t2"]
    assert ids(T0 + 100) == ["t1", "t2", "t3", "t9"]
    py_store.commit(commit("t1", 2, "running"))  # picked up: no longer due
    assert ids(T0 + 100) == ["t2", "t3", "t9"]


@pytest.mark.parametrize("timer", [None, T0 + 1000], ids=["no-timer", "timer"])
def test_a_suspend_that_missed_a_signal_stays_due_at_updated_at(
    py_store: Store, timer: float | None
) -> None:
    new(py_store, "m")
    py_store.send_signal("m", blob(), T0 + 1)
    py_store.send_signal("m", blob(), T0 + 2)
    # the writer read signal 1 only, and suspends at T0 + 5: signal 2 must not be left unnoticed
    py_store.commit(commit("m", 1, "suspended", at=T0 + 5, due_at=timer, seen=1))
    assert due_at(py_store, "m") == T0 + 5
    assert [m[0] for m in py_store.due(T0 + 5, None)] == ["m"]
    # a writer that saw both suspends until its own timer
    py_store.commit(commit("m", 2, "suspended", at=T0 + 6, due_at=timer, seen=2))
    assert due_at(py_store, "m") == timer
    assert py_store.due(T0 + 6, None) == []


def test_only_a_suspending_commit_is_kept_due_for_a_missed_signal(py_store: Store) -> None:
    new(py_store, "r")
    py_store.send_signal("r", blob(), T0 + 1)
    py_store.commit(commit("r", 1, "running", at=T0 + 5, due_at=None, seen=0))
    assert due_at(py_store, "r") is None
    py_store.commit(commit("r", 2, "completed", at=T0 + 6, header=blob(), seen=0))
    assert due_at(py_store, "r") is None
    assert py_store.due(T0 + 100, None) == []
