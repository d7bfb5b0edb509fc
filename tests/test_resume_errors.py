"""What resuming or reading a stored instance says when it cannot: each error names what is wrong."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from tideflow import (
    CodecError,
    Context,
    Engine,
    Status,
    TideflowError,
    UnknownWorkflow,
    Workflow,
    step,
)


class Interrupt(BaseException):
    """Stands for the process dying mid-step."""


@step
def one(ctx: Context, x: int) -> int:
    return x + 1


def test_an_id_taken_by_another_workflow_is_an_error_not_that_instance() -> None:
    engine = Engine()
    engine.run(Workflow("first").then(one), 1, id="k")
    with pytest.raises(TideflowError, match="taken by an instance of workflow"):
        engine.run(Workflow("second").then(one), 1, id="k")
    assert engine.get("k").workflow == "first"


def test_resuming_an_instance_of_an_unregistered_workflow_names_it(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'a.db'}"

    @step
    def crash(ctx: Context, x: int) -> int:
        raise Interrupt

    with pytest.raises(Interrupt):
        Engine(store=db).run(Workflow("lost").then(crash), 1, id="u")
    with pytest.raises(UnknownWorkflow, match="lost"):
        Engine(store=db).resume("u")


def test_a_finished_output_that_no_longer_decodes_names_the_instance(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'b.db'}"
    Engine(store=db).run(Workflow("w").then(one), 1, id="done")

    @step(name="one")
    def changed(ctx: Context, x: int) -> datetime:  # same plan, another output type
        raise AssertionError("never runs")

    later = Engine(store=db)
    later.register(Workflow("w").then(changed))
    with pytest.raises(CodecError, match="done") as err:
        later.get("done")
    assert "no longer decodes" in str(err.value)
    (listed,) = later.list()
    assert (listed.id, listed.status) == ("done", Status.COMPLETED)
    assert isinstance(listed.error, CodecError)
