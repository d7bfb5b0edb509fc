"""Engine level of the store contract: a stale writer is rejected, through the public API.

On every store whose data outlives an engine (`durable`): while engine A is inside a step, a
second engine B on the same store (another process) moves the same instance on; A's commit must
then be rejected and B's result must stand, and A, instead of raising, reloads the instance and
returns (or goes on from) what the store holds. (The store protocol itself is checked call by
call in `test_protocol_*.py`.) A new Python store joins by adding its factory to
`PYTHON_STORES` or `ASYNC_STORES` in conftest.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tideflow import (
    Context,
    Engine,
    Status,
    Workflow,
    step,
)

from .conftest import Stores


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
