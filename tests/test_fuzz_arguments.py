"""A bounded fuzz test over the public API's arguments (issue 7, item 13): whatever a caller passes,
only tideflow's errors come out (every one derives from TideflowError), never a bare TypeError,
ValueError, OverflowError or UnicodeEncodeError from deeper down."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tideflow import (
    Context,
    Engine,
    Retry,
    TideflowError,
    VirtualClock,
    Workflow,
    step,
)


@step
def inc(ctx: Context, x: int) -> int:
    return x + 1


@step
def same(ctx: Context, x: object) -> object:
    return x


texts = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["\ud800", "a\udfffb", "!cancel", "", "w", "go", "a"]),
)
ints = st.one_of(
    st.integers(min_value=-3, max_value=5),
    st.sampled_from([2**31, 2**32 - 1, 2**32, 2**63, 2**64, -(2**64), 10**400]),
)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, 1e308, -0.0]),
)
junk = st.sampled_from(
    [
        None,
        True,
        b"\xff",
        [1, 2],
        {"a": 1},
        (1,),
        object(),
        timedelta(seconds=1),
        timedelta(days=-1),
        datetime(2030, 1, 1, tzinfo=timezone.utc),
        datetime(2030, 1, 1),
        int,
        ValueError,
        (ValueError, 3),
    ]
)
values = st.one_of(texts, ints, floats, junk)
runnables = st.one_of(st.sampled_from([inc, same, Workflow("sub").then(same)]), values)
functions = st.one_of(st.sampled_from([lambda x: True, lambda x: "a", len]), values)


def call(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Calls ``f``; any exception but a TideflowError fails the test (with what was passed)."""
    try:
        return f(*args, **kwargs)
    except TideflowError:
        return None
    except BaseException as e:  # pragma: no cover - a failure shows what leaked
        raise AssertionError(
            f"{getattr(f, '__qualname__', f)}(*{args!r}, **{kwargs!r}) raised {type(e).__name__}: {e}"
        ) from e


def waiting_engine() -> Engine:
    engine = Engine(clock=VirtualClock())
    engine.run(Workflow("w").then(inc).wait_signal("go"), 1, id="i")
    return engine


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@FUZZ
@given(
    store=st.one_of(ints, floats, junk, st.sampled_from(["memory", "nope", "sqlite:///\ud800"])),
    clock=values,
    observer=st.one_of(st.none(), values),
)
def test_engine_constructor(store: object, clock: object, observer: object) -> None:
    call(Engine, store=store, clock=clock, observer=observer)


@FUZZ
@given(
    id=values,
    name=values,
    payload=values,
    reason=values,
    limit=st.one_of(st.none(), ints, floats, junk),
    status=values,
    workflow=st.one_of(st.none(), values),
    older_than=values,
    input=values,
)
def test_engine_methods(
    id: object,
    name: object,
    payload: object,
    reason: object,
    limit: object,
    status: object,
    workflow: object,
    older_than: object,
    input: object,
) -> None:
    engine = waiting_engine()
    wf = Workflow("f").then(same)
    call(engine.run, wf, input, id=id)
    call(lambda: asyncio.run(engine.run_async(wf, input, id=id)))
    call(engine.get, id)
    call(engine.history, id)
    call(engine.signal, id, name, payload)
    call(engine.signal, "i", name, payload)
    call(engine.cancel, id, reason)
    call(engine.run_due, limit)
    call(engine.list, status, workflow, limit)
    call(engine.purge, older_than, status)
    call(engine.resume, id)
    call(engine.delete, id)
    call(engine.register, input)
    call(engine.cancel, "i", reason)


@FUZZ
@given(
    name=values,
    version=st.one_of(st.none(), values),
    start=st.one_of(st.none(), values),
    timeout=st.one_of(st.none(), values),
    x=runnables,
    n=st.one_of(st.none(), ints, floats, junk),
    fn=functions,
    duration=values,
    next=st.one_of(st.none(), values, st.just({"a": "s"}), st.just({"\ud800": 1})),
)
def test_workflow_builder(
    name: object,
    version: object,
    start: object,
    timeout: object,
    x: Any,
    n: Any,
    fn: Any,
    duration: Any,
    next: Any,
) -> None:
    base = call(Workflow, name, version, start=start, timeout=timeout)
    pipeline = Workflow("p")
    for build in (
        lambda: pipeline.then(x),
        lambda: pipeline.parallel(x, same),
        lambda: pipeline.map(x, concurrency=n),
        lambda: pipeline.branch(fn, then=x, otherwise=x),
        lambda: pipeline.loop(x, until=fn, max_iterations=n),
        lambda: pipeline.wait_signal(name, timeout=timeout, type=x, on_timeout=same),
        lambda: pipeline.sleep(duration),
        lambda: pipeline.sleep_until(duration),
        lambda: pipeline.on_cancel(x),
        lambda: Workflow("s", start="s").state("s", x, next=next),
    ):
        built = call(build)
        if built is not None:
            call(Engine().register, built)
            call(built.to_mermaid)
    if base is not None:
        call(Engine().register, base)


@FUZZ
@given(
    name=st.one_of(st.none(), values),
    retry=st.one_of(st.none(), values),
    timeout=st.one_of(st.none(), values),
    max_attempts=values,
    delay=values,
    multiplier=values,
    jitter=values,
    retry_on=values,
)
def test_step_options_and_retry(
    name: object,
    retry: object,
    timeout: object,
    max_attempts: Any,
    delay: Any,
    multiplier: Any,
    jitter: Any,
    retry_on: Any,
) -> None:
    call(step(name=name, retry=retry, timeout=timeout), lambda ctx, x: x)  # type: ignore[arg-type]
    call(step, name)
    r = call(Retry, max_attempts=max_attempts)
    r = call(Retry, initial_delay=delay, max_delay=delay)
    r = call(Retry, multiplier=multiplier, jitter=jitter, retry_on=retry_on, give_up_on=retry_on)
    if r is not None:
        s = call(step(retry=r), lambda ctx, x: x)
        call(Engine().register, Workflow("r").then(s))


@FUZZ
@given(start=st.one_of(ints, floats, junk, texts), by=values)
def test_virtual_clock(start: object, by: object) -> None:
    clock = call(VirtualClock, start)
    clock = clock if clock is not None else VirtualClock()
    call(clock.advance, by)
    call(clock.sleep, by)
