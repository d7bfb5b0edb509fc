"""Bad arguments are refused at the call that received them, with a tideflow error that names the
argument and what is allowed (issue 7, item 13): never a bare TypeError, OverflowError or
UnicodeEncodeError from deeper down, and never later, when the definition is registered."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tideflow import (
    Context,
    DefinitionError,
    Engine,
    InvalidArgument,
    Retry,
    Status,
    VirtualClock,
    Workflow,
    step,
)

LONE = "\ud800"  # a lone surrogate: a str that UTF-8 cannot encode


@step
def inc(ctx: Context, x: int) -> int:
    return x + 1


@step
def same(ctx: Context, x: object) -> object:
    return x


def waiting_engine() -> Engine:
    engine = Engine(clock=VirtualClock())
    engine.run(Workflow("w").then(inc).wait_signal("go"), 1, id="i")
    return engine


ENGINE_CALLS: dict[str, tuple[Callable[[Engine], object], str]] = {
    "run id": (lambda e: e.run(Workflow("w").then(inc), 1, id=LONE), "an instance id"),
    "get id": (lambda e: e.get(LONE), "an instance id"),
    "resume id": (lambda e: e.resume(LONE), "an instance id"),
    "delete id": (lambda e: e.delete(LONE), "an instance id"),
    "signal name": (lambda e: e.signal("i", LONE, 1), "a signal name"),
    "signal name not a str": (lambda e: e.signal("i", 5, 1), "a signal name"),  # type: ignore[arg-type]
    "cancel reason": (lambda e: e.cancel("i", LONE), "a cancel reason"),
    "cancel reason not a str": (lambda e: e.cancel("i", 5), "a cancel reason"),  # type: ignore[arg-type]
    "list limit": (lambda e: e.list(limit=2**64), "list(limit=)"),
    "list workflow": (lambda e: e.list(workflow=LONE), "list(workflow=)"),
    "list status": (lambda e: e.list(status="nope"), "status"),
    "run_due limit": (lambda e: e.run_due(limit=2**64), "run_due(limit=)"),
    "run_due negative limit": (lambda e: e.run_due(limit=-1), "run_due(limit=)"),
    "purge huge": (lambda e: e.purge(older_than=10**400), "purge(older_than=)"),
    "purge negative": (lambda e: e.purge(older_than=-1), "purge(older_than=)"),
}


@pytest.mark.parametrize("case", sorted(ENGINE_CALLS))
def test_a_bad_engine_argument_is_an_invalid_argument_naming_it(case: str) -> None:
    call, named = ENGINE_CALLS[case]
    engine = waiting_engine()
    with pytest.raises(InvalidArgument, match=named.replace("(", r"\(").replace(")", r"\)")):
        call(engine)
    assert engine.get("i").status is Status.SUSPENDED  # nothing was stored or changed


def test_a_store_url_or_path_that_utf8_cannot_encode_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="store"):
        Engine(store=f"sqlite:///{LONE}.db")
    from tideflow.stores import SQLiteStore

    with pytest.raises(InvalidArgument, match="path"):
        Engine(store=SQLiteStore(os.path.join("/tmp", f"{LONE}.db")))


@pytest.mark.parametrize("path", [5, None, 1.5])
def test_a_sqlite_store_path_that_is_not_a_path_is_an_invalid_argument(path: object) -> None:
    from tideflow.stores import SQLiteStore

    with pytest.raises(InvalidArgument, match="path"):  # was a bare TypeError from os.fspath
        SQLiteStore(path)  # type: ignore[arg-type]


def test_virtual_clock_start_must_be_a_finite_number() -> None:
    for bad in ("x", float("nan"), float("inf"), 10**400, True):
        with pytest.raises(InvalidArgument, match=r"VirtualClock\(start=\)"):
            VirtualClock(bad)  # type: ignore[arg-type]
    assert VirtualClock().now() == 1704067200.0 and VirtualClock(5).now() == 5.0


def test_a_huge_duration_is_shown_shortened_in_its_error() -> None:
    with pytest.raises(InvalidArgument, match=r"\(401 characters\)") as info:
        VirtualClock().advance(10**400)
    assert len(str(info.value)) < 200  # not all 401 digits


DEFINITIONS: dict[str, tuple[Callable[[], object], str]] = {
    "workflow name": (lambda: Workflow(LONE), "a workflow name"),
    "version": (lambda: Workflow("v", version=LONE), "version"),
    "start state": (lambda: Workflow("s", start=LONE), "start"),
    "state name": (lambda: Workflow("s", start="a").state(LONE, inc), "a state name"),
    "step name": (lambda: step(name=LONE)(lambda ctx, x: x), "a step name"),
    "wait name": (lambda: Workflow("w").wait_signal(LONE), "a signal name"),
    "label": (
        lambda: Engine().register(
            Workflow("s", start="a").state("a", same, next={LONE: "b"}).state("b", inc)
        ),
        "UTF-8",
    ),
    "huge sleep": (lambda: Workflow("w").sleep(10**400), "sleep duration"),
    "huge timeout": (lambda: step(timeout=10**400)(lambda ctx, x: x), "timeout"),
    "huge retry delay": (lambda: Retry(initial_delay=10**400), "initial_delay"),
    "infinite multiplier": (lambda: Retry(multiplier=float("inf")), "multiplier"),
    "huge multiplier": (lambda: Retry(multiplier=10**400), "multiplier"),
    "max_attempts 2**32": (lambda: Retry(max_attempts=2**32), r"max_attempts.*2\*\*32 - 1"),
    "concurrency 2**32": (lambda: Workflow("m").map(inc, concurrency=2**32), "concurrency"),
    "max_iterations 2**32": (
        lambda: Workflow("l").loop(inc, until=lambda x: x > 3, max_iterations=2**32),
        "max_iterations",
    ),
}


@pytest.mark.parametrize("case", sorted(DEFINITIONS))
def test_a_bad_definition_argument_is_a_definition_error_where_it_is_given(case: str) -> None:
    build, named = DEFINITIONS[case]
    with pytest.raises(DefinitionError, match=named):
        build()


@pytest.mark.parametrize("digits", [4301, 5000, 20000])
def test_integers_of_any_size_round_trip(digits: int) -> None:
    big = 7 * 10 ** (digits - 1) + 3
    engine = Engine()
    assert engine.run(Workflow("typed").then(inc), big, id="t").output == big + 1
    assert engine.run(Workflow("plain").then(same), -big, id="p").output == -big
    assert engine.get("t").output == big + 1 and engine.get("p").output == -big
    w = Workflow("waits").wait_signal("go").then(same)
    engine.run(w, 0, id="s")
    engine.signal("s", "go", big)
    assert engine.run_due()[0].output == big
