"""The store conformance suite: every store passes these, through the public engine API.

Nothing here depends on how a store works inside; a new store joins by adding a parameter to the
`stores` fixture (conftest.py).
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tideflow import (
    Context,
    Retry,
    Status,
    UnknownInstance,
    VersionMismatch,
    Workflow,
    step,
)

from .conftest import Stores


class Interrupt(BaseException):
    """Stands for the process dying mid-step: not a step failure, the instance stays as committed."""


runs: list[tuple[str, int]] = []  # (idempotency key, attempt) of every step execution
interrupt_at: set[str] = set()  # idempotency keys that "crash" on their first attempt


@pytest.fixture(autouse=True)
def _reset() -> None:
    runs.clear()
    interrupt_at.clear()


@step
def add(ctx: Context, x: int) -> int:
    runs.append((ctx.idempotency_key, ctx.attempt))
    if ctx.idempotency_key in interrupt_at and ctx.attempt == 1:
        raise Interrupt
    return x + 1


@step
def triple(ctx: Context, x: int) -> int:
    runs.append((ctx.idempotency_key, ctx.attempt))
    if ctx.idempotency_key in interrupt_at and ctx.attempt == 1:
        raise Interrupt
    return x * 3


@step
def total(ctx: Context, xs: tuple[int, ...]) -> int:
    runs.append((ctx.idempotency_key, ctx.attempt))
    return sum(xs)


CHAIN = Workflow("chain").then(add).then(triple).then(add).then(triple)
FANOUT = Workflow("fanout").parallel(add, triple, add).then(total)


def test_run_is_stored_and_read_back(stores: Stores) -> None:
    run = stores.engine().run(CHAIN, 1, id="a")
    assert (run.status, run.output) == (Status.COMPLETED, 21)
    again = stores.engine(fresh=True)
    again.register(CHAIN)
    got = again.get("a")
    assert (got.id, got.workflow, got.status, got.output) == ("a", "chain", Status.COMPLETED, 21)
    assert got.plan_hash == CHAIN.plan_hash


def test_create_is_idempotent_by_id(stores: Stores) -> None:
    stores.engine().run(CHAIN, 1, id="same")
    n = len(runs)
    second = stores.engine(fresh=True).run(CHAIN, 50, id="same")
    assert second.output == 21
    assert len(runs) == n


def test_history_lists_every_attempt_in_order(stores: Stores) -> None:
    flaky_calls: list[int] = []

    @step(retry=Retry(max_attempts=3, initial_delay=1.5))
    def flaky(ctx: Context, x: int) -> int:
        flaky_calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError(f"try {ctx.attempt}")
        return x

    engine = stores.engine()
    run = engine.run(Workflow("h").then(add).then(flaky), 1, id="h")
    events = stores.engine(fresh=True).steps("h")
    assert run.status is Status.COMPLETED
    assert [(e.position, e.step, e.attempt, e.status) for e in events] == [
        ("0", "add", 1, "completed"),
        ("1", "flaky", 1, "failed"),
        ("1", "flaky", 2, "failed"),
        ("1", "flaky", 3, "completed"),
    ]
    assert events[1].error == "ConnectionError: try 1"
    assert events[2].started_at - events[1].finished_at == pytest.approx(1.5)
    assert all(e.finished_at >= e.started_at for e in events)


def test_an_interrupted_instance_resumes_where_it_stopped(stores: Stores) -> None:
    interrupt_at.add("r/2")
    with pytest.raises(Interrupt):
        stores.engine().run(CHAIN, 1, id="r")
    assert stores.engine().get("r").status is Status.RUNNING

    engine = stores.engine(fresh=True)
    run = engine.run(CHAIN, 1, id="r")
    assert (run.status, run.output) == (Status.COMPLETED, 21)
    # completed steps ran once; the interrupted one ran again with the same key, attempt 2
    assert runs == [("r/0", 1), ("r/1", 1), ("r/2", 1), ("r/2", 2), ("r/3", 1)]
    assert [(e.position, e.attempt) for e in engine.steps("r")] == [
        ("0", 1),
        ("1", 1),
        ("2", 2),
        ("3", 1),
    ]


def test_an_interrupted_fan_out_keeps_the_branches_that_finished(stores: Stores) -> None:
    interrupt_at.add("f/0.p1")
    with pytest.raises(Interrupt):
        stores.engine().run(FANOUT, 2, id="f")
    before = list(runs)
    run = stores.engine(fresh=True).run(FANOUT, 2, id="f")
    assert run.output == 3 + 6 + 3
    rerun = runs[len(before) :]
    # the interrupted branch runs again; a branch committed before the crash never does
    assert ("f/0.p1", 2) in rerun
    assert ("f/1", 1) in rerun
    assert len([k for k, _ in runs if k == "f/0.p1"]) == 2
    # the branch that finished before the interruption is not run again
    assert [k for k, _ in runs].count("f/0.p0") == 1


def test_recover_resumes_every_unfinished_instance_it_knows(stores: Stores) -> None:
    interrupt_at.update({"c1/1", "c2/0.p0"})
    engine = stores.engine()
    for wf, iid in ((CHAIN, "c1"), (FANOUT, "c2")):
        with pytest.raises(Interrupt):
            engine.run(wf, 1, id=iid)
    engine.run(CHAIN, 5, id="done")

    fresh = stores.engine(fresh=True)
    fresh.register(CHAIN, FANOUT)
    recovered = {r.id: r for r in fresh.recover()}
    assert set(recovered) == {"c1", "c2"}
    assert recovered["c1"].output == 21 and recovered["c2"].output == 2 + 3 + 2
    assert fresh.recover() == []


def test_recover_leaves_unregistered_workflows_alone(durable: Stores) -> None:
    interrupt_at.add("other/1")
    with pytest.raises(Interrupt):
        durable.engine().run(CHAIN, 1, id="other")
    fresh = durable.engine(fresh=True)
    fresh.register(FANOUT)
    assert fresh.recover() == []
    assert fresh.get("other").status is Status.RUNNING


def test_a_changed_definition_is_a_version_mismatch(durable: Stores) -> None:
    interrupt_at.add("v/1")
    with pytest.raises(Interrupt):
        durable.engine().run(CHAIN, 1, id="v")
    changed = Workflow("chain").then(add).then(add).then(triple)
    engine = durable.engine(fresh=True)
    with pytest.raises(VersionMismatch) as err:
        engine.run(changed, 1, id="v")
    message = str(err.value)
    assert CHAIN.plan_hash in message and changed.plan_hash in message and '"v"' in message
    with pytest.raises(VersionMismatch):
        engine.recover()
    assert engine.get("v").status is Status.RUNNING  # nothing ran on the old state
    engine.register(CHAIN)  # the old version registered beside the new one resumes it
    assert engine.run(changed, 1, id="v").output == 21


def test_several_versions_run_side_by_side(stores: Stores) -> None:
    engine = stores.engine()
    v1 = Workflow("ver", version="1").then(add)
    v2 = Workflow("ver", version="2").then(add).then(add)
    assert engine.run(v1, 1, id="one").output == 2
    assert engine.run(v2, 1, id="two").output == 3
    assert engine.get("one").plan_hash == v1.plan_hash
    assert engine.get("two").plan_hash == v2.plan_hash


def test_list_filters_and_orders_newest_first(stores: Stores) -> None:
    engine = stores.engine()
    for i in range(3):
        engine.run(CHAIN, i, id=f"c{i}")
        stores.clock.advance(1)
    interrupt_at.add("unfinished/0.p2")
    with pytest.raises(Interrupt):
        engine.run(FANOUT, 1, id="unfinished")

    @step
    def fail(ctx: Context, x: int) -> int:
        raise ValueError("no")

    engine.run(Workflow("bad").then(fail), 1, id="bad")
    assert [r.id for r in engine.list()] == ["bad", "unfinished", "c2", "c1", "c0"]
    assert [r.id for r in engine.list(status=Status.COMPLETED)] == ["c2", "c1", "c0"]
    assert [r.id for r in engine.list(status=[Status.FAILED, "running"])] == ["bad", "unfinished"]
    assert [r.id for r in engine.list(workflow="chain", limit=2)] == ["c2", "c1"]
    assert engine.list(workflow="nope") == []
    assert engine.list(status="completed")[0].output == ((2 + 1) * 3 + 1) * 3  # c2, decoded


def test_purge_deletes_old_finished_instances_only(stores: Stores) -> None:
    engine = stores.engine()
    engine.run(CHAIN, 1, id="old")
    interrupt_at.add("old-unfinished/1")
    with pytest.raises(Interrupt):
        engine.run(CHAIN, 1, id="old-unfinished")
    stores.clock.advance(timedelta(days=10).total_seconds())
    engine.run(CHAIN, 1, id="new")
    assert engine.purge(older_than=timedelta(days=7), status=Status.FAILED) == 0
    assert engine.purge(older_than=timedelta(days=7)) == 1
    with pytest.raises(UnknownInstance):
        engine.get("old")
    assert {r.id for r in engine.list()} == {"old-unfinished", "new"}


def test_delete(stores: Stores) -> None:
    engine = stores.engine()
    engine.run(CHAIN, 1, id="d")
    assert engine.delete("d") is True
    assert engine.delete("d") is False
    with pytest.raises(UnknownInstance):
        engine.history("d")


def test_unknown_ids_are_clear_errors(stores: Stores) -> None:
    engine = stores.engine()
    for call in (engine.get, engine.history, engine.resume):
        with pytest.raises(UnknownInstance, match=re.escape('"ghost"')):
            call("ghost")


def test_a_failed_instance_stays_failed(stores: Stores) -> None:
    @step
    def broken(ctx: Context, x: int) -> int:
        raise RuntimeError("disk full")

    stores.engine().run(Workflow("broken").then(add).then(broken), 1, id="x")
    fresh = stores.engine(fresh=True)
    got = fresh.get("x")
    assert got.status is Status.FAILED
    assert got.error is not None and "disk full" in str(got.error)
