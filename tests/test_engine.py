"""Engine behaviour: idempotent start by id, get(), statuses, errors naming what went wrong."""

from __future__ import annotations

import asyncio

import pytest

import tideflow
from tideflow import (
    CodecError,
    Context,
    Engine,
    Status,
    TideflowError,
    UnknownInstance,
    VirtualClock,
    Workflow,
    WorkflowFailed,
    step,
)

from .conftest import Runner

calls: list[str] = []


@step
def record(ctx: Context, x: int) -> int:
    calls.append(ctx.idempotency_key)
    return x + 1


@step
def boom(ctx: Context, x: int) -> int:
    raise ValueError(f"bad value {x}")


def test_status_is_an_enum_of_lowercase_names() -> None:
    assert [s.value for s in Status] == [
        "pending",
        "running",
        "suspended",
        "completed",
        "failed",
        "cancelled",
    ]
    assert Status("completed") is Status.COMPLETED


def test_running_a_completed_id_returns_the_stored_run_and_runs_nothing(run: Runner) -> None:
    calls.clear()
    wf = Workflow("w").then(record).then(record)
    first = run(wf, 1, id="order-42")
    again = run(wf, 100, id="order-42")
    assert first.output == again.output == 3
    assert again.status is Status.COMPLETED
    assert calls == ["order-42/0", "order-42/1"]


def test_running_a_failed_id_returns_the_stored_failure(run: Runner) -> None:
    wf = Workflow("w").then(boom)
    first = run(wf, 1, id="f-1")
    again = run(wf, 2, id="f-1")
    assert first.status is again.status is Status.FAILED
    assert str(first.error) == str(again.error)
    assert "bad value 1" in str(again.error)


def test_get_returns_the_stored_state(engine: Engine) -> None:
    wf = Workflow("w").then(record)
    engine.run(wf, 5, id="g")
    got = engine.get("g")
    assert (got.id, got.workflow, got.status, got.output) == ("g", "w", Status.COMPLETED, 6)
    assert got.plan_hash == wf.plan_hash


def test_get_of_an_unknown_id_raises(engine: Engine) -> None:
    with pytest.raises(UnknownInstance, match=r'no workflow instance with id "nope"'):
        engine.get("nope")
    assert issubclass(UnknownInstance, TideflowError)


def test_generated_ids_are_unique(engine: Engine) -> None:
    wf = Workflow("w").then(record)
    ids = {engine.run(wf, 1).id for _ in range(50)}
    assert len(ids) == 50


@pytest.mark.parametrize("bad", ["", 3, None])
def test_bad_ids_are_rejected(engine: Engine, bad: object) -> None:
    if bad is None:
        return  # None means "generate one"
    with pytest.raises(TideflowError, match="id"):
        engine.run(Workflow("w").then(record), 1, id=bad)  # type: ignore[arg-type]


def test_failed_run_error_names_step_attempts_type_and_message(run: Runner) -> None:
    r = run(Workflow("w").then(record).then(boom), 1)
    assert r.status is Status.FAILED
    assert r.output is None
    err = r.error
    assert isinstance(err, WorkflowFailed)
    assert str(err) == "step 'boom' failed after 1 attempt: ValueError: bad value 2"
    assert (err.step, err.attempts, err.error_type, err.error_message) == (
        "boom",
        1,
        "ValueError",
        "bad value 2",
    )
    assert "raise ValueError" in err.traceback
    with pytest.raises(WorkflowFailed):
        r.result()


def test_unencodable_output_fails_naming_the_step_and_the_type(run: Runner) -> None:
    class Opaque:
        pass

    @step
    def leak(ctx: Context, x: int):  # type: ignore[no-untyped-def]
        return Opaque()

    r = run(Workflow("w").then(leak), 1)
    assert r.status is Status.FAILED
    assert isinstance(r.error, WorkflowFailed)
    assert r.error.step == "leak"
    assert r.error.error_type == "CodecError"
    assert "Opaque" in str(r.error) and "leak" in str(r.error)


def test_unencodable_input_raises_before_anything_runs(engine: Engine) -> None:
    calls.clear()
    with pytest.raises(CodecError, match="input"):
        engine.run(Workflow("w").then(record), object())
    assert calls == []


