"""A signal payload of the wrong shape never kills an instance (issue 7, item 10): an engine that
knows the instance's workflow refuses it with a SignalError and stores nothing; otherwise the
instance records it as rejected (`<wait key>@r<seq>`) and goes on waiting, also after a restart."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from tideflow import Engine, SignalError, Status, VirtualClock, Workflow, step
from tideflow.stores import SQLiteStore


@dataclass
class Approval:
    approved: bool
    by: str


@step
def close(ctx: object, a: Approval) -> str:
    return f"{a.approved} by {a.by}"


approval = Workflow("approval").wait_signal("approval", type=Approval).then(close)


def test_an_engine_that_knows_the_wait_refuses_a_payload_naming_the_field() -> None:
    engine = Engine()
    engine.run(approval, None, id="a")
    with pytest.raises(SignalError, match="missing required field 'approved' of Approval"):
        engine.signal("a", "approval", {"aproved": "yes", "by": "ada"})
    with pytest.raises(SignalError, match=r"expected bool at \$\.approved, got str 'yes'"):
        engine.signal("a", "approval", {"approved": "yes", "by": "ada"})
    assert engine.run_due() == []  # nothing was stored: nothing is due
    engine.signal("a", "approval", {"approved": True, "by": "ada"})
    assert [r.output for r in engine.run_due()] == ["True by ada"]


def test_an_untyped_wait_refuses_a_payload_that_json_cannot_restore() -> None:
    engine = Engine()
    engine.run(Workflow("u").wait_signal("go"), None, id="u")
    with pytest.raises(SignalError, match=r'signal "go" is a tuple at \$\.pair but its wait'):
        engine.signal("u", "go", {"pair": (1, 2)})
    engine.signal("u", "go", {"pair": [1, 2]})
    assert [r.output for r in engine.run_due()] == [{"pair": [1, 2]}]


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_payload_the_sender_could_not_check_is_rejected_and_the_wait_goes_on(
    tmp_path: Path, driver: str
) -> None:
    path = str(tmp_path / "s.db")
    clock = VirtualClock()
    owner = Engine(store=SQLiteStore(path), clock=clock)
    owner.run(approval, None, id="a")
    sender = Engine(store=SQLiteStore(path), clock=clock)  # has not registered "approval"
    sender.signal("a", "approval", {"aproved": "yes"})
    assert [r.status for r in owner.run_due()] == [Status.SUSPENDED]  # rejected, not failed
    assert owner.run_due() == []  # and not due again for it
    restarted = Engine(store=SQLiteStore(path), clock=clock)
    restarted.register(approval)
    sender.signal("a", "approval", {"approved": False, "by": "bob"})
    if driver == "sync":
        run = restarted.resume("a")
    else:
        run = asyncio.run(restarted.run_async(approval, None, id="a"))
    assert (run.status, run.output) == (Status.COMPLETED, "False by bob")
