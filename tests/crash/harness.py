"""The crash-test harness: a case (a plan on a SQLite file), its uninterrupted reference run, a
worker killed at a chosen point, the resume in a fresh worker, and the invariants every such trial
must satisfy (see test_crash.py for what they guarantee)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.crash import worker
from tests.crash.worker import build, describe, read_effects, store_url
from tideflow import Engine, StepEvent, UnknownInstance, VirtualClock

ROOT = Path(__file__).resolve().parents[2]
KILLED = -signal.SIGKILL
WORKER_TIMEOUT = 60


# --------------------------------------------------------------------------------------------
# Running workflows in worker processes


@dataclass
class Case:
    """One workflow instance on one SQLite file, with its side-effect and kill-marker files."""

    dir: Path
    plan: list[Any]
    input: Any = 3
    name: str = "wf"
    id: str = "X"
    durability: str = "normal"
    driver: str = "sync"
    store: Path | None = None  # the SQLite file, when not dir/store.db (shared by several cases)
    gate: dict[str, str] | None = None  # see the worker
    url: str | None = None  # a server store's URL (its own namespace), instead of a SQLite file

    @property
    def db(self) -> Path:
        return self.store or self.dir / "store.db"

    @property
    def effects(self) -> Path:
        return self.dir / "effects.log"

    @property
    def marker(self) -> Path:
        return self.dir / "killed.jsonl"

    def key(self, position: str) -> str:
        return f"{self.id}/{position}"


@dataclass
class Ref:
    """An uninterrupted run: its result, history, side effects and step invocations."""

    result: dict[str, Any]
    history: list[StepEvent]
    effects: list[tuple[str, int]]
    invocations: list[worker.Invocation]


def reference(case: Case, driver: str | None = None) -> Ref:
    """Runs the case uninterrupted in this process, on the memory store and a virtual clock."""
    effects = case.dir / f"reference-{case.id}.log"
    effects.unlink(missing_ok=True)
    worker.configure(str(effects))
    try:
        clock = VirtualClock()
        engine = Engine(clock=clock)
        wf = build(case.name, case.plan)
        if (driver or case.driver) == "async":
            if worker.uses_signals([{"plan": case.plan}]):
                worker.signal_when_waiting(engine, case.id)
            run = asyncio.run(engine.run_async(wf, case.input, id=case.id))
        else:
            run = engine.run(wf, case.input, id=case.id)
            run = worker.finish(engine, run, lambda: clock.advance(worker.NAP / 4))
        return Ref(
            describe(run), engine.steps(case.id), read_effects(effects), worker.invocations()
        )
    finally:
        worker.configure(None)


def worker_command(
    case: Case,
    mode: str,
    kill: dict[str, Any] | None = None,
    driver: str | None = None,
    workflows: list[dict[str, Any]] | None = None,
) -> list[str]:
    """The command line of a worker: ``mode`` is "run" (this case's instance) or "recover"."""
    cfg = {
        "db": str(case.db),
        "durability": case.durability,
        "url": case.url,
        "effects": str(case.effects),
        "marker": str(case.marker),
        "workflows": workflows or [{"name": case.name, "plan": case.plan}],
        "mode": mode,
        "driver": driver or case.driver,
        "run": {"workflow": case.name, "id": case.id, "input": case.input},
        "kill": kill,
        "gate": case.gate,
    }
    return [sys.executable, "-m", "tests.crash.worker", json.dumps(cfg)]


def spawn(
    case: Case,
    mode: str,
    kill: dict[str, Any] | None = None,
    driver: str | None = None,
    workflows: list[dict[str, Any]] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs a worker to its end (or its death)."""
    return subprocess.run(
        worker_command(case, mode, kill, driver, workflows),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT,
        check=False,
    )


def crash(case: Case, kill: dict[str, Any], driver: str | None = None) -> dict[str, Any]:
    """Runs the case in a worker that must die at ``kill``; returns the killed invocation."""
    p = spawn(case, "run", kill, driver)
    assert p.returncode == KILLED, (
        f"the worker was not killed at {kill} (exit {p.returncode})\n{p.stdout}\n{p.stderr}"
    )
    lines = case.marker.read_text().splitlines()
    return json.loads(lines[-1])


def resume(case: Case, mode: str = "run", driver: str | None = None) -> list[dict[str, Any]]:
    """Resumes in a fresh worker (``engine.run`` with the same id, or ``engine.recover()``)."""
    p = spawn(case, mode, None, driver)
    assert p.returncode == 0, f"the resuming worker failed (exit {p.returncode})\n{p.stderr}"
    return [json.loads(line) for line in p.stdout.splitlines()]


def stored(case: Case, snapshot: bool = False) -> tuple[dict[str, Any], list[StepEvent]]:
    """The instance as a fresh engine in this process reads it from the file.

    With ``snapshot``, it reads a copy of the file (and of its WAL), so that the file a crashed
    worker left is first opened, and recovered, by the worker that resumes it, not by this
    process. Only for a file no process is writing to: the copy is not atomic."""
    db = case.db
    if snapshot and case.url is None:
        copy = case.dir / f"snapshot-{case.id}"
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir()
        for suffix in ("", "-wal"):
            src = case.db.with_name(case.db.name + suffix)
            if src.exists():
                shutil.copyfile(src, copy / src.name)
        db = copy / case.db.name
    with Engine(store=store_url(str(db), case.durability, case.url)) as engine:
        engine.register(build(case.name, case.plan))
        return describe(engine.get(case.id)), engine.steps(case.id)


def completed(history: list[StepEvent]) -> dict[str, int]:
    """position -> attempt of every completed step; a position may complete only once."""
    done = [e for e in history if e.status == "completed"]
    twice = [p for p, n in Counter(e.position for e in done).items() if n > 1]
    assert not twice, f"positions completed more than once: {twice}\n{history}"
    return {e.position: e.attempt for e in done}


# --------------------------------------------------------------------------------------------
# One crash and one resume, and the invariants every such trial must satisfy


@dataclass
class Trial:
    case: Case
    ref: Ref
    marker: dict[str, Any]  # the invocation the last crash killed (no position: outside a step)
    crash_state: dict[str, Any]  # the instance as the last crash left it ("absent": not created)
    crash_hist: list[StepEvent]
    segments: list[list[tuple[str, int]]]  # the side effects of each crashed process, in order
    after: list[tuple[str, int]]  # every side effect, after resuming
    result: dict[str, Any]  # what the resuming worker returned
    final: dict[str, Any]  # what a fresh engine reads from the file afterwards
    final_hist: list[StepEvent]

    @property
    def before(self) -> list[tuple[str, int]]:
        """The side effects when the last crashed worker died."""
        return [e for seg in self.segments for e in seg]

    @property
    def later(self) -> list[tuple[str, int]]:
        """The side effects of the resuming process."""
        return self.after[len(self.before) :]

    def lines(
        self, position: str, of: list[tuple[str, int]] | None = None
    ) -> list[tuple[str, int]]:
        """The side-effect lines of one position (in ``of``, by default all of them)."""
        k = self.case.key(position)
        return [e for e in (self.after if of is None else of) if e[0] == k]


def crash_and_resume(
    case: Case,
    kill: dict[str, Any] | list[dict[str, Any]],
    resume_mode: str = "run",
    resume_driver: str | None = None,
    ref: Ref | None = None,
    snapshot: bool = True,
) -> Trial:
    """Runs the case in a worker killed at ``kill`` (or in one worker per kill point, each killed
    at its own), reads what the last one committed (from a copy of the file unless another
    process may be writing to it), resumes it in a fresh worker, and checks the invariants."""
    ref = ref or reference(case)
    segments = []
    for k in kill if isinstance(kill, list) else [kill]:
        seen = len(read_effects(case.effects))
        marker = crash(case, k)
        segments.append(read_effects(case.effects)[seen:])
    try:
        crash_state, crash_hist = stored(case, snapshot)
    except UnknownInstance:  # killed before the instance was created
        crash_state, crash_hist = {"id": case.id, "status": "absent"}, []
    results = resume(case, resume_mode, resume_driver)
    if resume_mode == "recover" and crash_state["status"] in ("completed", "failed"):
        assert results == [], "recover() resumed a finished instance"
        results = [crash_state]
    assert [r["id"] for r in results] == [case.id]
    final, final_hist = stored(case)
    after = read_effects(case.effects)
    t = Trial(
        case, ref, marker, crash_state, crash_hist, segments, after, results[0], final, final_hist
    )
    check_invariants(t)
    return t


def poisoned(t: Trial) -> bool:
    """Whether the instance failed because one step's process died during it as many times as its
    retry budget allows (two crashes in one step without retries): then that is the expected
    outcome, checked here; a single crash must always stay survivable."""
    err = t.result.get("error") or ""
    if t.result["status"] != "failed" or "StepInterrupted" not in err:
        return False
    found = re.search(r"at position '([^']*)' died during its last attempt \(attempt (\d+)\)", err)
    assert found, err
    pos, attempts = found.group(1), int(found.group(2))
    assert len(t.segments) >= 2, f"a single crash failed the instance: {err}"
    # each crashed process started (at least) one of its attempts; a failed attempt counts too
    assert attempts >= len(t.segments), err
    assert t.final == t.result
    assert pos not in completed(t.final_hist), (pos, t.final_hist, t.crash_hist, t.segments)
    assert t.lines(pos, t.later) == [], "the poisoned step ran again"
    return True


def check_invariants(t: Trial) -> None:
    case, ref, m = t.case, t.ref, t.marker
    if poisoned(t):
        return
    # The result equals an uninterrupted run's, as returned and as stored.
    assert t.result == ref.result
    assert t.final == ref.result

    # Every position the uninterrupted run completed is completed exactly once. (Only when it
    # completed: when the instance fails, which other branches of a fan-out got to finish first
    # depends on the order steps ran in, which a crash changes: e.g. a flaky step killed in its
    # attempt 1 does not fail when it runs again as attempt 2, so its branch gets ahead.)
    done, ref_done = completed(t.final_hist), completed(ref.history)
    finished_ok = ref.result["status"] == "completed"
    if finished_ok:
        assert done.keys() == ref_done.keys()

    # Commits are atomic and the log is append-only: what was committed before the crash is still
    # there, unchanged, at the head of the history.
    assert t.final_hist[: len(t.crash_hist)] == t.crash_hist
    assert t.after[: len(t.before)] == t.before
    if t.crash_state["status"] in ("completed", "failed"):
        assert t.later == [], "a finished instance ran steps again"

    # The same positions did their side effects (same idempotency keys) as uninterrupted.
    if finished_ok:
        assert {k for k, _ in t.after} == {k for k, _ in ref.effects}

    # A step whose completion was committed before the crash never runs again: its last side
    # effect was written by a crashed process, with the committed attempt, and the final history
    # keeps that attempt. After one crash that is its only side effect (exactly once), with the
    # attempt of the uninterrupted run (1 for a plain step); after several, earlier crashed
    # processes may have run it before the one that committed it, with lower attempts.
    pre_done = completed(t.crash_hist)
    for pos, attempt in pre_done.items():
        assert t.lines(pos, t.later) == [], f"committed step {pos} ran again"
        assert t.lines(pos)[-1] == (case.key(pos), attempt)
        assert done[pos] == attempt
        if len(t.segments) == 1:
            assert t.lines(pos) == [(case.key(pos), attempt)]
            assert attempt == ref_done.get(pos, attempt)

    # Each process completes a position at most once, so a step's side effect appears at most
    # once per process (twice with one crash); all its lines share its one key, and a re-run
    # always has a higher attempt than any earlier run of that position.
    for segment in [*t.segments, t.later]:
        dupes = [k for k, n in Counter(k for k, _ in segment).items() if n > 1]
        assert not dupes, f"one process did the side effect of {dupes} twice"
    for k in {k for k, _ in t.after}:
        attempts = [a for kk, a in t.after if kk == k]
        assert attempts == sorted(set(attempts)), f"{k}: attempts {attempts} do not increase"

    # Only attempts that started count: with one crash of the sync driver (which starts one
    # step at a time) inside a step, every other step that had done nothing yet when the process
    # died completes with the attempt of the uninterrupted run.
    if case.driver == "sync" and len(t.segments) == 1 and m.get("phase") in ("start", "end"):
        for pos, attempt in done.items():
            if pos != m.get("position") and not t.lines(pos, t.before) and pos in ref_done:
                assert attempt == ref_done[pos], f"{pos} was charged an attempt it never started"

    # The attempt the history committed is the one whose side effect came last.
    for pos, attempt in done.items():
        assert t.lines(pos)[-1] == (case.key(pos), attempt)

    # The step the last crash killed: unless the kill raced past the commit, it was interrupted,
    # so it ran again, once, with the same key and a higher attempt.
    if m.get("position") is None:  # killed outside a step (backoff, open)
        return
    pos, key = m["position"], m["key"]
    assert key == case.key(pos)
    wrote = m["phase"] in ("end", "commit") and not m["fails"]
    if m["phase"] == "commit" and pre_done.get(pos, 0) >= m["attempt"]:
        # the kill landed after the commit (of this attempt, or of a retry that ran at once)
        assert t.lines(pos, t.later) == []
        return
    assert pos not in pre_done
    mine = t.lines(pos, t.segments[-1])
    expected = [(key, m["attempt"])] if wrote else []
    if m["phase"] == "commit":
        # The killer races on after the step returned: on a loaded machine it may land after
        # the engine committed a failed attempt and started the next one (a retry at once),
        # which then wrote its side effect too, uncommitted; only later attempts, in order.
        assert mine[: len(expected)] == expected, (mine, m)
        extra = mine[len(expected) :]
        assert all(k == key and a > m["attempt"] for k, a in extra), (mine, m)
    else:
        assert mine == expected, (mine, m)
    if pos not in done:  # the instance failed before it got to run it again
        assert not finished_ok
        assert t.lines(pos, t.later) == []
        return
    assert done[pos] > m["attempt"], f"{pos} re-ran with attempt {done[pos]} after {m}"
    assert t.lines(pos, t.later) == [(key, done[pos])]
