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

from tideflow import Context, Engine, Status, VirtualClock, Workflow, step


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


def main() -> int:
    clock = VirtualClock()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{os.path.join(tmp, 'expenses.db')}"
        engine = Engine(store=url, clock=clock)
        print("Two requests are filed; both wait for a manager:")
        for e in (Expense("exp-1", "ada", 320), Expense("exp-2", "bob", 4_200)):
            run = engine.run(approval, e, id=e.id)
            print(f"  {e.id}: {run.status.value}")

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
        history = engine.history("exp-2")
        for e in history:
            day = (e.started_at - history[0].started_at) / 86_400
            print(f"  exp-2 history: day {day:.0f}: {e.step} ({e.status})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
