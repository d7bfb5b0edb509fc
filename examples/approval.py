"""An expense approval: a request waits days for a manager's signal, and escalates to the finance
team if nobody answers within three days. Durable on SQLite; time runs on a virtual clock so that
the days pass in an instant.

    python examples/approval.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta

from tideflow import Context, Engine, Status, StepEvent, VirtualClock, WaitEvent, Workflow, step


@dataclass
class Expense:
    id: str
    employee: str
    amount: int


@dataclass
class Decision:
    approved: bool
    by: str


@step
def submit(ctx: Context, expense: Expense) -> Expense:
    """Files the request (here: prints what a notification would say)."""
    print(
        f"    [{ctx.instance_id}] {expense.employee} asks for {expense.amount} EUR; manager notified"
    )
    return expense


@step
def escalate(ctx: Context, expense: Expense) -> Decision:
    """Nobody answered in time: finance decides by rule (small amounts pass)."""
    print(f"    [{ctx.instance_id}] no answer in 3 days: escalated to finance")
    return Decision(approved=expense.amount <= 500, by="finance (escalation)")


@step
def settle(ctx: Context, decision: Decision) -> str:
    """Pays or closes the request."""
    verdict = "paid" if decision.approved else "rejected"
    return f"{verdict}, decided by {decision.by}"


approval = (
    Workflow("expense-approval")
    .then(submit)
    .wait_signal("decision", timeout=timedelta(days=3), type=Decision, on_timeout=escalate)
    .then(settle)
)


def describe(e: object, t0: float) -> str:
    """One history event as a line: steps, and what the wait did in between."""
    if isinstance(e, StepEvent):
        return f"day {(e.started_at - t0) / 86_400:.0f}: step {e.step} ({e.status})"
    if isinstance(e, WaitEvent) and e.kind == "timer":
        assert e.until is not None
        return f"waits for 'decision', at most until day {(e.until - t0) / 86_400:.0f}"
    if isinstance(e, WaitEvent) and e.kind == "signal":
        return f"signal {e.signal!r} (number {e.seq} sent to the instance) was consumed"
    if isinstance(e, WaitEvent) and e.kind == "timed_out":
        return "nobody answered in time: the wait timed out, on_timeout runs"
    return repr(e)


def main() -> int:
    clock = VirtualClock()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{os.path.join(tmp, 'expenses.db')}"
        engine = Engine(store=url, clock=clock)
        print("Two requests are filed; both wait for a manager:")
        for e in (Expense("exp-1", "ada", 320), Expense("exp-2", "bob", 4_200)):
            run = engine.run(approval, e, id=e.id)
            (waiting,) = run.waiting_for()
            days = (waiting.until - clock.now()) / 86_400
            print(
                f"  {e.id}: {run.status.value}, waiting for signal {waiting.signal!r} "
                f"(escalates in {days:.0f} days)"
            )

        clock.advance(timedelta(days=1).total_seconds())
        print("\nA day later the manager approves exp-1 (from another process: a fresh engine):")
        web = Engine(store=url, clock=clock)
        web.register(approval)
        web.signal("exp-1", "decision", {"approved": True, "by": "manager carol"})
        for run in engine.run_due():
            print(f"  {run.id}: {run.status.value}: {run.output}")

        clock.advance(timedelta(days=2).total_seconds())
        print("\nTwo more days pass with no answer for exp-2:")
        for run in engine.run_due():
            print(f"  {run.id}: {run.status.value}: {run.output}")

        done = engine.list(status=Status.COMPLETED)
        print(f"\nCompleted: {sorted(r.id for r in done)}")
        for iid in ("exp-1", "exp-2"):
            print(f"  {iid} history:")
            run = engine.get(iid)
            for e in run.history():
                print(f"    {describe(e, run.created_at)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