def test_a_failing_condition_fails_the_instance(run: Runner) -> None:
    def cond(x: int) -> bool:
        raise KeyError("no such field")

    r = run(Workflow("w").then(record).branch(cond, then=record), 1)
    assert r.status is Status.FAILED
    assert "KeyError" in str(r.error) and "no such field" in str(r.error)


def test_base_exceptions_are_not_step_failures(engine: Engine) -> None:
    @step
    def interrupt(ctx: Context, x: int) -> int:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.run(Workflow("w").then(interrupt), 1)


def test_sync_run_inside_an_event_loop_with_async_steps_says_what_to_do(engine: Engine) -> None:
    @step
    async def later(ctx: Context, x: int) -> int:
        return x

    async def main() -> None:
        with pytest.raises(TideflowError, match="run_async"):
            engine.run(Workflow("w").then(later), 1)

    asyncio.run(main())


def test_public_names() -> None:
    for name in [
        "Engine",
        "Workflow",
        "step",
        "Retry",
        "Context",
        "Status",
        "TideflowError",
        "DefinitionError",
        "WorkflowFailed",
        "VirtualClock",
        "Run",
    ]:
        assert name in tideflow.__all__
        assert getattr(tideflow, name) is not None


def test_public_classes_name_the_module_that_holds_them() -> None:
    # what repr(), tracebacks and documentation tools show: the module and qualname find the class
    import importlib

    from tideflow import _core

    public = [getattr(tideflow, n) for n in tideflow.__all__]
    for cls in [c for c in public if isinstance(c, type)]:
        assert getattr(importlib.import_module(cls.__module__), cls.__qualname__) is cls, cls
    # the extension's classes, re-exported or not, are tideflow._core's (as in _core.pyi)
    native = [c for c in vars(_core).values() if isinstance(c, type) and c.__module__ != "builtins"]
    native = [c for c in native if not issubclass(c, BaseException)]
    assert {tideflow.Context, tideflow.VirtualClock} <= set(native)
    assert sorted(c.__name__ for c in native if c.__module__ != "tideflow._core") == []
    assert repr(tideflow.Context) == "<class 'tideflow._core.Context'>"
    assert repr(tideflow.VirtualClock) == "<class 'tideflow._core.VirtualClock'>"


def test_import_does_not_pull_heavy_modules() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tideflow\n"
        "bad = [m for m in ('asyncio', 'pydantic', 'asyncpg', 'redis', 'pymongo', 'msgspec') "
        "if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_failure_in_a_wave_stops_the_wave_under_both_drivers(run: Runner) -> None:
    ran: list[str] = []

    @step
    def bad(ctx: Context, x: int) -> int:
        raise ValueError("no")

    @step
    def side_effect(ctx: Context, x: int) -> int:
        ran.append(ctx.instance_id)
        return x

    r = run(Workflow("w").parallel(bad, side_effect), 1)
    assert r.status is Status.FAILED
    assert ran == []


def test_routing_errors_name_their_position(run: Runner) -> None:
    @step
    def label(ctx: Context, x: int) -> str:
        return "nope"

    wf = Workflow("s", start="a").state("a", label, next={"yes": "b"}).state("b", record)
    r = run(wf, 1, id="pos")
    assert "at position 'a#0'" in str(r.error)

    def cond(x: int) -> bool:
        raise KeyError("field")

    r = run(Workflow("w").loop(record, until=cond, max_iterations=3), 1, id="lp")
    assert "position '0 (loop check after iteration 1)'" in str(r.error)


def test_each_branch_of_a_wave_is_timed_on_its_own(clock: VirtualClock, engine: Engine) -> None:
    @step
    def a(ctx: Context, x: int) -> int:
        clock.advance(5)
        return 1

    @step
    def b(ctx: Context, x: int) -> int:
        clock.advance(7)
        return 2

    engine.run(Workflow("w").parallel(a, b), 0, id="t")
    durations = [(e.position, e.duration) for e in engine.history("t")]
    assert durations == [("0.p0", 5.0), ("0.p1", 7.0)]
