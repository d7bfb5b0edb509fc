"""Resuming an instance after time has passed (issue 7, items 1, 4 and 6): a durable sleep that
ended is never waited for again, so nothing recorded after it is lost or repeated; an instance is
due only when something can move; a driver that loses a race to another writer returns what the
store holds instead of raising.

Every shape runs on memory and on SQLite, and is resumed both by the synchronous driver (``run``
then ``run_due`` at each timer) and by ``run_async`` (which, stopped while it waits, leaves
records that a later ``run_due`` must replay)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tideflow import Context, Engine, Run, Status, VirtualClock, Workflow, step

calls: list[tuple[str, int]] = []  # (idempotency key, attempt) of every step execution


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    calls.clear()
    yield


@step
def inc(ctx: Context, n: int) -> int:
    calls.append((ctx.idempotency_key, ctx.attempt))
    return n + 1


@step
def add(ctx: Context, n: int) -> int:
    calls.append((ctx.idempotency_key, ctx.attempt))
    return n + 100


@step
def take(ctx: Context, payload: int) -> int:
    calls.append((ctx.idempotency_key, ctx.attempt))
    return payload


@step
def escalate(ctx: Context, n: int) -> int:
    calls.append((ctx.idempotency_key, ctx.attempt))
    return n + 1000


class Env:
    """An engine on a virtual clock over one store; `fresh()` stands for a restarted process."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind, self.tmp = kind, tmp
        self.clock = VirtualClock()
        self.engine = self._make()

    def _make(self) -> Engine:
        if self.kind == "memory":
            return Engine(clock=self.clock)
        return Engine(store=f"sqlite:///{self.tmp / 'r.db'}", clock=self.clock)

    def fresh(self, *wfs: Workflow) -> Engine:
        if self.kind == "sqlite":
            self.engine = self._make()
            self.engine.register(*wfs)
        return self.engine


