"""Cancellation and deadlines on every store: a cancel that comes in time always wins, it is
persisted before anything else, a bad signal fails only its own instance, and the workflow's
timeout holds while a step runs."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tideflow import (
    Cancelled,
    CodecError,
    Context,
    Engine,
    SignalError,
    Status,
    StepTimeout,
    TideflowError,
    Workflow,
    step,
)

from .conftest import Stores


class Interrupt(BaseException):
    """Stands for the process dying mid-step: not a step failure, the instance stays as committed."""


compensated: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    compensated.clear()


@step
def undo(ctx: Context, reason: str) -> str:
    compensated.append(reason)
    return f"undone: {reason}"


def _cancelling(engine: Engine, then_check: bool) -> Any:
    """A step (sync) that cancels its own instance, then stops cooperatively or returns anyway."""

    @step(name="cancel_self")
    def cancel_self(ctx: Context, x: int) -> int:
        engine.cancel(ctx.instance_id, "customer asked")
        assert ctx.cancelled
        if then_check:
            ctx.check_cancelled()
        return x + 1

    return cancel_self


@pytest.mark.parametrize("then_check", [True, False], ids=["stops", "returns-anyway"])
@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_cancel_during_a_step_wins_and_runs_the_compensation(
    stores: Stores, driver: str, then_check: bool
) -> None:
    engine = stores.engine()
    wf = Workflow("c").then(_cancelling(engine, then_check)).on_cancel(undo)
    if driver == "sync":
        run = engine.run(wf, 1, id="c1")
    else:
        run = asyncio.run(engine.run_async(wf, 1, id="c1"))
    assert run.status is Status.CANCELLED
    assert compensated == ["customer asked"]
    assert stores.engine(fresh=True).get("c1").status is Status.CANCELLED


def test_an_async_step_that_checks_for_cancellation_under_run_async(stores: Stores) -> None:
    engine = stores.engine()

    @step
    async def cancel_then_check(ctx: Context, x: int) -> int:
        engine.cancel(ctx.instance_id, "stop")
        await asyncio.sleep(0)
        ctx.check_cancelled()
        return x

    wf = Workflow("ca").then(cancel_then_check).on_cancel(undo)
    run = asyncio.run(engine.run_async(wf, 1, id="a1"))
    assert run.status is Status.CANCELLED
    assert compensated == ["stop"]


def test_cancel_from_another_thread_during_a_step(stores: Stores) -> None:
    engine = stores.engine()
    started, release = threading.Event(), threading.Event()

    @step
    def slow(ctx: Context, x: int) -> int:
        started.set()
        assert release.wait(10)
        return x + 1

    wf = Workflow("t").then(slow).then(slow).on_cancel(undo)
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(run=engine.run(wf, 1, id="t1")))
    runner.start()
    assert started.wait(10)
    now = engine.cancel("t1", "from elsewhere")
    # the driver in this process finishes the cancellation: the instance is not finished yet
    assert now.status is Status.RUNNING
    release.set()
    runner.join(10)
    assert result["run"].status is Status.CANCELLED
    assert compensated == ["from elsewhere"]
    assert [e.position for e in engine.steps("t1")] == ["cancel"]  # the discarded step is not


def test_a_cancel_is_persisted_before_the_driver_applies_it(durable: Stores) -> None:
    engine = durable.engine()

    @step(name="cancel_and_die")
    def cancel_and_die(ctx: Context, x: int) -> int:
        engine.cancel(ctx.instance_id, "before the crash")
        raise Interrupt  # the process dies before its driver reaches the next step boundary

    wf = Workflow("p").then(cancel_and_die).on_cancel(undo)
    with pytest.raises(Interrupt):
        engine.run(wf, 1, id="p1")
    fresh = durable.engine(fresh=True)
    fresh.register(wf)
    assert fresh.get("p1").status is Status.RUNNING
    (run,) = fresh.recover()
    assert run.status is Status.CANCELLED
    assert compensated == ["before the crash"]


def test_signal_names_starting_with_a_bang_are_reserved(stores: Stores) -> None:
    engine = stores.engine()
    engine.run(Workflow("w").wait_signal("go"), None, id="w1")
    with pytest.raises(TideflowError, match="reserved"):
        engine.signal("w1", "!cancel", "sneaky")
    assert engine.get("w1").status is Status.SUSPENDED


def test_a_signal_that_does_not_decode_is_refused_by_an_engine_that_knows_the_wait(
    stores: Stores,
) -> None:
    engine = stores.engine()
    wf = Workflow("typed").wait_signal("amount", type=int)
    engine.run(wf, None, id="bad")
    engine.run(wf, None, id="good")
    with pytest.raises(SignalError, match=r"amount.*expected int"):
        engine.signal("bad", "amount", "not a number")  # stored nothing
    engine.signal("good", "amount", 42)
    runs = {r.id: r for r in engine.run_due()}
    assert list(runs) == ["good"] and runs["good"].output == 42
    assert engine.get("bad").status is Status.SUSPENDED
    engine.signal("bad", "amount", 7)
    assert [r.output for r in engine.run_due()] == [7]


def test_a_signal_that_does_not_decode_is_rejected_and_the_wait_goes_on(durable: Stores) -> None:
    wf = Workflow("typed").wait_signal("amount", type=int)
    durable.engine().run(wf, None, id="w")
    sender = durable.engine(fresh=True)  # has not registered "typed": cannot check the payload
    sender.signal("w", "amount", "not a number")
    engine = durable.engine(fresh=True)
    engine.register(wf)
    assert [r.status for r in engine.run_due()] == [Status.SUSPENDED]  # rejected, still waiting
    assert engine.run_due() == []  # and not due again for it
    again = durable.engine(fresh=True)  # after a restart the rejected signal is not offered again
    again.register(wf)
    sender.signal("w", "amount", 42)
    assert [(r.status, r.output) for r in again.run_due()] == [(Status.COMPLETED, 42)]


def test_a_step_finishing_past_the_workflow_timeout_fails_the_workflow(stores: Stores) -> None:
    engine = stores.engine()
    clock = stores.clock

    @step
    def slow(ctx: Context, x: int) -> int:
        clock.advance(100)
        return x + 1

    for wf in (
        Workflow("one", timeout=10).then(slow),
        Workflow("two", timeout=10).then(slow).then(slow),
    ):
        run = engine.run(wf, 1)
        assert run.status is Status.FAILED, wf.name
        assert run.error is not None and "timeout of 10" in str(run.error)
        # the late attempt is recorded: it ran and finished
        assert [e.status for e in engine.steps(run.id)] == ["completed"]


def test_a_workflow_timeout_cancels_an_async_step_that_runs_past_it() -> None:
    engine = Engine()  # a real clock: asyncio measures the step's time

    @step
    async def forever(ctx: Context, x: int) -> int:
        await asyncio.sleep(60)
        return x

    wf = Workflow("bounded", timeout=0.2).then(forever)
    run = asyncio.run(engine.run_async(wf, 1))
    assert run.status is Status.FAILED
    assert run.error is not None and "timeout of 0.2" in str(run.error)
    run = engine.run(Workflow("bounded-sync", timeout=0.2).then(forever), 1)
    assert run.status is Status.FAILED


def test_recover_goes_on_past_an_instance_it_cannot_resume(durable: Stores) -> None:
    @step
    def stop(ctx: Context, x: int) -> int:
        if ctx.attempt == 1:
            raise Interrupt
        return x + 1

    @step
    def as_int(ctx: Context, x: int) -> int:
        return x

    first = durable.engine()
    wf = Workflow("r").then(as_int).then(stop)
    for iid in ("r1", "r2"):
        with pytest.raises(Interrupt):
            first.run(wf, 1, id=iid)

    @step(name="as_int")
    def changed(ctx: Context, x: int) -> str:  # the same plan; the stored int no longer decodes
        return str(x)

    @step(name="stop")
    def stop_str(ctx: Context, x: str) -> str:
        return x

    fresh = durable.engine(fresh=True)
    fresh.register(Workflow("r").then(changed).then(stop_str))
    with pytest.raises(CodecError) as err:
        fresh.recover()
    failures: dict[str, Exception] = err.value.failures  # type: ignore[attr-defined]
    assert set(failures) == {"r1", "r2"}
    assert err.value.runs == []  # type: ignore[attr-defined]
    # listing still shows both, each with its problem
    listed = {r.id: r for r in fresh.list()}
    assert set(listed) >= {"r1", "r2"}


def test_a_timed_out_async_wave_step_is_a_timeout_not_a_cancellation(stores: Stores) -> None:
    engine = stores.engine()

    @step(timeout=0.05)
    async def hang(ctx: Context, x: int) -> int:
        await asyncio.sleep(30)
        return x

    @step
    async def quick(ctx: Context, x: int) -> int:
        return x

    run = asyncio.run(engine.run_async(Workflow("wave").parallel(hang, quick), 1))
    assert run.status is Status.FAILED
    assert run.error is not None and run.error.error_type == StepTimeout.__name__  # type: ignore[attr-defined]
    assert not isinstance(run.error, Cancelled)
