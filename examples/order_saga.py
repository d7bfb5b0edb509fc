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

from tideflow import Context, Engine, Retry, Run, Workflow, step


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


checkout = (
    Workflow("checkout")
    .then(reserve)
    .then(charge)
    .branch(lambda r: r.total > 1000, then=manual_review, otherwise=auto_approve)
    .parallel(send_email, update_ledger)
    .then(finish)
)


def show(run: Run) -> None:
    """Prints the instance's step history and its result."""
    print(f"  instance {run.id}: {run.status.value}")
    t0 = min((e.started_at for e in run.history()), default=0.0)
    for e in run.history():
        mark = "ok  " if e.status == "completed" else "FAIL"
        extra = f"  ({e.error})" if e.error else ""
        print(
            f"    +{(e.started_at - t0) * 1000:7.2f} ms  {mark} {e.step:<14} attempt {e.attempt}"
            f"  position {e.position:<5} {e.duration * 1e6:8.1f} µs{extra}"
        )
    print(f"  output: {run.output!r}")


def main() -> int:
    print("The plan, as Mermaid:\n")
    print(checkout.to_mermaid())

    order = Order("order-42", "lamp", 3, Decimal("499.90"))
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
