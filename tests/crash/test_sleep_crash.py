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
    engine = Engine(store="sqlite:///" + sys.argv[1])
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


def test_a_sleep_killed_midway_resumes_after_the_remaining_time(tmp_path: Path) -> None:
    db, log = tmp_path / "nap.db", tmp_path / "effects.log"
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
