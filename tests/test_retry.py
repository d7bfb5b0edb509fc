"""Retry policies: attempt counts, delays read off the virtual clock, and which errors retry."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from tideflow import Context, Retry, Status, VirtualClock, Workflow, WorkflowFailed, step

from .conftest import Runner


class Flaky:
    """A step body that fails its first `fails` attempts, recording when each attempt ran."""

    def __init__(self, clock: VirtualClock, fails: int, exc: type[Exception] = OSError) -> None:
        self.clock, self.fails, self.exc = clock, fails, exc
        self.times: list[float] = []
        self.attempts: list[int] = []
        self.keys: set[str] = set()

    def __call__(self, ctx: Context, x: int) -> int:
        self.times.append(self.clock.now())
        self.attempts.append(ctx.attempt)
        self.keys.add(ctx.idempotency_key)
        if len(self.times) <= self.fails:
            raise self.exc(f"attempt {ctx.attempt} failed")
        return x + 1


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


def test_exponential_backoff_waits_on_the_clock(run: Runner, clock: VirtualClock) -> None:
    body = Flaky(clock, fails=4)
    s = step(
        name="flaky", retry=Retry(max_attempts=5, initial_delay=0.5, multiplier=3.0, max_delay=5)
    )(body)
    r = run(Workflow("w").then(s), 1)
    assert r.output == 2
    assert body.attempts == [1, 2, 3, 4, 5]
    assert gaps(body.times) == [0.5, 1.5, 4.5, 5.0]
    assert len(body.keys) == 1  # one idempotency key across retries


def test_timedelta_durations(run: Runner, clock: VirtualClock) -> None:
    body = Flaky(clock, fails=1)
    policy = Retry(max_attempts=2, initial_delay=timedelta(minutes=2), max_delay=timedelta(hours=1))
    run(Workflow("w").then(step(name="f", retry=policy)(body)), 1)
    assert gaps(body.times) == [120.0]


def test_exhausted_retries_fail_naming_step_attempts_and_error(
    run: Runner, clock: VirtualClock
) -> None:
    body = Flaky(clock, fails=99)
    s = step(name="charge", retry=Retry(max_attempts=3, initial_delay=1))(body)
    r = run(Workflow("w").then(s), 1)
    assert r.status is Status.FAILED
    assert isinstance(r.error, WorkflowFailed)
    assert (r.error.step, r.error.attempts) == ("charge", 3)
    assert (r.error.error_type, r.error.error_message) == ("OSError", "attempt 3 failed")
    assert "charge" in str(r.error) and "3 attempts" in str(r.error) and "OSError" in str(r.error)
    assert "Flaky.__call__" in r.error.traceback or "__call__" in r.error.traceback


def test_give_up_on_stops_at_once(run: Runner, clock: VirtualClock) -> None:
    body = Flaky(clock, fails=99, exc=PermissionError)
    policy = Retry(max_attempts=5, give_up_on=(PermissionError,))
    r = run(Workflow("w").then(step(name="f", retry=policy)(body)), 1)
    assert r.status is Status.FAILED
    assert body.attempts == [1]


def test_retry_on_limits_what_retries(run: Runner, clock: VirtualClock) -> None:
    body = Flaky(clock, fails=99, exc=KeyError)
    r = run(
        Workflow("w").then(step(name="f", retry=Retry(max_attempts=4, retry_on=(OSError,)))(body)),
        1,
    )
    assert body.attempts == [1]
    assert r.error is not None and isinstance(r.error, WorkflowFailed)
    assert r.error.error_type == "KeyError"


def test_no_policy_means_one_attempt(run: Runner, clock: VirtualClock) -> None:
    body = Flaky(clock, fails=1)
    r = run(Workflow("w").then(step(name="f")(body)), 1)
    assert r.status is Status.FAILED
    assert body.attempts == [1]


def test_jitter_is_deterministic_per_instance(clock: VirtualClock) -> None:
    from tideflow import Engine

    def delays(instance: str) -> list[float]:
        body = Flaky(clock, fails=3)
        policy = Retry(max_attempts=4, initial_delay=10, multiplier=1, max_delay=10, jitter=0.5)
        Engine(clock=clock).run(
            Workflow("w").then(step(name="f", retry=policy)(body)), 1, id=instance
        )
        return gaps(body.times)

    first, again, other = delays("i-1"), delays("i-1"), delays("i-2")
    assert first == again
    assert first != other
    assert all(5.0 <= d <= 15.0 for d in first + other)
    assert len(set(first)) > 1


@pytest.mark.parametrize("fails", [0, 1, 2])
def test_retry_inside_parallel_branches(run: Runner, clock: VirtualClock, fails: int) -> None:
    body = Flaky(clock, fails=fails)
    s = step(name="f", retry=Retry(max_attempts=3, initial_delay=1))(body)

    @step
    def ok(ctx: Context, x: int) -> int:
        return -x

    r = run(Workflow("w").parallel(s, ok), 10)
    assert r.output == (11, -10)
    assert len(body.attempts) == fails + 1
