"""Definition errors are raised when a workflow is built or registered, never halfway through."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import pytest

from tideflow import Context, DefinitionError, Engine, Retry, TideflowError, Workflow, step


@step
def a(ctx: Context, x: int) -> int:
    return x


@step
def b(ctx: Context, x: int) -> int:
    return x


def plain(ctx: Context, x: int) -> int:
    return x


def test_every_builder_method_returns_a_new_workflow() -> None:
    base = Workflow("w").then(a)
    longer = base.then(b)
    assert base is not longer
    assert len(base.nodes()) == 1
    assert len(longer.nodes()) == 2


@pytest.mark.parametrize(
    "build",
    [
        lambda: Workflow("w").then(plain),  # type: ignore[arg-type]
        lambda: Workflow("w").parallel(a, plain),  # type: ignore[arg-type]
        lambda: Workflow("w").map(42),  # type: ignore[arg-type]
        lambda: Workflow("w").branch(lambda x: True, then="nope"),  # type: ignore[arg-type]
    ],
)
def test_something_that_is_not_a_step_is_rejected_at_build_time(build: object) -> None:
    with pytest.raises(DefinitionError, match="not a step"):
        build()  # type: ignore[operator]


def test_plain_function_hint_suggests_the_decorator() -> None:
    with pytest.raises(DefinitionError, match=r"@tideflow\.step"):
        Workflow("w").then(plain)  # type: ignore[arg-type]


def test_loop_without_a_bound_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="no bound"):
        Workflow("w").loop(a, until=lambda x: True)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_bounds_and_concurrency_are_rejected(bad: object) -> None:
    with pytest.raises(DefinitionError):
        Workflow("w").loop(a, until=lambda x: True, max_iterations=bad)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError):
        Workflow("w").map(a, concurrency=bad)  # type: ignore[arg-type]


def test_duplicate_state_names_are_rejected_when_added() -> None:
    wf = Workflow("s", start="x").state("x", a)
    with pytest.raises(DefinitionError, match="twice"):
        wf.state("x", b)


def test_unknown_target_state_is_rejected_on_register() -> None:
    wf = Workflow("s", start="x").state("x", a, next="y")
    with pytest.raises(DefinitionError, match='unknown state "y"'):
        Engine().register(wf)


def test_unknown_start_state_is_rejected() -> None:
    wf = Workflow("s", start="nope").state("x", a)
    with pytest.raises(DefinitionError, match="starts at unknown state"):
        wf.compile()


def test_unreachable_states_are_rejected() -> None:
    wf = Workflow("s", start="x").state("x", a).state("island", b)
    with pytest.raises(DefinitionError, match=r"cannot be reached.*island"):
        Engine().register(wf)


def test_router_targets_bound_reachability() -> None:
    def route(v: int) -> str:
        return "x"

    route.targets = ["x"]  # type: ignore[attr-defined]
    wf = Workflow("s", start="x").state("x", a, next=route).state("island", b)
    with pytest.raises(DefinitionError, match="island"):
        wf.compile()
    # without declared targets a router may reach any state
    ok = Workflow("s", start="x").state("x", a, next=lambda v: "y").state("y", b)
    ok.compile()


def test_mixing_pipeline_and_states_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="state machine"):
        Workflow("s", start="x").then(a)
    with pytest.raises(DefinitionError, match="no start state"):
        Workflow("w").state("x", a)


def test_empty_workflow_is_rejected_on_register() -> None:
    with pytest.raises(DefinitionError, match="no steps"):
        Engine().register(Workflow("w"))


def test_two_different_steps_with_one_name_are_rejected() -> None:
    other = step(name="a")(plain)
    with pytest.raises(DefinitionError, match="two different steps named 'a'"):
        Workflow("w").then(a).then(other).compile()


def test_state_names_with_reserved_characters_are_rejected() -> None:
    with pytest.raises(DefinitionError, match="must be non-empty and contain no"):
        Workflow("s", start="a.b").state("a.b", a).compile()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"multiplier": 0.5},
        {"jitter": 2},
        {"initial_delay": -1},
        {"max_delay": float("inf")},
        {"retry_on": (int,)},
    ],
)
def test_bad_retry_policies_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(DefinitionError):
        Retry(**kwargs)  # type: ignore[arg-type]


def test_bad_options_are_rejected() -> None:
    with pytest.raises(DefinitionError):
        step(timeout="soon")(plain)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError):
        step(retry=3)(plain)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError):
        Workflow("")


def test_definition_errors_are_tideflow_errors() -> None:
    assert issubclass(DefinitionError, TideflowError)


def test_plan_hash_follows_structure_not_tuning() -> None:
    fast = step(name="a", retry=Retry(max_attempts=9))(plain)
    assert Workflow("w").then(a).plan_hash == Workflow("w").then(fast).plan_hash
    assert Workflow("w").then(a).plan_hash != Workflow("w").then(a).then(a).plan_hash


def test_mermaid_draws_every_kind_of_node() -> None:
    wf = (
        Workflow("w")
        .then(a)
        .parallel(a, b)
        .map(a, concurrency=2)
        .branch(lambda x: True, then=a)
        .loop(b, until=lambda x: True, max_iterations=3)
    )
    text = wf.to_mermaid()
    assert text.startswith("flowchart TD")
    for fragment in ["parallel", "join (tuple)", "map: each item, 2 at a time", "until", "max 3"]:
        assert fragment in text


# -- a step must be callable as fn(ctx, value) (issue 7, item 12) ----------------------------------


def _kw_only(*, ctx: object, value: object) -> None: ...


def _kw_required(ctx: object, value: object, *, flag: bool) -> None: ...


def _three(ctx: object, value: object, extra: object) -> None: ...


class _CtxOnly:
    def __call__(self, ctx: object) -> None: ...


@pytest.mark.parametrize(
    "fn",
    [
        lambda: 1,
        lambda ctx: 1,
        _kw_only,
        _kw_required,
        _three,
        _CtxOnly(),
        functools.partial(_three, 1, 2),
    ],
    ids=[
        "no-params",
        "ctx-only",
        "kw-only",
        "kw-required",
        "three-required",
        "callable-ctx-only",
        "partial",
    ],
)
def test_a_step_that_cannot_be_called_with_ctx_and_value_is_a_definition_error(fn: Any) -> None:
    with pytest.raises(DefinitionError, match=r"cannot be called as fn\(ctx, value\)"):
        step(fn)


def _extra_default(ctx: object, value: object, extra: int = 1) -> None: ...


def _star_args(*args: object) -> None: ...


def _kw_default(ctx: object, value: object, *, flag: bool = False) -> None: ...


class _Callable:
    def __call__(self, ctx: object, value: object) -> None: ...

    def method(self, ctx: object, value: object) -> None: ...


@pytest.mark.parametrize(
    "fn",
    [
        _extra_default,
        _star_args,
        _kw_default,
        _Callable(),
        _Callable().method,
        functools.partial(_three, 1),
    ],
)
def test_steps_with_room_for_more_arguments_are_accepted(fn: Any) -> None:
    assert step(fn).fn is fn


def test_an_unresolvable_return_hint_is_a_definition_error_when_built() -> None:
    # under `from __future__ import annotations` (this module), a function-local class is a
    # string that cannot be resolved at module level
    @dataclasses.dataclass
    class Local:
        n: int

    @step
    def make(ctx: object, value: int) -> Local:
        return Local(value)

    with pytest.raises(DefinitionError, match=r"step 'make'.*Local.*unresolved forward reference"):
        Workflow("local").then(make).compile()


def test_an_unresolvable_input_hint_is_a_definition_error_when_built() -> None:
    @dataclasses.dataclass
    class Local:
        n: int

    @step
    def take(ctx: object, value: Local) -> int:
        return 1

    with pytest.raises(DefinitionError, match=r"input type of workflow 'local'.*Local"):
        Workflow("local").then(take).compile()
