"""Targeted tests of semantics the random plans of tests/test_reference.py rarely pin down.

Each runs under both drivers (``engine.run`` and ``engine.run_async``) on a virtual clock.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tideflow import (
    Context,
    Engine,
    InvalidTransition,
    Retry,
    Run,
    Status,
    VirtualClock,
    Workflow,
    WorkflowFailed,
    step,
)

from .reference_interpreter import (
    Boom,
    num,
)
from .reference_plans import (
    START,
)

Runner = Callable[[Workflow, Any, str], tuple[Run, float]]


@pytest.fixture(params=["sync", "async"])
def drive(request: pytest.FixtureRequest) -> Runner:
    """Runs a workflow on a fresh engine and virtual clock; returns the run and the time spent."""

    def go(wf: Workflow, value: Any, iid: str) -> tuple[Run, float]:
        clock = VirtualClock(START)
        engine = Engine(clock=clock)
        if request.param == "sync":
            r = engine.run(wf, value, id=iid)
        else:
            r = asyncio.run(engine.run_async(wf, value, id=iid))
        return r, clock.now() - START

    return go


def test_idempotency_keys_are_unique_per_position_and_iteration_and_stable_across_retries(
    drive: Runner,
) -> None:
    seen: list[tuple[str, int, str]] = []

    @step(retry=Retry(max_attempts=3, initial_delay=1.0, multiplier=2.0, jitter=0.0))
    def flaky(ctx: Context, x: Any) -> int:
        seen.append((ctx.position, ctx.attempt, ctx.idempotency_key))
        if ctx.attempt == 1:
            raise Boom(ctx.position)
        return num(x) + 1

    @step
    async def spread(ctx: Context, x: Any) -> list[Any]:
        seen.append((ctx.position, ctx.attempt, ctx.idempotency_key))
        return [x, x]

    wf = (
        Workflow("keys")
        .then(flaky)
        .loop(flaky, until=lambda v: num(v) >= 4, max_iterations=5)
        .parallel(flaky, flaky)
        .then(spread)
        .map(flaky, concurrency=1)
    )
    run, elapsed = drive(wf, 0, "inst")
    assert run.status is Status.COMPLETED, run.error
    assert run.output == [11, 11]  # 0 -> 1 -> 2, 3, 4 -> (5, 5) -> [(5, 5), (5, 5)] -> [11, 11]
    positions = ["0", "1.i0", "1.i1", "1.i2", "2.p0", "2.p1", "4.m0", "4.m1"]
    keys = {p: {k for q, _, k in seen if q == p} for p in positions}
    assert sorted({q for q, _, _ in seen}) == sorted([*positions, "3"])
    for p in positions:
        assert sorted(a for q, a, _ in seen if q == p) == [1, 2]
        assert keys[p] == {f"inst/{p}"}  # the same key on every attempt
    assert len({k for ks in keys.values() for k in ks}) == len(positions)
    # every retry waits 1s; the parallel branches wait together, map items (concurrency 1) do not
    assert elapsed == 1 + 3 + 1 + 2


def test_a_failing_parallel_branch_fails_the_run_and_names_the_step(drive: Runner) -> None:
    ran: list[str] = []

    @step
    def inc(ctx: Context, x: int) -> int:
        ran.append(ctx.position)
        return x + 1

    @step(retry=Retry(max_attempts=2, initial_delay=0.5, jitter=0.0))
    async def bad(ctx: Context, x: int) -> int:
        ran.append(ctx.position)
        raise ValueError(f"bad input {x}")

    @step
    def after(ctx: Context, xs: Any) -> int:
        ran.append(ctx.position)
        return num(xs)

    inner = Workflow("inner").then(inc).parallel(inc, bad)
    wf = Workflow("par-fail").then(inc).parallel(inc, inner).then(after)
    run, elapsed = drive(wf, 1, "pf")
    assert run.status is Status.FAILED
    err = run.error
    assert isinstance(err, WorkflowFailed)
    assert not isinstance(err, InvalidTransition)
    assert (err.step, err.attempts, err.error_type) == ("bad", 2, "ValueError")
    assert err.error_message == "bad input 3"
    assert "'bad'" in str(err)
    with pytest.raises(WorkflowFailed):
        run.result()
    assert "2" not in ran  # the step after the parallel block never ran
    assert Counter(ran) == Counter(["0", "1.p0", "1.p1.0", "1.p1.1.p0", "1.p1.1.p1", "1.p1.1.p1"])
    assert elapsed == 0.5


@pytest.mark.parametrize("concurrency", [None, 1, 3])
def test_map_over_an_empty_list_gives_an_empty_list(drive: Runner, concurrency: int | None) -> None:
    ran: list[Any] = []

    @step
    def body(ctx: Context, x: int) -> int:
        ran.append(x)
        return x

    @step
    def nothing(ctx: Context, x: int) -> list[int]:
        return []

    @step
    def size(ctx: Context, xs: list[int]) -> tuple[str, Any]:
        return ("after", xs)

    direct, _ = drive(Workflow("m0").map(body, concurrency=concurrency), [], "direct")
    assert direct.status is Status.COMPLETED
    assert direct.output == []
    wf = Workflow("m1").then(nothing).map(body, concurrency=concurrency).then(size)
    run, elapsed = drive(wf, 7, "made")
    assert run.status is Status.COMPLETED
    assert run.output == ("after", [])
    assert ran == []
    assert elapsed == 0


def test_a_loop_past_max_iterations_fails_and_one_at_the_bound_completes(drive: Runner) -> None:
    ran: list[str] = []

    @step
    def inc(ctx: Context, x: int) -> int:
        ran.append(ctx.position)
        return x + 1

    wf = Workflow("lp").loop(inc, until=lambda v: v >= 3, max_iterations=3)
    run, _ = drive(wf, 0, "at-bound")
    assert run.status is Status.COMPLETED
    assert run.output == 3
    assert ran == ["0.i0", "0.i1", "0.i2"]

    ran.clear()
    run, _ = drive(wf, -1, "past-bound")
    assert run.status is Status.FAILED
    assert isinstance(run.error, WorkflowFailed)
    assert "max_iterations" in str(run.error)
    assert "max_iterations=3" in run.error.error_message
    assert run.error.step is None
    assert ran == ["0.i0", "0.i1", "0.i2"]  # exactly max_iterations iterations ran


def test_state_positions_count_visits_per_state(drive: Runner) -> None:
    ran: list[str] = []

    @step
    def dec(ctx: Context, x: int) -> int:
        ran.append(ctx.position)
        return x - 1

    @step
    def classify(ctx: Context, x: int) -> str:
        ran.append(ctx.position)
        return "L0" if x % 2 == 0 else "L1"

    @step
    def done(ctx: Context, label: str) -> int:
        ran.append(ctx.position)
        return 10 if label == "L0" else 20

    sm = (
        Workflow("sm", start="dec")
        .state("dec", dec, next=lambda v: "dec" if v > 1 else "classify")
        .state("classify", classify, next={"L0": "done", "L1": "done"})
        .state("done", done)
    )
    wf = Workflow("outer").then(sm).loop(sm, until=lambda v: v >= 20, max_iterations=2)
    run, _ = drive(wf, 3, "st")
    assert run.status is Status.COMPLETED, run.error
    assert run.output == 20
    assert ran == [
        "0.dec#0",
        "0.dec#1",
        "0.classify#0",
        "0.done#0",
        *(f"1.i0.dec#{k}" for k in range(19)),
        "1.i0.classify#0",
        "1.i0.done#0",
    ]
