"""Waiting, on every store: signals, durable sleep, timeouts, cancellation, run_due."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from tideflow import (
    Cancelled,
    Context,
    Retry,
    SignalError,
    Status,
    StepTimeout,
    UnknownInstance,
    Workflow,
    WorkflowFailed,
    step,
    wait_signal,
)

from .conftest import Stores

DAY = 86_400.0


@dataclass
class Decision:
    approved: bool
    by: str


seen: list[object] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    seen.clear()


@step
def submit(ctx: Context, amount: int) -> int:
    seen.append(("submit", amount))
    return amount


@step
def book(ctx: Context, decision: Decision) -> str:
    seen.append(("book", decision))
    return f"{'approved' if decision.approved else 'rejected'} by {decision.by}"


@step
def escalate(ctx: Context, amount: int) -> Decision:
    """The timeout path: its output stands in for the signal's payload."""
    seen.append(("escalate", amount))
    return Decision(approved=amount < 1000, by="escalation")


@step
def note(ctx: Context, value: object) -> object:
    seen.append(("note", value))
    return value


APPROVAL = (
    Workflow("approval")
    .then(submit)
    .wait_signal("decision", timeout=timedelta(days=3), type=Decision, on_timeout=escalate)
    .then(book)
)


def test_a_signal_after_the_wait_resumes_it(stores: Stores) -> None:
    engine = stores.engine()
    run = engine.run(APPROVAL, 500, id="a1")
    assert run.status is Status.SUSPENDED
    stores.clock.advance(DAY)
    fresh = stores.engine(fresh=True)
    fresh.register(APPROVAL)
    fresh.signal("a1", "decision", {"approved": True, "by": "ada"})
    assert fresh.get("a1").status is Status.SUSPENDED  # signal() runs no step in this thread
    assert [r.id for r in fresh.run_due()] == ["a1"]
    got = fresh.get("a1")
    assert (got.status, got.output) == (Status.COMPLETED, "approved by ada")
    assert seen == [("submit", 500), ("book", Decision(True, "ada"))]


def test_a_signal_sent_before_the_wait_is_kept_for_it(stores: Stores) -> None:
    @step
    def slow_submit(ctx: Context, amount: int) -> int:
        stores.engine().signal(ctx.instance_id, "decision", {"approved": False, "by": "bob"})
        return amount

    wf = Workflow("early").then(slow_submit).wait_signal("decision", type=Decision).then(book)
    assert stores.engine().run(wf, 1, id="e1").output == "rejected by bob"


def test_each_signal_is_consumed_once_in_order_of_arrival(stores: Stores) -> None:
    wf = (
        Workflow("three")
        .wait_signal("n")
        .then(note)
        .wait_signal("n")
        .then(note)
        .wait_signal("n")
        .then(note)
    )
    engine = stores.engine()
    assert engine.run(wf, None, id="s").status is Status.SUSPENDED
    for i in range(5):
        engine.signal("s", "n", i)
        engine.signal("s", "other", -i)
    engine.run_due()
    assert engine.get("s").output == 2
    assert seen == [("note", 0), ("note", 1), ("note", 2)]
    assert engine.run_due() == []  # nothing else is due; the extra signals stay unconsumed


def test_many_instances_many_signals(stores: Stores) -> None:
    wf = Workflow("many").wait_signal("go").then(note)
    engine = stores.engine()
    for i in range(30):
        engine.run(wf, None, id=f"m{i}")
    for i in reversed(range(30)):
        engine.signal(f"m{i}", "go", i * i)
    assert len(engine.run_due()) == 30
    outputs = sorted(r.output for r in engine.list(status=Status.COMPLETED))
    assert outputs == sorted(i * i for i in range(30))