@pytest.fixture(params=["memory", "sqlite"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Env:
    return Env(request.param, tmp_path)


def run_through_due(env: Env, wf: Workflow, value: Any, iid: str, tick: float) -> Run:
    """Runs `wf`, then moves the clock on by `tick` and calls `run_due` until it finishes."""
    run = env.engine.run(wf, value, id=iid)
    for _ in range(50):
        if run.status.finished:
            return run
        env.clock.advance(tick)
        env.fresh(wf).run_due()
        run = env.engine.get(iid)
    return run


def shapes() -> list[tuple[str, Callable[[], Workflow], list[tuple[str, Any]], Any]]:
    """(name, workflow, signals sent up front, expected output) of each shape the issue lists."""
    return [
        (
            "sleep-step-sleep-step",
            lambda: Workflow("ssss").sleep(1).then(inc).sleep(1).then(inc),
            [],
            2,
        ),
        (
            "step-sleep-sleep-step",
            lambda: Workflow("sss2").then(inc).sleep(1).sleep(2).then(inc),
            [],
            2,
        ),
        (
            "sleep-step-wait-step",
            lambda: Workflow("sws").sleep(1).then(inc).wait_signal("go", type=int).then(take),
            [("go", 7)],
            7,
        ),
        (
            "sleep-step-wait-timeout-step",
            lambda: (
                Workflow("swt")
                .sleep(1)
                .then(inc)
                .wait_signal("never", timeout=3, type=int, on_timeout=escalate)
                .then(inc)
            ),
            [],
            1002,
        ),
        (
            "loop-with-a-sleeping-body",
            lambda: Workflow("loop").loop(
                Workflow("body").then(inc).sleep(1), until=lambda n: n >= 3, max_iterations=5
            ),
            [],
            3,
        ),
        (
            "two-signals-after-sleeps",
            lambda: (
                Workflow("sig")
                .sleep(1)
                .wait_signal("go", type=int)
                .then(take)
                .sleep(1)
                .wait_signal("go", type=int)
                .then(add)
            ),
            [("go", 1), ("go", 2)],
            102,
        ),
    ]


SHAPES = shapes()
IDS = [s[0] for s in SHAPES]


@pytest.mark.parametrize(("name", "make", "signals", "expected"), SHAPES, ids=IDS)
def test_each_shape_resumed_by_run_due_at_every_timer_runs_each_step_once(
    env: Env, name: str, make: Callable[[], Workflow], signals: list[tuple[str, Any]], expected: Any
) -> None:
    wf = make()
    env.engine.run(wf, 0, id="x")
    for sig, payload in signals:
        env.engine.signal("x", sig, payload)
    run = run_through_due(env, wf, 0, "x", 1)
    assert (run.status, run.output) == (Status.COMPLETED, expected)
    assert all(attempt == 1 for _, attempt in calls), calls
    assert len(calls) == len(set(calls)), f"a step ran twice: {calls}"
    completed = [e.position for e in env.engine.steps("x") if e.status == "completed"]
    assert len(completed) == len(set(completed)), completed


def test_a_step_after_a_sleep_is_not_run_again_when_the_signal_arrives(env: Env) -> None:
    """`sleep(60).then(a).wait_signal("go").then(b)`: `a` runs once, also on the resume that
    delivers "go"."""
    wf = Workflow("go").sleep(60).then(inc).wait_signal("go", type=int).then(take)
    env.engine.run(wf, 0, id="g")
    env.clock.advance(60)
    assert env.fresh(wf).run_due()[0].status is Status.SUSPENDED
    env.engine.signal("g", "go", 5)
    [run] = env.fresh(wf).run_due()
    assert (run.status, run.output) == (Status.COMPLETED, 5)
    assert calls == [("g/1", 1), ("g/3", 1)]


def test_a_state_machine_cycling_through_a_sleeping_state_runs_each_visit_once(env: Env) -> None:
    wf = (
        Workflow("cycle", start="nap")
        .state("nap", Workflow("nap").sleep(1).then(inc), "check")
        .state("check", inc, lambda n: "done" if n >= 6 else "nap")
        .state("done", inc)
    )
    run = run_through_due(env, wf, 0, "c", 1)
    assert (run.status, run.output) == (Status.COMPLETED, 7)
    assert len(calls) == len(set(calls)) == 7 and all(a == 1 for _, a in calls), calls


@pytest.mark.parametrize(("name", "make", "signals", "expected"), SHAPES, ids=IDS)
def test_each_shape_stopped_under_run_async_and_resumed_by_run_due(
    env: Env, name: str, make: Callable[[], Workflow], signals: list[tuple[str, Any]], expected: Any
) -> None:
    """run_async sleeps in-process; stopped while it waits (the process going away), what it
    recorded must let a later run_due go on without repeating anything."""
    wf = make().wait_signal("resume", type=int).then(add)

    async def until_waiting_for_resume() -> None:
        task = asyncio.ensure_future(env.engine.run_async(wf, 0, id="a"))
        for _ in range(2000):  # the driver jumps the virtual clock past each timer in turn
            await asyncio.sleep(0)
        assert not task.done()  # waiting for "resume", which no one sent yet
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    env.engine.run(wf, 0, id="a")  # suspends at the first timer or wait
    for sig, payload in signals:
        env.engine.signal("a", sig, payload)
    env.clock.advance(1)
    asyncio.run(until_waiting_for_resume())
    before = list(calls)
    env.engine.signal("a", "resume", expected)
    run = run_through_due(env, wf, 0, "a", 1)
    assert (run.status, run.output) == (Status.COMPLETED, expected + 100)
    assert len(calls) == len(before) + 1  # only the last step ran
    assert len(calls) == len(set(calls)) and all(a == 1 for _, a in calls), calls


def test_a_signal_during_a_sleep_does_not_keep_the_instance_due(env: Env) -> None:
    """`sleep(3600).wait_signal("ok")` with an early signal: one resume notices the signal and
    moves nothing; the instance is then due when the sleep ends, not before."""
    wf = Workflow("early").sleep(3600).wait_signal("ok", type=int).then(take)
    assert env.engine.run(wf, 0, id="e").status is Status.SUSPENDED
    env.engine.signal("e", "ok", 5)
    assert [r.status for r in env.fresh(wf).run_due()] == [Status.SUSPENDED]
    assert env.fresh(wf).run_due() == []  # it used to come back here on every call
    assert env.engine.run_due() == []
    env.clock.advance(3599)
    assert env.fresh(wf).run_due() == []
    env.clock.advance(1)
    [run] = env.fresh(wf).run_due()
    assert (run.status, run.output) == (Status.COMPLETED, 5)
    assert calls == [("e/2", 1)]


@pytest.mark.parametrize("signaller", ["a", "b"])
def test_run_async_that_lost_the_race_returns_what_the_winner_stored(
    tmp_path: Path, signaller: str
) -> None:
    """Engine A awaits run_async on an instance waiting (without a timeout) for a signal; engine
    B (another process on the same SQLite file) delivers it with run_due and completes the
    instance before A looks again. A's commit is rejected as stale, or A, reading the shared
    store while it waits, finds the instance advanced; either way A reloads and returns the
    completed run.

    ``signaller`` sends the signal: A (its wake-up is queued on this loop, not run yet) or B
    (nothing wakes A in this process: it must not wait forever)."""
    clock = VirtualClock()
    url = f"sqlite:///{tmp_path / 'race.db'}"
    wf = Workflow("race").then(inc).wait_signal("go", type=int).then(take)
    a, b = Engine(store=url, clock=clock), Engine(store=url, clock=clock)
    b.register(wf)

    async def main() -> Run:
        task = asyncio.ensure_future(a.run_async(wf, 0, id="r"))
        for _ in range(100):
            await asyncio.sleep(0)
        assert a.get("r").status is Status.SUSPENDED and not task.done()
        (a if signaller == "a" else b).signal("r", "go", 9)  # persisted
        [won] = b.run_due()  # meanwhile B takes the signal and finishes the instance
        assert (won.status, won.output) == (Status.COMPLETED, 9)
        return await asyncio.wait_for(task, 60)  # a bound on a hang, not a timing

    run = asyncio.run(main())
    assert (run.status, run.output) == (Status.COMPLETED, 9)
    assert calls == [("r/0", 1), ("r/2", 1)]  # B ran the last step; A ran nothing more
    assert [e.position for e in a.steps("r")] == ["0", "2"]


def test_sync_driver_that_lost_the_race_goes_on_from_what_is_stored(tmp_path: Path) -> None:
    """Engine A resumes an instance; inside its step, engine B resumes the same instance and
    moves it on to a sleep. A's commit is rejected; A reloads and reports the stored state."""
    clock = VirtualClock()
    url = f"sqlite:///{tmp_path / 'race.db'}"
    b = Engine(store=url, clock=clock)
    raced: list[Run] = []
    entered: list[int] = []

    @step
    def contested(ctx: Context, n: int) -> int:
        calls.append((ctx.idempotency_key, ctx.attempt))
        if not entered:
            entered.append(ctx.attempt)  # B runs this step too: only the first call races
            raced.append(b.resume(ctx.instance_id))
        return n + 1

    wf = Workflow("sync-race").sleep(1).then(contested).sleep(5).then(inc)
    b.register(wf)
    a = Engine(store=url, clock=clock)
    a.run(wf, 0, id="s")
    clock.advance(1)
    [run] = a.run_due()
    assert raced[0].status is Status.SUSPENDED
    assert run.status is Status.SUSPENDED  # as B left it: sleeping, not an error
    clock.advance(5)
    [done] = a.run_due()
    assert (done.status, done.output) == (Status.COMPLETED, 2)
    assert [(e.position, e.attempt) for e in a.steps("s")] == [("1", 2), ("3", 1)]
