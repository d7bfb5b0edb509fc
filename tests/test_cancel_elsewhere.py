"""`cancel()` from a process that cannot run the instance's plan (issue 7, item 11): the request is
stored, which is the success; the Run comes back as stored, and whichever process drives the
instance next applies the cancellation."""

from __future__ import annotations

import os
from pathlib import Path

from tideflow import Context, Engine, Status, VirtualClock, Workflow, step

refunds: list[str] = []


@step
def charge(ctx: Context, amount: int) -> int:
    return amount


@step
def refund(ctx: Context, reason: str) -> str:
    refunds.append(reason)
    return "refunded"


order = Workflow("order").then(charge).wait_signal("shipped").on_cancel(refund)


def test_cancel_from_a_process_without_the_workflow_returns_the_stored_run(tmp_path: Path) -> None:
    refunds.clear()
    url = f"sqlite:///{os.path.join(tmp_path, 'o.db')}"
    clock = VirtualClock()
    worker = Engine(store=url, clock=clock)
    worker.run(order, 30, id="o-1")

    admin = Engine(store=url, clock=clock)  # has not registered "order"
    run = admin.cancel("o-1", "changed my mind")  # raised UnknownWorkflow before the fix
    assert (run.id, run.workflow, run.status) == ("o-1", "order", Status.SUSPENDED)
    assert run.error is None and refunds == []

    (done,) = worker.run_due()  # the process that runs the plan applies the stored request
    assert done.status is Status.CANCELLED and refunds == ["changed my mind"]
    assert admin.get("o-1").status is Status.CANCELLED


def test_cancel_from_a_process_with_another_version_returns_the_stored_run(tmp_path: Path) -> None:
    refunds.clear()
    url = f"sqlite:///{os.path.join(tmp_path, 'o.db')}"
    clock = VirtualClock()
    worker = Engine(store=url, clock=clock)
    worker.run(order, 30, id="o-2")

    newer = Engine(store=url, clock=clock)
    newer.register(Workflow("order", version="2").then(charge).on_cancel(refund))
    run = newer.cancel("o-2", "too late")  # raised VersionMismatch before the fix
    assert run.status is Status.SUSPENDED and refunds == []
    assert worker.run_due()[0].status is Status.CANCELLED and refunds == ["too late"]


def test_a_stored_cancel_is_not_overtaken_by_a_signal_sent_after_it(tmp_path: Path) -> None:
    """The admin's cancel() returned: the cancellation is decided. A signal that arrives after it
    (or that waited in the inbox, unconsumed) must not complete the instance on the next resume
    (it did: the rebuild handed the signal to the wait before it looked at the request)."""
    refunds.clear()
    url = f"sqlite:///{os.path.join(tmp_path, 'o.db')}"
    clock = VirtualClock()
    worker = Engine(store=url, clock=clock)
    worker.run(order, 30, id="o-3")
    admin = Engine(store=url, clock=clock)
    assert admin.cancel("o-3", "stop").status is Status.SUSPENDED
    admin.signal("o-3", "shipped", "parcel")  # the instance is still stored as suspended

    (done,) = worker.run_due()
    assert done.status is Status.CANCELLED and refunds == ["stop"]
    assert [e.kind for e in done.history()] == ["step", "cancelled", "step"]


def test_cancel_in_the_process_wins_over_a_signal_still_in_the_inbox() -> None:
    refunds.clear()
    engine = Engine(clock=VirtualClock())
    engine.run(order, 30, id="o-4")
    engine.signal("o-4", "shipped", "parcel")  # persisted, not consumed yet
    run = engine.cancel("o-4", "stop")  # came back COMPLETED
    assert run.status is Status.CANCELLED and refunds == ["stop"]
