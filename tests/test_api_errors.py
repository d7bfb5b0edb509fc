"""The public exception tree: one base class, InvalidArgument for bad arguments, Cancelled apart."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import tideflow
from tideflow import (
    Cancelled,
    CodecError,
    Context,
    Engine,
    InvalidArgument,
    Retry,
    Status,
    TideflowError,
    VirtualClock,
    Workflow,
    WorkflowFailed,
    errors,
    step,
)


def test_every_exported_error_but_cancelled_derives_from_tideflow_error() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert getattr(tideflow, name) is cls and name in tideflow.__all__
        if cls is Cancelled:
            continue
        assert issubclass(cls, TideflowError), name


def test_cancelled_is_control_flow_not_an_exception() -> None:
    assert issubclass(Cancelled, BaseException)
    assert not issubclass(Cancelled, Exception)
    assert not issubclass(Cancelled, TideflowError)


def test_invalid_argument_is_also_a_value_error_and_a_type_error() -> None:
    assert issubclass(InvalidArgument, TideflowError)
    assert issubclass(InvalidArgument, ValueError)
    assert issubclass(InvalidArgument, TypeError)


@pytest.mark.parametrize(
    "call",
    [
        lambda: VirtualClock().advance(-1),
        lambda: VirtualClock().sleep(float("nan")),
        lambda: VirtualClock().advance("1"),
        lambda: Engine(clock=object()),
    ],
    ids=["negative", "nan", "str", "clock"],
)
def test_bad_arguments_raise_a_tideflow_error(call: object) -> None:
    with pytest.raises(TideflowError) as info:
        call()  # type: ignore[operator]
    assert type(info.value) is InvalidArgument


@dataclass
class Point:
    x: int


@step(retry=Retry(max_attempts=3, initial_delay=0))
def unencodable(ctx: Context, x: int) -> Point:
    return {1, 2}  # type: ignore[return-value]


def test_an_unencodable_output_fails_the_run_with_a_workflow_failed() -> None:
    run = Engine(clock=VirtualClock()).run(Workflow("enc").then(unencodable), 1)
    assert run.status is Status.FAILED
    err = run.error
    assert isinstance(err, WorkflowFailed) and not isinstance(err, CodecError)
    assert (err.step, err.attempts, err.error_type) == ("unencodable", 1, "CodecError")  # no retry
    assert "unencodable" in err.error_message and "Point" in err.error_message
    assert "set" in err.error_message
