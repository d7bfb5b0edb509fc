"""Observers see every workflow and step transition; a failing observer does not break a run."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tideflow import Context, Engine, Retry, VirtualClock, Workflow, step
from tideflow.observe import LoggingObserver, MetricsObserver, Observer


class Recorder(Observer):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def workflow_started(self, instance_id: str, workflow: str) -> None:
        self.events.append(("started", instance_id))

    def workflow_completed(self, instance_id: str, workflow: str, output: Any) -> None:
        self.events.append(("completed", instance_id, output))

    def workflow_failed(self, instance_id: str, workflow: str, error: BaseException) -> None:
        self.events.append(("failed", instance_id, type(error).__name__))

    def workflow_suspended(self, instance_id: str, workflow: str) -> None:
        self.events.append(("suspended", instance_id))

    def step_started(self, instance_id: str, step: str, attempt: int, position: str) -> None:
        self.events.append(("step", step, attempt, position))

    def step_completed(
        self, instance_id: str, step: str, attempt: int, position: str, duration: float
    ) -> None:
        self.events.append(("done", step, attempt, duration))

    def step_failed(
        self,
        instance_id: str,
        step: str,
        attempt: int,
        position: str,
        duration: float,
        error: str,
        retrying: bool,
    ) -> None:
        self.events.append(("error", step, attempt, error, retrying))


calls = 0


@step(retry=Retry(max_attempts=2, initial_delay=1))
def flaky(ctx: Context, x: int) -> int:
    if ctx.attempt == 1:
        raise OSError("blip")
    return x + 1


@step
def slow(ctx: Context, x: int) -> int:
    ctx_clock.advance(0.25)
    return x


ctx_clock = VirtualClock()
WF = Workflow("obs").then(flaky).then(slow)


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_every_transition_is_observed(driver: str) -> None:
    rec = Recorder()
    engine = Engine(clock=ctx_clock, observer=rec)
    if driver == "sync":
        engine.run(WF, 1, id="o")
    else:
        asyncio.run(engine.run_async(WF, 1, id="o"))
    assert rec.events == [
        ("started", "o"),
        ("step", "flaky", 1, "0"),
        ("error", "flaky", 1, "OSError: blip", True),
        ("step", "flaky", 2, "0"),
        ("done", "flaky", 2, 0.0),
        ("step", "slow", 1, "1"),
        ("done", "slow", 1, 0.25),
        ("completed", "o", 2),
    ]
    engine.run(WF, 1, id="o")  # already finished: nothing runs, nothing is reported
    assert len(rec.events) == 8


def test_failures_and_suspensions_are_reported() -> None:
    rec = Recorder()
    engine = Engine(clock=VirtualClock(), observer=rec)

    @step
    def bad(ctx: Context, x: int) -> int:
        raise KeyError(x)

    engine.run(Workflow("bad").then(bad), 1, id="b")
    engine.run(Workflow("waits").wait_signal("go"), 1, id="w")
    assert ("failed", "b", "WorkflowFailed") in rec.events
    assert ("error", "bad", 1, "KeyError: 1", False) in rec.events
    assert rec.events[-1] == ("suspended", "w")


def test_a_raising_observer_is_logged_and_the_run_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Observer):
        def step_started(self, instance_id: str, step: str, attempt: int, position: str) -> None:
            raise RuntimeError("observer bug")

    with caplog.at_level(logging.ERROR, logger="tideflow"):
        run = Engine(clock=VirtualClock(), observer=Broken()).run(WF, 1)
    assert run.output == 2
    assert "observer bug" in caplog.text


def test_logging_and_metrics_observers() -> None:
    metrics = MetricsObserver()
    engine = Engine(clock=VirtualClock(), observer=metrics)
    for i in range(3):
        engine.run(WF, i)
    snap = metrics.snapshot()
    assert snap["workflows"] == {"obs.completed": 3, "obs.started": 3}
    assert snap["steps"] == {"flaky.completed": 3, "flaky.retried": 3, "slow.completed": 3}
    assert snap["running"] == 0

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("tideflow.test")
    log.addHandler(Keep())
    log.setLevel(logging.DEBUG)
    Engine(clock=VirtualClock(), observer=LoggingObserver(log)).run(WF, 1, id="L")
    events = [r.tideflow["event"] for r in records]  # type: ignore[attr-defined]
    assert events == [
        "workflow.started",
        "step.started",
        "step.retrying",
        "step.started",
        "step.completed",
        "step.started",
        "step.completed",
        "workflow.completed",
    ]
