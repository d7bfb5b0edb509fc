"""Every combinator, under the sync and the async driver, with data passing between nodes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tideflow import Context, Engine, Status, Workflow, step

from .conftest import Runner


@step
def inc(ctx: Context, x: int) -> int:
    return x + 1


@step
async def double(ctx: Context, x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


@step
def total(ctx: Context, xs: Any) -> int:
    return sum(xs)


@step
def explode(ctx: Context, n: int) -> list[int]:
    return list(range(n))


def test_then_passes_each_output_to_the_next(run: Runner) -> None:
    r = run(Workflow("w").then(inc).then(double).then(inc), 3)
    assert r.status is Status.COMPLETED
    assert r.output == 9
    assert r.error is None


def test_parallel_delivers_a_tuple_in_branch_order(run: Runner) -> None:
    seen: list[Any] = []

    @step
    def keep(ctx: Context, t: tuple[int, int, int]) -> int:
        seen.append(t)
        return len(t)

    r = run(Workflow("w").parallel(inc, double, inc).then(keep), 5)
    assert seen == [(6, 10, 6)]
    assert r.output == 3


def test_map_runs_per_item_in_order(run: Runner) -> None:
    r = run(Workflow("w").then(explode).map(double, concurrency=2), 5)
    assert r.output == [0, 2, 4, 6, 8]


def test_map_of_an_empty_list_is_empty(run: Runner) -> None:
    assert run(Workflow("w").then(explode).map(inc), 0).output == []


def test_map_rejects_a_non_list(run: Runner) -> None:
    # (a workflow input that is not a list is refused before the run: see test_checks.py)
    @step
    def seven(ctx: Context, x: int) -> int:
        return 7

    r = run(Workflow("w").then(seven).map(inc), 0)
    assert r.status is Status.FAILED
    assert "map needs a list" in str(r.error)


def test_map_concurrency_bounds_async_steps_in_flight(engine: Engine) -> None:
    active = 0
    peak = 0

    @step
    async def slow(ctx: Context, x: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.001)
        active -= 1
        return x

    r = asyncio.run(engine.run_async(Workflow("w").then(explode).map(slow, concurrency=3), 10))
    assert r.output == list(range(10))
    assert peak == 3


def test_parallel_async_branches_run_concurrently(engine: Engine) -> None:
    gate: asyncio.Event | None = None

    @step
    async def waiter(ctx: Context, x: int) -> str:
        assert gate is not None
        await asyncio.wait_for(gate.wait(), 5)
        return "waited"

    @step
    async def opener(ctx: Context, x: int) -> str:
        assert gate is not None
        gate.set()
        return "opened"

    async def main() -> Any:
        nonlocal gate
        gate = asyncio.Event()
        return await engine.run_async(Workflow("w").parallel(waiter, opener), 0)

    r = asyncio.run(main())
    assert r.output == ("waited", "opened")


def test_branch_picks_a_path_on_the_previous_output(run: Runner) -> None:
    wf = Workflow("w").then(inc).branch(lambda x: x > 10, then=double, otherwise=inc)
    assert run(wf, 20).output == 42
    assert run(wf, 1).output == 3


def test_branch_without_otherwise_passes_the_value_through(run: Runner) -> None:
    wf = Workflow("w").branch(lambda x: x < 0, then=inc)
    assert run(wf, 5).output == 5
    assert run(wf, -5).output == -4


def test_loop_feeds_each_output_to_the_next_iteration(run: Runner) -> None:
    r = run(Workflow("w").loop(double, until=lambda x: x >= 100, max_iterations=20), 3)
    assert r.output == 192


def test_loop_past_its_bound_fails_the_instance(run: Runner) -> None:
    r = run(Workflow("w").loop(inc, until=lambda x: False, max_iterations=4), 0)
    assert r.status is Status.FAILED
    assert "max_iterations=4" in str(r.error)


def test_sub_workflow_stands_where_a_step_stands(run: Runner) -> None:
    inner = Workflow("inner").then(inc).then(double)
    wf = Workflow("outer").then(inner).parallel(inner, inc).then(total)
    # 1 -> inner: 4 -> parallel(inner(4)=10, inc(4)=5) -> 15
    assert run(wf, 1).output == 15


def test_same_step_at_many_positions_gets_distinct_keys(run: Runner) -> None:
    keys: list[str] = []

    @step
    def note(ctx: Context, x: int) -> int:
        keys.append(ctx.idempotency_key)
        return x + 1

    r = run(
        Workflow("w").then(note).then(note).loop(note, until=lambda x: x > 4, max_iterations=9),
        0,
        id="k",
    )
    assert r.output == 5
    assert len(keys) == len(set(keys)) == 5
    assert keys[:2] == ["k/0", "k/1"]
    assert keys[2:] == ["k/2.i0", "k/2.i1", "k/2.i2"]


def test_context_exposes_instance_step_attempt_and_input(run: Runner) -> None:
    seen: dict[str, Any] = {}

    @step(name="look")
    def look(ctx: Context, x: int) -> int:
        seen.update(
            instance=ctx.instance_id, step=ctx.step_name, attempt=ctx.attempt, input=ctx.input
        )
        return x

    run(Workflow("w").then(inc).then(look), 41, id="ctx-1")
    assert seen == {"instance": "ctx-1", "step": "look", "attempt": 1, "input": 41}


class TestStates:
    """Explicit states with named transitions, cycles allowed."""

    def test_goto_and_end(self, run: Runner) -> None:
        wf = Workflow("s", start="a").state("a", inc, next="b").state("b", double)
        assert run(wf, 1).output == 4

    def test_label_table_uses_the_output(self, run: Runner) -> None:
        @step
        def classify(ctx: Context, x: int) -> str:
            return "big" if x > 10 else "small"

        @step
        def big(ctx: Context, label: str) -> str:
            return f"{label}!"

        @step
        def small(ctx: Context, label: str) -> str:
            return f"{label}."

        wf = (
            Workflow("s", start="classify")
            .state("classify", classify, next={"big": "big", "small": "small"})
            .state("big", big)
            .state("small", small)
        )
        assert run(wf, 50).output == "big!"
        assert run(wf, 5).output == "small."

    def test_router_with_a_cycle(self, run: Runner) -> None:
        wf = (
            Workflow("s", start="grow")
            .state("grow", double, next=lambda x: "grow" if x < 50 else "done")
            .state("done", inc)
        )
        assert run(wf, 3).output == 97

    def test_router_returning_an_unknown_state_fails_with_a_definition_error(
        self, run: Runner
    ) -> None:
        from tideflow import DefinitionError

        wf = Workflow("s", start="a").state("a", inc, next=lambda x: "nowhere").state("b", inc)
        r = run(wf, 1)
        assert r.status is Status.FAILED
        assert isinstance(r.error, DefinitionError)
        assert "'nowhere'" in str(r.error) or '"nowhere"' in str(r.error)

    def test_label_not_in_the_table_fails(self, run: Runner) -> None:
        @step
        def say(ctx: Context, x: int) -> str:
            return "maybe"

        wf = Workflow("s", start="a").state("a", say, next={"yes": "b"}).state("b", inc)
        r = run(wf, 1)
        assert r.status is Status.FAILED
        assert "maybe" in str(r.error)

    def test_state_body_may_be_a_workflow(self, run: Runner) -> None:
        inner = Workflow("inner").then(inc).then(inc)
        wf = Workflow("s", start="a").state("a", inner, next="b").state("b", double)
        assert run(wf, 0).output == 4


def test_async_step_runs_under_the_sync_driver(engine: Engine) -> None:
    assert engine.run(Workflow("w").then(double).then(double), 2).output == 8


@pytest.mark.parametrize("n", [1, 50])
def test_long_chains_need_no_recursion(engine: Engine, n: int) -> None:
    wf = Workflow("w")
    for _ in range(n * 100):
        wf = wf.then(inc)
    assert engine.run(wf, 0).output == n * 100