def test_a_wait_timeout_takes_the_escalation_path(stores: Stores) -> None:
    engine = stores.engine()
    engine.run(APPROVAL, 900, id="t1")
    stores.clock.advance(3 * DAY - 1)
    assert engine.run_due() == []
    stores.clock.advance(1)
    (run,) = engine.run_due()
    assert (run.status, run.output) == (Status.COMPLETED, "approved by escalation")
    assert seen == [("submit", 900), ("escalate", 900), ("book", Decision(True, "escalation"))]
    with pytest.raises(SignalError, match="completed"):
        engine.signal("t1", "decision", {"approved": True, "by": "late"})


def test_a_wait_timeout_without_a_path_fails_with_step_timeout(stores: Stores) -> None:
    wf = Workflow("strict").wait_signal("ack", timeout=60).then(note)
    engine = stores.engine()
    engine.run(wf, 1, id="t2")
    stores.clock.advance(61)
    (run,) = engine.run_due()
    assert run.status is Status.FAILED
    assert isinstance(run.error, WorkflowFailed)
    assert run.error.error_type == "StepTimeout"
    assert "ack" in str(run.error)


def test_the_workflow_timeout_fails_a_waiting_instance(stores: Stores) -> None:
    wf = Workflow("bounded", timeout=timedelta(hours=1)).wait_signal("never").then(note)
    engine = stores.engine()
    engine.run(wf, 1, id="wt")
    stores.clock.advance(3600)
    (run,) = engine.run_due()
    assert run.status is Status.FAILED
    assert "timeout of 3600" in str(run.error)


def test_durable_sleep_survives_a_restart(stores: Stores) -> None:
    wf = Workflow("nap").then(submit).sleep(timedelta(days=2)).then(note)
    engine = stores.engine()
    run = engine.run(wf, 7, id="z")
    assert run.status is Status.SUSPENDED
    stores.clock.advance(DAY)
    fresh = stores.engine(fresh=True)
    fresh.register(wf)
    assert fresh.run_due() == []  # a restart honours the remaining time
    assert fresh.resume("z").status is Status.SUSPENDED
    stores.clock.advance(DAY)
    (run,) = fresh.run_due()
    assert (run.status, run.output) == (Status.COMPLETED, 7)
    assert seen == [("submit", 7), ("note", 7)]


def test_sleep_until_a_moment(stores: Stores) -> None:
    at = datetime.fromtimestamp(stores.clock.now() + 90, tz=timezone.utc)
    wf = Workflow("until").sleep_until(at).then(note)
    engine = stores.engine()
    assert engine.run(wf, "x", id="u").status is Status.SUSPENDED
    stores.clock.advance(89)
    assert engine.run_due() == []
    stores.clock.advance(1)
    assert engine.run_due()[0].output == "x"


def test_signals_to_unknown_or_finished_instances_raise(stores: Stores) -> None:
    engine = stores.engine()
    with pytest.raises(SignalError, match="ghost"):
        engine.signal("ghost", "x", 1)
    engine.run(Workflow("quick").then(note), 1, id="done")
    with pytest.raises(SignalError, match="completed"):
        engine.signal("done", "x", 1)
    assert not issubclass(SignalError, UnknownInstance)


def test_cancel_during_a_wait_runs_the_compensation(stores: Stores) -> None:
    undone: list[tuple[str, str]] = []

    @step
    def undo(ctx: Context, reason: str) -> str:
        undone.append((ctx.instance_id, reason))
        return "undone"

    wf = Workflow("undoable").then(submit).wait_signal("decision").then(note).on_cancel(undo)
    engine = stores.engine()
    engine.run(wf, 5, id="c1")
    again = stores.engine(fresh=True)
    again.register(wf)
    run = again.cancel("c1", "customer withdrew")
    assert run.status is Status.CANCELLED
    assert undone == [("c1", "customer withdrew")]
    with pytest.raises(SignalError, match="cancelled"):
        again.signal("c1", "decision", 1)
    assert again.cancel("c1").status is Status.CANCELLED  # idempotent
    assert undone == [("c1", "customer withdrew")]


