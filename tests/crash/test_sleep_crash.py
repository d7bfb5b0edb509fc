"""A durable sleep survives SIGKILL: a fresh process honours the remaining time, never less."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.servers import BACKENDS

pytestmark = pytest.mark.crash

SLEEP = 3.0

PROGRAM = textwrap.dedent(
    f"""
    import asyncio, sys, time
    from tideflow import Context, Engine, Workflow, step

    log = sys.argv[2]

    def note(what: str) -> None:
        with open(log, "a") as f:
            f.write(f"{{what}} {{time.time()!r}}\\n")

    @step
    def before(ctx: Context, x: int) -> int:
        note("before")
        return x + 1

    @step
    def after(ctx: Context, x: int) -> int:
        note("after")
        return x * 10

    wf = Workflow("napper").then(before).sleep({SLEEP}).then(after)
    engine = Engine(store=sys.argv[1])
    if sys.argv[3] == "start":
        asyncio.run(engine.run_async(wf, 4, id="nap"))   # sleeps in-process: killed meanwhile
    else:
        engine.register(wf)
        first = [r.id for r in engine.run_due()]
        print("early", first, flush=True)
        time.sleep({SLEEP} + 0.2)
        print("late", [(r.id, r.status.value, r.output) for r in engine.run_due()], flush=True)
    """
)


def lines(log: Path) -> list[tuple[str, float]]:
    if not log.exists():
        return []
    return [(w, float(t)) for w, t in (ln.split() for ln in log.read_text().splitlines())]


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_a_sleep_killed_midway_resumes_after_the_remaining_time(
    tmp_path: Path, server: str | None
) -> None:
    log = tmp_path / "effects.log"
    db = server or f"sqlite:///{tmp_path / 'nap.db'}"
    a = subprocess.Popen([sys.executable, "-c", PROGRAM, str(db), str(log), "start"])
    deadline = time.monotonic() + 30
    while not lines(log) and time.monotonic() < deadline:  # wait for the first step's effect
        time.sleep(0.02)
    time.sleep(0.2)  # the sleep's due time is committed with that step
    os.kill(a.pid, signal.SIGKILL)
    a.wait(timeout=30)
    assert a.returncode == -signal.SIGKILL
    assert [w for w, _ in lines(log)] == ["before"]

    b = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(db), str(log), "resume"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    out = b.stdout.splitlines()
    assert out[0] == "early []"  # restarted before the due time: nothing runs early
    assert out[1] == "late [('nap', 'completed', 50)]"
    (w1, t1), (w2, t2) = lines(log)
    assert (w1, w2) == ("before", "after")
    assert t2 - t1 >= SLEEP


NAP = 0.3

TWO_SLEEPS = textwrap.dedent(
    f"""
    import asyncio, sys, time
    from tideflow import Context, Engine, Workflow, step

    log = sys.argv[2]

    def note(what: str, ctx: Context) -> None:
        with open(log, "a") as f:
            f.write(f"{{what}} {{ctx.attempt}}\\n")

    @step
    def first(ctx: Context, x: int) -> int:
        note("first", ctx)
        return x + 1

    @step
    def middle(ctx: Context, x: int) -> int:
        note("middle", ctx)
        return x * 10

    @step
    def last(ctx: Context, x: int) -> int:
        note("last", ctx)
        return x + 5

    wf = Workflow("naps").sleep({NAP}).then(first).sleep({NAP}).then(middle).sleep(1.5).then(last)
    engine = Engine(store=sys.argv[1])
    if sys.argv[3] == "start":
        asyncio.run(engine.run_async(wf, 4, id="naps"))   # killed in the last, long sleep
    else:
        engine.register(wf)
        run = asyncio.run(engine.run_async(wf, 4, id="naps"))  # resumed under asyncio too
        print(run.status.value, run.output, flush=True)
    """
)


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_run_async_killed_after_two_sleeps_resumes_without_rerunning_steps(
    tmp_path: Path, server: str | None
) -> None:
    """Steps that ran after an in-process sleep were recorded past the sleep's end: the process
    resuming after a SIGKILL runs none of them again."""
    log = tmp_path / "effects.log"
    db = server or f"sqlite:///{tmp_path / 'naps.db'}"
    a = subprocess.Popen([sys.executable, "-c", TWO_SLEEPS, str(db), str(log), "start"])
    deadline = time.monotonic() + 30
    while len(log.read_text().splitlines() if log.exists() else []) < 2:
        assert time.monotonic() < deadline, "the first worker never got past its second sleep"
        time.sleep(0.02)
    time.sleep(0.2)  # the middle step's result is committed as the long sleep starts
    os.kill(a.pid, signal.SIGKILL)
    a.wait(timeout=30)
    assert a.returncode == -signal.SIGKILL
    assert log.read_text().splitlines() == ["first 1", "middle 1"]
    b = subprocess.run(
        [sys.executable, "-c", TWO_SLEEPS, str(db), str(log), "resume"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert b.returncode == 0, b.stderr
    assert b.stdout.split() == ["completed", "55"]
    assert log.read_text().splitlines() == ["first 1", "middle 1", "last 1"]
