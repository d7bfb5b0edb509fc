"""VirtualClock durations: seconds (int or float) or a timedelta, refused with InvalidArgument."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest

from tideflow import Context, Engine, InvalidArgument, TideflowError, VirtualClock, Workflow, step


@pytest.mark.parametrize("method", ["advance", "sleep"])
@pytest.mark.parametrize(
    ("duration", "seconds"),
    [(3, 3.0), (2.5, 2.5), (0, 0.0), (timedelta(days=3), 259_200.0), (timedelta(0), 0.0)],
)
def test_a_duration_is_seconds_or_a_timedelta(method: str, duration: Any, seconds: float) -> None:
    clock = VirtualClock(start=100.0)
    getattr(clock, method)(duration)
    assert clock.now() == 100.0 + seconds


def test_a_timedelta_keeps_its_fraction_of_a_second() -> None:
    clock = VirtualClock(start=0.0)
    clock.advance(timedelta(milliseconds=250))
    assert clock.now() == 0.25


@pytest.mark.parametrize("method", ["advance", "sleep"])
@pytest.mark.parametrize(
    "duration",
    [-1, -0.5, float("nan"), float("inf"), timedelta(seconds=-1), 10**400],
    ids=["neg-int", "neg-float", "nan", "inf", "neg-timedelta", "huge-int"],
)
def test_a_bad_duration_is_refused_and_time_stands_still(method: str, duration: Any) -> None:
    clock = VirtualClock(start=100.0)
    with pytest.raises(InvalidArgument, match="finite number of seconds >= 0"):
        getattr(clock, method)(duration)
    assert clock.now() == 100.0


@pytest.mark.parametrize("duration", ["3", None, True, [1]], ids=["str", "none", "bool", "list"])
def test_a_duration_of_another_kind_is_refused_naming_its_type(duration: Any) -> None:
    clock = VirtualClock(start=100.0)
    with pytest.raises(InvalidArgument, match=f"or a timedelta, got {type(duration).__name__}$"):
        clock.advance(duration)
    assert clock.now() == 100.0


def test_invalid_argument_is_a_tideflow_error_and_the_builtin_classes() -> None:
    clock = VirtualClock()
    for builtin in (TideflowError, ValueError, TypeError):
        with pytest.raises(builtin):
            clock.advance(-1)
        with pytest.raises(builtin):
            clock.advance("soon")


def test_a_clock_without_now_and_sleep_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"now\(\) -> float and sleep\(seconds\).*got object"):
        Engine(clock=object())
    with pytest.raises(ValueError):  # what it raised before: existing handlers keep working
        Engine(clock=object())


def test_a_timedelta_advance_wakes_a_durable_sleep() -> None:
    @step
    def after(ctx: Context, x: int) -> int:
        return x + 1

    clock = VirtualClock()
    engine = Engine(clock=clock)
    engine.run(Workflow("nap").sleep(timedelta(hours=2)).then(after), 1, id="n")
    clock.advance(timedelta(hours=1))
    assert engine.run_due() == []
    clock.advance(timedelta(hours=1))
    assert [r.output for r in engine.run_due()] == [2]


def test_advancing_by_seconds_does_not_import_datetime() -> None:
    code = (
        "import sys, tideflow\n"
        "c = tideflow.VirtualClock()\n"
        "c.advance(1); c.sleep(0.5)\n"
        "try:\n"
        "    c.advance('x')\n"
        "except tideflow.InvalidArgument:\n"
        "    pass\n"
        "assert 'datetime' not in sys.modules, 'datetime was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
