"""The workflows the worker tests run. Every step appends one JSON line to the file named by
``TIDEFLOW_TEST_LOG`` (pid, instance, step, position, attempt, idempotency key, start and end
times), so a test can count what ran where; a step's behaviour is set by its input."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from tideflow import Context, Retry, Workflow, step


def note(ctx: Context, **extra: Any) -> None:
    """Appends what this attempt is to the test's log (one line, written at once)."""
    path = os.environ.get("TIDEFLOW_TEST_LOG")
    if not path:
        return
    line = {
        "pid": os.getpid(),
        "id": ctx.instance_id,
        "step": ctx.step_name,
        "key": ctx.position,
        "attempt": ctx.attempt,
        "idem": ctx.idempotency_key,
        **extra,
    }
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


@step
def inc(ctx: Context, x: int) -> int:
    """Adds one."""
    note(ctx)
    return x + 1


CHAIN = Workflow("chain").then(inc).then(inc).then(inc).then(inc).then(inc)


@step
def items(ctx: Context, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Makes ``spec["n"]`` items that each nap ``spec["nap"]`` seconds."""
    note(ctx)
    return [{"i": i, "nap": spec["nap"]} for i in range(spec["n"])]


@step
def nap(ctx: Context, item: dict[str, Any]) -> int:
    """Sleeps the item's nap and returns its number squared."""
    t0 = time.time()
    time.sleep(item["nap"])
    note(ctx, start=t0, end=time.time())
    return int(item["i"]) ** 2


@step
def total(ctx: Context, xs: list[int]) -> int:
    """Sums the squares."""
    note(ctx)
    return sum(xs)


FAN = Workflow("fan").then(items).map(nap).then(total)


@step
def slow(ctx: Context, spec: dict[str, Any]) -> str:
    """Sleeps ``spec["seconds"]`` (notes its start first, so a test knows it is running)."""
    note(ctx, phase="start")
    time.sleep(spec["seconds"])
    note(ctx, phase="end")
    return "slept"


@step
def after(ctx: Context, x: str) -> str:
    """Runs once the slow step is done."""
    note(ctx)
    return x + "!"


SLOW = Workflow("slow").then(slow).then(after)


@step
def poison(ctx: Context, x: int) -> int:
    """Kills the process that runs it, every time."""
    note(ctx)
    os.kill(os.getpid(), signal.SIGKILL)
    return x


POISON = Workflow("poison").then(inc).then(poison)


@step(retry=Retry(max_attempts=3, initial_delay=0.2))
def flaky(ctx: Context, x: int) -> int:
    """Fails on its first attempt, then returns its input."""
    note(ctx)
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return x


@step
def done(ctx: Context, x: Any) -> Any:
    """Returns its input."""
    note(ctx)
    return x


GATED = Workflow("gated").then(inc).wait_signal("go").then(done)
TIMED = Workflow("timed").then(inc).sleep(0.3).then(flaky)


@step(queue="gpu")
def on_gpu(ctx: Context, x: int) -> int:
    """Runs only on a worker that serves the ``gpu`` queue."""
    note(ctx)
    return x * 10


ROUTED = Workflow("routed").then(inc).then(on_gpu).then(inc)

WORKFLOWS = [CHAIN, FAN, SLOW, POISON, GATED, TIMED, ROUTED]


# -- fault tests (tests/workers/test_faults.py) ---------------------------------------------


@step
def pace(ctx: Context, x: int) -> dict[str, Any]:
    """Turns a number into the spec of ``slow`` (sleep that many seconds)."""
    note(ctx)
    return {"seconds": float(x)}


@step
def poison_item(ctx: Context, item: dict[str, Any]) -> int:
    """Kills the process that runs it, every time (a poison step inside a map)."""
    note(ctx)
    os.kill(os.getpid(), signal.SIGKILL)
    return int(item["i"])


#: inc, then pace, then the slow step, then after: a step before the slow one that must not rerun.
PACED = Workflow("paced").then(inc).then(pace).then(slow).then(after)
#: A map whose every item kills its worker (handed out as tasks).
POISON_MAP = Workflow("poison_map").then(items).map(poison_item).then(total)

WORKFLOWS += [PACED, POISON_MAP]


# -- test_scaleout.py (part 2): a second version of CHAIN, and a step that notes when it ran ----


@step
def double(ctx: Context, x: int) -> int:
    """Doubles (the step of the second version of ``chain``)."""
    note(ctx)
    return x * 2


#: A second version of ``chain`` with other steps: another plan hash, so the workers that
#: register only ``WORKFLOWS`` never take its instances.
CHAIN_V2 = Workflow("chain", version="2").then(double).then(double)


@step
def stamp(ctx: Context, x: Any) -> Any:
    """Notes the time it runs (to measure the latency from ``engine.start``)."""
    note(ctx, at=time.time())
    return x


STAMPED = Workflow("stamped").then(stamp)

#: What a worker of the second version registers.
WORKFLOWS_V2 = [CHAIN_V2]
#: ``WORKFLOWS`` and the workflow with a time stamp.
WORKFLOWS_STAMPED = [*WORKFLOWS, STAMPED]
