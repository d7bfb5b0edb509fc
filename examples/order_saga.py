"""An order checkout: reserve stock (retried), charge (async), route big orders to a manual review,
then notify and book in parallel. Runs in memory and on SQLite, and prints what happened.

    python examples/order_saga.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from dataclasses import dataclass
from decimal import Decimal

from tideflow import (
    Context,
    DecisionEvent,
    Engine,
    InterruptedStep,
    Retry,
    Run,
    StepEvent,
    Workflow,
    step,
)


@dataclass
class Order:
    id: str
    sku: str
    qty: int
    unit_price: Decimal


@dataclass
class Reservation:
    order_id: str
    total: Decimal
    hold: str


@dataclass
class Receipt:
    order_id: str
    total: Decimal
    charge_id: str


# A stand-in for a flaky inventory service: the first call for each order times out.
_inventory_calls: dict[str, int] = {}


@step(retry=Retry(max_attempts=5, initial_delay=0.05, multiplier=2.0, max_delay=1.0))
def reserve(ctx: Context, order: Order) -> Reservation:
    """Puts the stock on hold (the inventory service is flaky: the first call times out)."""
    _inventory_calls[ctx.idempotency_key] = _inventory_calls.get(ctx.idempotency_key, 0) + 1
    if _inventory_calls[ctx.idempotency_key] == 1:
        raise TimeoutError("inventory service did not answer")
    return Reservation(order.id, order.unit_price * order.qty, hold=f"hold-{ctx.idempotency_key}")


_crash_at: set[str] = set()  # idempotency keys at which the demo simulates a crash


@step
async def charge(ctx: Context, r: Reservation) -> Receipt:
    """Charges the card; the idempotency key makes a retried charge safe."""
    await asyncio.sleep(0)  # a real payment API call would be awaited here
    if ctx.idempotency_key in _crash_at:
        _crash_at.discard(ctx.idempotency_key)
        raise KeyboardInterrupt  # stands for the process being killed mid-step
    return Receipt(r.order_id, r.total, charge_id=f"ch-{ctx.idempotency_key}")


@step
def manual_review(ctx: Context, receipt: Receipt) -> Receipt:
    """Big orders get a second look (here: approved at once)."""
    return receipt


@step
def auto_approve(ctx: Context, receipt: Receipt) -> Receipt:
    """Small orders pass straight through."""
    return receipt


@step
def send_email(ctx: Context, receipt: Receipt) -> str:
    """Tells the customer."""
    return f"mailed receipt {receipt.charge_id}"


@step
def update_ledger(ctx: Context, receipt: Receipt) -> str:
    """Books the sale."""
    return f"booked {receipt.total}"


@step
def finish(ctx: Context, done: tuple[str, str]) -> str:
    """Summarises the order."""
    return " and ".join(done)


def is_large_order(receipt: Receipt) -> bool:
    """Orders above 1000 get a manual review (a named function: the plan drawing shows its name)."""
    return receipt.total > 1000


checkout = (
    Workflow("checkout")
    .then(reserve)
    .then(charge)
    .branch(is_large_order, then=manual_review, otherwise=auto_approve)
    .parallel(send_email, update_ledger)
    .then(finish)
)


LEGEND = """\
How to read a history line: the time since the first attempt started, ok or FAIL, the step, its
attempt number and its position in the plan: `0` is the first node of the workflow, `1` the
second; `2.t` is the `then` side of the branch at node 2 (`2.f` would be `otherwise`); `3.p0` and
`3.p1` are the two branches of the parallel block at node 3. The position (with the instance id)
makes `ctx.idempotency_key`, e.g. `order-42/1` for the charge. Lines starting with `->` are the
decisions the engine checkpointed between steps, so that a resume takes the same path.

`FAIL reserve attempt 1` is expected: the stand-in inventory service times out on its first call
for each order, and the step's Retry policy runs it again 50 ms later (attempt 2 succeeds).
"""


def show(run: Run) -> None:
    """Prints the instance's history (step attempts and decisions) and its result."""
    print(f"  instance {run.id}: {run.status.value}")
    history = run.history()
    t0 = min((e.started_at for e in history if isinstance(e, StepEvent)), default=0.0)
    for e in history:
        if isinstance(e, StepEvent):
            mark = "ok  " if e.status == "completed" else "FAIL"
            extra = f"  ({e.error})" if e.error else ""
            print(
                f"    +{(e.started_at - t0) * 1000:7.2f} ms  {mark} {e.step:<14} attempt "
                f"{e.attempt}  position {e.position:<5} {e.duration * 1e6:8.1f} µs{extra}"
            )
        elif isinstance(e, InterruptedStep):
            print(
                f"                INTERRUPTED {e.step:<7} attempt {e.attempt}  position "
                f"{e.position:<5} (the process died during it)"
            )
        elif isinstance(e, DecisionEvent) and e.kind == "branch":
            side = "then" if e.value else "otherwise"
            print(
                f"                -> branch at {e.position}: is_large_order was {e.value}: {side}"
            )
    print(f"  output: {run.output!r}")


def main() -> int:
    print("The plan, as Mermaid (paste it into https://mermaid.live to see it drawn; the")
    print("rhombus is the branch, named after its condition function):\n")
    print(checkout.to_mermaid())

    order = Order("order-42", "lamp", 3, Decimal("499.90"))
    print(LEGEND)
    print("1. In memory (the default store):")
    engine = Engine()
    run = engine.run(checkout, order, id="order-42")
    show(run)
    again = engine.run(checkout, order, id="order-42")
    print(f"  running order-42 again returns the stored result: {again.output!r}")

    small = Order("order-7", "pen", 2, Decimal("1.50"))
    run = asyncio.run(engine.run_async(checkout, small, id="order-7"))
    print("  the same workflow on asyncio (run_async):")
    show(run)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "orders.db")
        try:
            disk = Engine(store=f"sqlite:///{path}")
        except Exception as e:  # the SQLite store arrives with the durability work
            print(f"\n2. On SQLite: not available in this build ({e})")
            return 0
        print(f"\n2. On SQLite ({path}):")
        _inventory_calls.clear()  # a fresh inventory service: the first call times out again
        run = disk.run(checkout, order, id="order-42")
        show(run)
        reopened = Engine(store=f"sqlite:///{path}")
        reopened.register(checkout)
        print(f"  a fresh engine on the same file sees: {reopened.get('order-42').status.value}")

        print("\n3. A crash in the middle of a step, then a restart:")
        _crash_at.add("order-99/1")  # the process "dies" while charging order-99
        try:
            disk.run(checkout, Order("order-99", "desk", 1, Decimal("250")), id="order-99")
        except KeyboardInterrupt:
            print(
                f"  the process died during 'charge'; stored status: {disk.get('order-99').status.value}"
            )
        restarted = Engine(store=f"sqlite:///{path}")
        restarted.register(checkout)
        (run,) = restarted.recover()  # resumes every unfinished instance it knows
        print("  a new process recovers it: completed steps are read back, not run again;")
        print("  the interrupted step runs again with the same idempotency key, attempt 2:")
        show(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