def test_cancel_during_a_step_is_seen_through_the_context(stores: Stores) -> None:
    engine = stores.engine()
    observed: list[bool] = []

    @step
    def long_job(ctx: Context, x: int) -> int:
        engine.cancel(ctx.instance_id, "operator stop")  # e.g. from another thread
        observed.append(ctx.cancelled)
        ctx.check_cancelled()
        return x

    wf = Workflow("long").then(long_job).then(note)
    run = engine.run(wf, 1, id="c2")
    assert observed == [True]
    assert run.status is Status.CANCELLED
    assert ("note", 1) not in seen
    assert issubclass(Cancelled, BaseException) and not issubclass(Cancelled, Exception)


def test_run_async_continues_when_the_signal_arrives(stores: Stores) -> None:
    engine = stores.engine()

    async def main() -> tuple[Status, object]:
        task = asyncio.ensure_future(engine.run_async(APPROVAL, 10, id="as"))
        for _ in range(3):
            await asyncio.sleep(0)
        # a server store takes a few round trips (real time) to create it: signal it as soon
        # as it exists, before the driver's idle turns let the virtual clock jump
        deadline = time.monotonic() + 5
        while not any(r.id == "as" for r in engine.list()) and time.monotonic() < deadline:
            await asyncio.sleep(0)
        engine.signal("as", "decision", {"approved": True, "by": "eve"})
        run = await asyncio.wait_for(task, 5)
        return run.status, run.output

    assert asyncio.run(main()) == (Status.COMPLETED, "approved by eve")


def test_run_async_sleeps_until_timers_on_the_virtual_clock(stores: Stores) -> None:
    wf = Workflow("async-nap").sleep(timedelta(days=30)).then(note)
    start = stores.clock.now()
    run = asyncio.run(stores.engine().run_async(wf, 3, id="an"))
    assert (run.status, run.output) == (Status.COMPLETED, 3)
    assert stores.clock.now() - start == pytest.approx(30 * DAY)


def test_a_wait_can_be_an_explicit_state(stores: Stores) -> None:
    @step
    def route(ctx: Context, d: Decision) -> str:
        return "yes" if d.approved else "no"

    wf = (
        Workflow("sm", start="ask")
        .state("ask", wait_signal("decision", type=Decision), next="route")
        .state("route", route, next={"yes": "book_it", "no": "drop"})
        .state("book_it", note)
        .state("drop", note)
    )
    engine = stores.engine()
    engine.run(wf, None, id="sm")
    engine.signal("sm", "decision", {"approved": True, "by": "x"})
    assert engine.run_due()[0].output == "yes"


def test_step_timeouts_count_as_failures_the_retry_policy_sees(stores: Stores) -> None:
    attempts: list[int] = []

    @step(timeout=10, retry=Retry(max_attempts=3, initial_delay=1))
    def sluggish(ctx: Context, x: int) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            stores.clock.advance(11)  # this attempt "takes" 11 s: its result is discarded
        return x

    run = stores.engine().run(Workflow("slow").then(sluggish), 4, id="st")
    assert (run.status, run.output, attempts) == (Status.COMPLETED, 4, [1, 2, 3])
    errors = [e.error.split(":")[0] if e.error else None for e in stores.engine().steps("st")]
    assert errors == ["StepTimeout", "StepTimeout", None]


def test_an_async_step_past_its_timeout_is_cancelled(stores: Stores) -> None:
    @step(timeout=0.05)
    async def hangs(ctx: Context, x: int) -> int:
        await asyncio.sleep(30)
        return x

    run = asyncio.run(stores.engine().run_async(Workflow("hang").then(hangs), 1, id="h"))
    assert run.status is Status.FAILED
    assert isinstance(run.error, WorkflowFailed) and run.error.error_type == "StepTimeout"
    assert issubclass(StepTimeout, Exception)
