"""What a run shows (issue 7, item 14): the history lists what happened between step attempts
(decisions, timers, signals, timeouts, cancellation, interrupted attempts), and a Run exposes its
input, its times and what a suspended instance waits for, read from the store."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tideflow import (
    CancelEvent,
    Context,
    DecisionEvent,
    Engine,
    HistoryEvent,
    InterruptedStep,
    InvalidArgument,
    Retry,
    Status,
    StepEvent,
    UnknownWorkflow,
    VirtualClock,
    WaitEvent,
    Waiting,
    Workflow,
    step,
)

START = 1704067200.0


@step
def dbl(ctx: Context, x: int) -> int:
    return x * 2


@step
def neg(ctx: Context, x: int) -> int:
    return -x


@step
def refund(ctx: Context, reason: str) -> str:
    return f"refunded: {reason}"


def big(x: int) -> bool:
    return x > 2


def kinds(events: list[HistoryEvent]) -> list[tuple[str, str]]:
    return [(e.kind, e.position) for e in events]


def test_decisions_timers_and_signals_are_in_the_history_in_order() -> None:
    clock = VirtualClock()
    engine = Engine(clock=clock)
    wf = (
        Workflow("h")
        .then(dbl)
        .branch(big, then=neg, otherwise=dbl)
        .loop(dbl, until=lambda x: abs(x) > 10, max_iterations=5)
        .wait_signal("go", timeout=100, type=int)
        .then(dbl)
    )
    assert engine.run(wf, 1, id="a").status is Status.SUSPENDED
    engine.signal("a", "go", 7)
    (run,) = engine.run_due()
    assert run.output == 14  # 1 -> 2 -> 4 -> 8 -> 16 (the loop ends), then the signal's 7 * 2
    events = run.history()
    assert kinds(events) == [
        ("step", "0"),
        ("branch", "1"),
        ("step", "1.f"),
        ("step", "2.i0"),
        ("loop", "2"),
        ("step", "2.i1"),
        ("loop", "2"),
        ("timer", "3"),
        ("signal", "3"),
        ("step", "4"),
    ]
    assert events[1] == DecisionEvent("branch", "1", False)
    assert events[4] == DecisionEvent("loop", "2", False, iteration=1)
    assert events[6] == DecisionEvent("loop", "2", True, iteration=2)
    assert events[7] == WaitEvent("timer", "3", until=START + 100)
    assert events[8] == WaitEvent("signal", "3", signal="go", seq=1)
    assert [e.step for e in run.steps()] == ["dbl", "dbl", "dbl", "dbl", "dbl"]
    assert all(isinstance(e, StepEvent) for e in engine.steps("a"))


def test_a_wait_that_times_out_and_a_router_are_in_the_history() -> None:
    clock = VirtualClock()
    engine = Engine(clock=clock)
    wf = (
        Workflow("r", start="grow")
        .state("grow", dbl, next=lambda n: "grow" if n < 5 else "ask")
        .state("ask", Workflow("ask").wait_signal("ok", timeout=10, on_timeout=neg))
    )
    engine.run(wf, 2, id="r")
    clock.advance(10)
    (run,) = engine.run_due()
    assert run.output == -8
    assert kinds(run.history()) == [
        ("step", "grow#0"),
        ("route", "grow#0"),
        ("step", "grow#1"),
        ("route", "grow#1"),
        ("timer", "ask#0.0"),  # (the sub-workflow is a sequence: its wait is its step 0)
        ("timed_out", "ask#0.0"),
        ("step", "ask#0.0.timeout"),
    ]
    assert run.history()[1] == DecisionEvent("route", "grow#0", "grow")
    assert run.history()[3] == DecisionEvent("route", "grow#1", "ask")


def test_a_cancellation_is_in_the_history_with_its_reason() -> None:
    engine = Engine(clock=VirtualClock())
    engine.run(Workflow("c").then(dbl).wait_signal("go").on_cancel(refund), 1, id="c")
    run = engine.cancel("c", "changed my mind")
    assert kinds(run.history()) == [("step", "0"), ("cancelled", ""), ("step", "cancel")]
    assert run.history()[1] == CancelEvent("changed my mind")


def test_a_failed_attempt_shows_when_its_retry_is_due() -> None:
    calls: list[int] = []

    @step(retry=Retry(max_attempts=2, initial_delay=5))
    def flaky(ctx: Context, x: int) -> int:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ConnectionError("down")
        return x

    engine = Engine(clock=VirtualClock())
    run = engine.run(Workflow("f").then(flaky), 1)
    first, second = run.history()
    assert isinstance(first, StepEvent) and isinstance(second, StepEvent)
    assert (first.status, first.error, first.retry_at) == (
        "failed",
        "ConnectionError: down",
        first.finished_at + 5,
    )
    assert (second.status, second.retry_at) == ("completed", None)


crash = {"armed": True}


@step
def dies_once(ctx: Context, x: int) -> int:
    if crash["armed"]:
        crash["armed"] = False
        raise KeyboardInterrupt  # stands for the process dying in the middle of the step
    return x + 1


def test_an_attempt_interrupted_by_a_crash_is_in_the_history(tmp_path: Path) -> None:
    url = f"sqlite:///{os.path.join(tmp_path, 'c.db')}"
    wf = Workflow("crash").then(dbl).then(dies_once)
    crash["armed"] = True
    with pytest.raises(KeyboardInterrupt):
        Engine(store=url).run(wf, 1, id="k")
    later = Engine(store=url)
    later.register(wf)
    assert later.history("k")[-1] == InterruptedStep("1", "dies_once", 1, retried=False)
    (run,) = later.recover()
    assert run.output == 3
    assert kinds(run.history()) == [("step", "0"), ("interrupted", "1"), ("step", "1")]
    assert run.history()[1] == InterruptedStep("1", "dies_once", 1, retried=True)
    assert [(e.step, e.attempt) for e in run.steps()] == [("dbl", 1), ("dies_once", 2)]


@step(retry=Retry(max_attempts=3, initial_delay=0))
def fails_then_dies(ctx: Context, x: int) -> int:
    if ctx.attempt == 1:
        raise ConnectionError("busy")
    raise KeyboardInterrupt  # the process dies in attempts 2 and 3


def test_a_poison_step_message_counts_attempts_not_only_interruptions(tmp_path: Path) -> None:
    """One ordinary failure, then two crashes: the message said "was interrupted 3 times"."""
    url = f"sqlite:///{os.path.join(tmp_path, 'p.db')}"
    wf = Workflow("poison").then(fails_then_dies)
    with pytest.raises(KeyboardInterrupt):
        Engine(store=url).run(wf, 1, id="p")  # attempt 1 fails, attempt 2 dies
    with pytest.raises(KeyboardInterrupt):
        Engine(store=url).run(wf, 1, id="p")  # attempt 3 dies
    run = Engine(store=url).run(wf, 1, id="p")
    assert run.status is Status.FAILED and run.error is not None
    assert run.error.error_type == "StepInterrupted" and run.error.attempts == 3
    assert str(run.error).startswith(
        "step 'fails_then_dies' failed after 3 attempts, the last interrupted: StepInterrupted:"
    ), str(run.error)


def test_a_run_exposes_its_input_times_and_what_it_waits_for() -> None:
    clock = VirtualClock()
    engine = Engine(clock=clock)
    wf = Workflow("w", timeout=1000).then(dbl).wait_signal("approval", timeout=60).then(dbl)
    run = engine.run(wf, 21, id="w")
    assert run.status is Status.SUSPENDED
    assert (run.input, run.created_at, run.updated_at, run.due_at) == (21, START, START, START + 60)
    assert run.waiting_for() == [
        Waiting("signal", "1", signal="approval", until=START + 60),
        Waiting("workflow_timeout", "", until=START + 1000),
    ]
    clock.advance(5)
    engine.signal("w", "approval", 1)
    stored = engine.get("w")
    assert (stored.input, stored.created_at, stored.due_at) == (21, START, START + 5)
    (done,) = engine.run_due()
    assert (done.status, done.updated_at, done.waiting_for()) == (
        Status.COMPLETED,
        START + 5,
        [],
    )
    assert engine.list()[0].input == 21


def test_a_retry_and_a_sleep_are_what_an_instance_waits_for() -> None:
    @step(retry=Retry(max_attempts=3, initial_delay=3600, max_delay=3600))
    def fails_once(ctx: Context, x: int) -> int:
        if ctx.attempt == 1:
            raise ConnectionError("down")
        return x

    class HeldClock:
        """A clock whose sleep blocks until the test has looked (no timing involved)."""

        def __init__(self) -> None:
            self.t = START
            self.sleeping = threading.Event()
            self.wake = threading.Event()

        def now(self) -> float:
            return self.t

        def sleep(self, seconds: float) -> None:
            self.sleeping.set()
            assert self.wake.wait(10)
            self.t += seconds

    clock = HeldClock()
    engine = Engine(clock=clock)
    sleeping = engine.run(Workflow("s").sleep(30).then(dbl), 1, id="s")
    assert sleeping.waiting_for() == [Waiting("sleep", "0", until=START + 30)]

    result: dict[str, object] = {}
    wf = Workflow("retrying").then(fails_once)
    runner = threading.Thread(target=lambda: result.update(run=engine.run(wf, 4, id="t")))
    runner.start()
    try:
        assert clock.sleeping.wait(10)  # the driver waits for the retry in its thread
        assert engine.waiting_for("t") == [
            Waiting("retry", "0", step="fails_once", until=START + 3600)
        ]
    finally:
        clock.wake.set()
        runner.join(10)
    assert engine.get("t").output == 4 and engine.waiting_for("t") == []


def test_waiting_for_names_each_sleep_of_a_map_and_a_parallel_by_its_own_position() -> None:
    """Sleeps due at the same time were all named after the first timer recorded with that due
    time: every item of a map that sleeps showed position 1.m0.0."""

    @step
    def upto(ctx: Context, n: int) -> list[int]:
        return list(range(n))

    clock = VirtualClock()
    engine = Engine(clock=clock)
    naps = Workflow("naps").then(upto).map(Workflow("nap").sleep(5).then(dbl), concurrency=3)
    run = engine.run(naps, 3, id="m")
    assert run.waiting_for() == [Waiting("sleep", f"1.m{i}.0", until=START + 5) for i in range(3)]
    both = Workflow("both").parallel(Workflow("l").sleep(5).then(dbl), Workflow("r").sleep(5))
    assert engine.run(both, 1, id="p").waiting_for() == [
        Waiting("sleep", "0.p0.0", until=START + 5),
        Waiting("sleep", "0.p1.0", until=START + 5),
    ]


def test_waiting_for_needs_the_workflow_registered(tmp_path: Path) -> None:
    url = f"sqlite:///{os.path.join(tmp_path, 'u.db')}"
    Engine(store=url).run(Workflow("u").wait_signal("go"), 1, id="u")
    stranger = Engine(store=url)
    with pytest.raises(UnknownWorkflow):
        stranger.waiting_for("u")
    assert stranger.get("u").input == 1  # the input and history need no plan
    assert kinds(stranger.history("u")) == []


def test_purge_with_a_negative_age_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match=r"purge\(older_than=\)"):
        Engine().purge(older_than=-1)
