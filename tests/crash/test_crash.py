"""Crash tests: run workflows in a subprocess on a SQLite file, SIGKILL it at chosen points, resume
in a fresh process, and check what the engine guarantees:

- the result equals an uninterrupted run (computed in this process on the memory store);
- every step boundary is committed atomically: what the crashed process committed is still in the
  history after resuming, unchanged, and a step whose completion was committed never runs again
  (its side effect appears exactly once, with the attempt the history recorded);
- a step that was running when the process died runs again with the SAME idempotency key and a
  HIGHER ``ctx.attempt``.

Why "exactly once" only holds for committed steps: a step that wrote its side effect and was then
killed before its result was committed (kill phase ``end``, or a ``commit`` kill that lands before
the commit) is indistinguishable, on resume, from one that never ran; the engine runs it again and
its side effect then appears twice, with one key and increasing attempts. That is the documented
at-least-once-per-crash behaviour and the reason idempotency keys exist: a real side effect would
be deduplicated on the key. So the assertions are: committed => exactly once; interrupted => at most
once more per crash, same key, higher attempt.

Kill points are deterministic: the worker (``tests/crash/worker.py``) SIGKILLs itself from inside
the step invocation the test names (see its docstring for the phases), except the ``commit`` phase,
which deliberately races the SQLite commit and is checked against the committed history.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.crash import worker
from tests.crash.worker import build, describe, read_effects, store_url
from tideflow import Engine, StepEvent, UnknownInstance, VirtualClock

pytestmark = pytest.mark.crash

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
        engine = Engine(clock=VirtualClock())
        wf = build(case.name, case.plan)
        if (driver or case.driver) == "async":
            run = asyncio.run(engine.run_async(wf, case.input, id=case.id))
        else:
            run = engine.run(wf, case.input, id=case.id)
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
    if snapshot:
        copy = case.dir / f"snapshot-{case.id}"
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir()
        for suffix in ("", "-wal"):
            src = case.db.with_name(case.db.name + suffix)
            if src.exists():
                shutil.copyfile(src, copy / src.name)
        db = copy / case.db.name
    engine = Engine(store=store_url(str(db), case.durability))
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


def check_invariants(t: Trial) -> None:
    case, ref, m = t.case, t.ref, t.marker
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
    if m["phase"] == "commit" and pre_done.get(pos) == m["attempt"]:
        assert t.lines(pos, t.later) == []
        return
    assert pos not in pre_done
    assert t.lines(pos, t.segments[-1]) == ([(key, m["attempt"])] if wrote else [])
    if pos not in done:  # the instance failed before it got to run it again
        assert not finished_ok
        assert t.lines(pos, t.later) == []
        return
    assert done[pos] > m["attempt"], f"{pos} re-ran with attempt {done[pos]} after {m}"
    assert t.lines(pos, t.later) == [(key, done[pos])]


# --------------------------------------------------------------------------------------------
# (a) every step boundary of a 10-step chain

CHAIN = [["step"]] * 10


# Every boundary on the default durability; the first, a middle and the last one on "full".
CHAIN_KILLS = [(k, phase, "normal") for k in range(10) for phase in ("start", "end")] + [
    (k, phase, "full") for k in (0, 5, 9) for phase in ("start", "end")
]


@pytest.mark.parametrize(("k", "phase", "durability"), CHAIN_KILLS)
def test_chain_killed_at_every_step_boundary(
    tmp_path: Path, k: int, phase: str, durability: str
) -> None:
    """``start`` of step k: steps 0..k-1 committed, step k handed out but not started. ``end``
    of step k: its side effect is done, its result not committed."""
    case = Case(tmp_path, CHAIN, durability=durability)
    t = crash_and_resume(case, {"phase": phase, "position": str(k)})
    assert t.crash_state["status"] == "running"
    assert [(e.position, e.attempt, e.status) for e in t.crash_hist] == [
        (str(i), 1, "completed") for i in range(k)
    ]
    mine = [(case.key(str(k)), 1)] if phase == "end" else []
    assert t.before == [(case.key(str(i)), 1) for i in range(k)] + mine
    # The resumed process starts at step k, attempt 2, and runs the rest once, attempt 1.
    assert t.later == [(case.key(str(k)), 2)] + [(case.key(str(i)), 1) for i in range(k + 1, 10)]
    assert [(e.position, e.attempt) for e in t.final_hist] == [
        (str(i), 2 if i == k else 1) for i in range(10)
    ]


@pytest.mark.parametrize(
    ("k", "delay_us", "durability"),
    [(0, 0, "normal"), (3, 100, "full"), (6, 200, "normal"), (9, 0, "full"), (9, 300, "normal")],
)
def test_chain_kill_racing_the_commit(
    tmp_path: Path, k: int, delay_us: int, durability: str
) -> None:
    """A killer process strikes ``delay_us`` after step k returns, racing the engine's commit of
    step k (it lands before, inside or after it: all outcomes are legal, and the committed history
    says which one happened). Either way the SQLite file is consistent: step k and everything
    after it ran once if their completion is in the history, else once more with attempt 2."""
    case = Case(tmp_path, CHAIN, durability=durability)
    t = crash_and_resume(case, {"phase": "commit", "position": str(k), "delay_us": delay_us})
    assert len(completed(t.crash_hist)) >= k
    assert t.crash_state["status"] in ("running", "completed")


@pytest.mark.parametrize("delay_us", [0, 25_000, 60_000, 90_000, 130_000])
def test_killed_while_creating_the_store_and_the_instance(tmp_path: Path, delay_us: int) -> None:
    """A killer strikes ``delay_us`` after the worker starts opening a new SQLite file: the kill
    lands while it creates the file and its schema, creates the instance, or runs its first steps.
    Whatever it left behind, a fresh process opens the file and runs the instance to the same
    result, re-running no committed step."""
    case = Case(tmp_path, CHAIN, durability="full")
    t = crash_and_resume(case, {"phase": "open", "delay_us": delay_us})
    assert t.crash_state["status"] in ("absent", "running", "completed")


# --------------------------------------------------------------------------------------------
# (b) in the middle of a step


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("phase", ["start", "end"])
def test_killed_in_the_middle_of_an_async_step(tmp_path: Path, phase: str, driver: str) -> None:
    """Killed inside an async step after it awaited: it runs again with the same key, attempt 2."""
    case = Case(tmp_path, [["step"], ["astep"], ["step"]], driver=driver)
    t = crash_and_resume(case, {"phase": phase, "position": "1"}, resume_driver=driver)
    assert (t.marker["key"], t.marker["attempt"]) == ("X/1", 1)
    assert t.lines("0") == [("X/0", 1)]
    assert t.lines("1") == ([("X/1", 1)] if phase == "end" else []) + [("X/1", 2)]
    assert t.lines("2") == [("X/2", 1)]


# --------------------------------------------------------------------------------------------
# (c) during a parallel fan-out

FAN_OUT = [
    ["step"],
    ["par", [["seq", [["step"], ["step"]]], ["astep"], ["seq", [["step"], ["astep"]]]]],
    ["step"],
]


# Every branch step, both phases, on the sync driver (which commits a wave of branch steps at
# once); on the async driver (which runs the async branches concurrently), one phase each.
FAN_OUT_KILLS = [(i, phase, "sync") for i in range(5) for phase in ("start", "end")] + [
    (i, ("start", "end")[i % 2], "async") for i in range(5)
]


@pytest.mark.parametrize(("i", "phase", "driver"), FAN_OUT_KILLS)
def test_killed_during_a_parallel_fan_out(tmp_path: Path, i: int, phase: str, driver: str) -> None:
    case = Case(tmp_path, FAN_OUT, driver=driver)
    ref = reference(case)
    inside = [inv for inv in ref.invocations if inv["position"].startswith("1.")]
    assert len(inside) == 5
    pos = inside[i]["position"]
    t = crash_and_resume(
        case,
        {"phase": phase, "position": pos},
        resume_mode="recover",
        resume_driver=driver,
        ref=ref,
    )
    # Before the fan-out and after the fan-in: exactly once, attempt 1.
    assert t.lines("0") == [("X/0", 1)]
    assert t.lines("2") == [("X/2", 1)]
    # The killed branch step re-ran with attempt 2 (the resumed process hands every branch step
    # that was enqueued and not committed out again, as attempt 2).
    assert completed(t.final_hist)[pos] == 2
    others = [p for p in completed(t.final_hist) if p != pos]
    if driver == "sync":
        # The sync driver runs the branches one after another and commits each as it finishes:
        # every other branch step ran exactly once.
        for p in others:
            assert len(t.lines(p)) == 1, (p, t.lines(p))
        return
    # Under asyncio, async branch steps that finished in the same turn of the event loop as the
    # killed one are committed together with it (group commit), so they may have run twice, with
    # their one key and attempts 1 then 2; a step committed before the crash never runs again.
    for p in others:
        lines = t.lines(p)
        if len(lines) == 2:
            assert p not in completed(t.crash_hist)
            assert [a for _, a in lines] == [1, 2]


# --------------------------------------------------------------------------------------------
# (d) inside a loop

# 1 -> inc -> 2; the loop adds 2 per iteration until a multiple of 5: 4, 6, 8, 10 (4 iterations).
LOOP = [["inc"], ["loop", "five", 10, ["seq", [["inc"], ["inc"]]]], ["step"]]


@pytest.mark.parametrize(
    ("pos", "phase"),
    [
        ("1.i0.0", "start"),
        ("1.i0.1", "end"),
        ("1.i1.0", "end"),
        ("1.i2.1", "start"),
        ("1.i3.0", "start"),
        ("1.i3.1", "end"),
        ("2", "start"),
    ],
)
def test_killed_inside_a_loop(tmp_path: Path, pos: str, phase: str) -> None:
    case = Case(tmp_path, LOOP, input=1)
    t = crash_and_resume(case, {"phase": phase, "position": pos}, resume_mode="recover")
    assert t.result["output"] == (10 * 7919 + zlib.crc32(b"step4")) % 1_000_003
    loop_positions = [f"1.i{i}.{j}" for i in range(4) for j in range(2)]
    assert list(completed(t.final_hist)) == ["0", *loop_positions, "2"]
    # Iterations before the killed one are not run again: their decisions and outputs are read
    # back; the killed step runs again with attempt 2; the later steps run once, attempt 1.
    order = ["0", *loop_positions, "2"]
    for p in order:
        before_kill = order.index(p) < order.index(pos)
        if before_kill:
            assert t.lines(p) == [(case.key(p), 1)]
        elif p == pos:
            assert t.lines(p)[-1] == (case.key(p), 2)
        else:
            assert t.lines(p) == [(case.key(p), 1)]


# --------------------------------------------------------------------------------------------
# Retries and crashes


def test_killed_while_waiting_to_retry(tmp_path: Path) -> None:
    """Killed in the backoff after a failed attempt: the instance is stored as suspended with the
    failure; recover() waits out the backoff and runs attempt 2, once."""
    case = Case(tmp_path, [["step"], ["backoff"], ["step"]])
    t = crash_and_resume(case, {"phase": "backoff"}, resume_mode="recover")
    assert t.crash_state["status"] == "suspended"
    assert [(e.position, e.attempt, e.status) for e in t.crash_hist] == [
        ("0", 1, "completed"),
        ("1", 1, "failed"),
    ]
    assert t.later == [("X/1", 2), ("X/2", 1)]
    assert [(e.position, e.attempt, e.status) for e in t.final_hist] == [
        ("0", 1, "completed"),
        ("1", 1, "failed"),
        ("1", 2, "completed"),
        ("2", 1, "completed"),
    ]


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_killed_during_a_retry_attempt(tmp_path: Path, driver: str) -> None:
    """Attempt 1 fails (committed), attempt 2 (handed out by the retry timer) is killed: the
    re-run is attempt 3, same key."""
    case = Case(tmp_path, [["step"], ["flaky"], ["step"]], driver=driver)
    t = crash_and_resume(case, {"phase": "start", "position": "1", "attempt": 2})
    assert (t.marker["key"], t.marker["attempt"]) == ("X/1", 2)
    assert t.after == [("X/0", 1), ("X/1", 3), ("X/2", 1)]
    assert [(e.position, e.attempt, e.status) for e in t.final_hist] == [
        ("0", 1, "completed"),
        ("1", 1, "failed"),
        ("1", 3, "completed"),
        ("2", 1, "completed"),
    ]


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_an_interrupted_attempt_counts_towards_the_retry_budget(
    tmp_path: Path, driver: str
) -> None:
    """A step allowed 2 attempts is killed in attempt 1: after resuming it gets one more attempt
    (2), and when that fails the instance fails, "after 2 attempts" (a step that keeps crashing
    the process cannot retry forever)."""
    case = Case(tmp_path, [["step"], ["doomed"], ["step"]], driver=driver)
    crash(case, {"phase": "start", "position": "1", "attempt": 1})
    [result] = resume(case)
    assert result["status"] == "failed"
    assert (
        "step 'doomed2' failed after 2 attempts: Flaky: doomed2 fails on attempt 2"
        in (result["error"])
    )
    assert stored(case)[0] == result
    _, hist = stored(case)
    assert [(e.position, e.attempt, e.status) for e in hist] == [
        ("0", 1, "completed"),
        ("1", 2, "failed"),
    ]
    assert read_effects(case.effects) == [("X/0", 1)]


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_killed_twice_in_the_same_step(tmp_path: Path, driver: str) -> None:
    """Two processes die in step 2 in a row: the third runs it with attempt 3, same key."""
    case = Case(tmp_path, [["step"]] * 5, driver=driver)
    kill = {"phase": "start", "position": "2"}
    t = crash_and_resume(case, [kill, kill], resume_driver=driver)
    first, second = (json.loads(line) for line in case.marker.read_text().splitlines())
    assert (first["key"], first["attempt"]) == ("X/2", 1)
    assert (second["key"], second["attempt"]) == ("X/2", 2)
    assert t.segments == [[("X/0", 1), ("X/1", 1)], []]
    assert t.later == [("X/2", 3), ("X/3", 1), ("X/4", 1)]


@pytest.mark.parametrize("delay_us", [0, 1000, 3000, 6000])
def test_killed_again_while_resuming(tmp_path: Path, delay_us: int) -> None:
    """The first worker dies at the end of step 4 (its side effect done, not committed); the
    worker resuming it is killed ``delay_us`` after it calls ``engine.run``: while it reads and
    replays the records, records that it hands step 4 out again, or runs the next steps."""
    case = Case(tmp_path, CHAIN)
    kills = [{"phase": "end", "position": "4"}, {"phase": "run", "delay_us": delay_us}]
    t = crash_and_resume(case, kills)
    assert t.segments[0] == [(case.key(str(i)), 1) for i in range(5)]
    assert len(completed(t.crash_hist)) >= 4


# --------------------------------------------------------------------------------------------
# recover() resumes every unfinished instance


def test_recover_resumes_every_unfinished_instance(tmp_path: Path) -> None:
    chain = {"name": "chain", "plan": CHAIN}
    fan = {"name": "fan", "plan": FAN_OUT}
    cases = {
        "c1": (Case(tmp_path, CHAIN, name="chain", id="c1"), {"phase": "start", "position": "4"}),
        "c2": (Case(tmp_path, CHAIN, name="chain", id="c2"), {"phase": "end", "position": "9"}),
        "f1": (Case(tmp_path, FAN_OUT, name="fan", id="f1"), {"phase": "end", "position": "1.p1"}),
        "done": (Case(tmp_path, CHAIN, name="chain", id="done"), None),
    }
    refs = {iid: reference(c) for iid, (c, _) in cases.items()}
    for c, kill in cases.values():
        p = spawn(c, "run", kill, workflows=[chain, fan])
        assert p.returncode == (0 if kill is None else KILLED), p.stderr
    before = read_effects(tmp_path / "effects.log")
    p = spawn(cases["done"][0], "recover", workflows=[chain, fan])
    assert p.returncode == 0, p.stderr
    results = {r["id"]: r for r in map(json.loads, p.stdout.splitlines())}
    assert sorted(results) == ["c1", "c2", "f1"]
    for iid, r in results.items():
        assert r == refs[iid].result
    later = read_effects(tmp_path / "effects.log")[len(before) :]
    assert not [k for k, _ in later if k.startswith("done/")]
    assert Counter(k.split("/")[0] for k, _ in later) == {"c1": 6, "c2": 1, "f1": 6}
    assert ("c1/4", 2) in later and ("c2/9", 2) in later and ("f1/1.p1", 2) in later


# --------------------------------------------------------------------------------------------
# Several processes on one file


@pytest.mark.parametrize(("durability", "delay_us"), [("normal", 0), ("full", 150)])
def test_killed_while_another_process_commits_to_the_same_file(
    tmp_path: Path, durability: str, delay_us: int
) -> None:
    """A worker is killed racing its own commit while another worker keeps committing another
    instance to the same SQLite file: the survivor is not disturbed (it completes, each step once,
    attempt 1), and the victim resumes as after any crash."""
    shared = tmp_path / "shared.db"
    (tmp_path / "s").mkdir()
    (tmp_path / "v").mkdir()
    n = 60
    survivor = Case(
        tmp_path / "s", [["step"]] * n, name="long", id="S", durability=durability, store=shared
    )
    # The victim starts its first step once the survivor is under way (10 of its steps done).
    gate = {"position": "0", "effects": str(survivor.effects), "key": "S/10"}
    victim = Case(tmp_path / "v", CHAIN, id="V", durability=durability, store=shared, gate=gate)
    survivor_ref = reference(survivor)
    bg = subprocess.Popen(
        worker_command(survivor, "run"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        kill = {"phase": "commit", "position": "3", "delay_us": delay_us}
        t = crash_and_resume(victim, kill, snapshot=False)
    finally:
        out, err = bg.communicate(timeout=WORKER_TIMEOUT)
    assert bg.returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [survivor_ref.result]
    assert read_effects(survivor.effects) == [(survivor.key(str(i)), 1) for i in range(n)]
    _, survivor_hist = stored(survivor)
    assert [(e.position, e.attempt) for e in survivor_hist] == [(str(i), 1) for i in range(n)]
    # They did overlap, as the gate ensures: the survivor's step 9 finished before the victim's
    # first step did (and the survivor was still running then, its step 10 writing the side
    # effect the gate waited for).
    assert survivor_hist[9].finished_at <= t.crash_hist[0].finished_at


# --------------------------------------------------------------------------------------------
# Random plans, random kill points

LEAF = st.sampled_from([["step"], ["step"], ["astep"], ["inc"], ["flaky"]])


def _extend(children: st.SearchStrategy[list[Any]]) -> st.SearchStrategy[list[Any]]:
    cond = st.sampled_from(["even", "five"])
    return st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda xs: ["seq", xs]),
        st.lists(children, min_size=2, max_size=3).map(lambda xs: ["par", xs]),
        st.tuples(st.integers(0, 3), st.integers(1, 3), children).map(lambda t: ["map", *t]),
        st.tuples(st.integers(1, 4), children).map(lambda t: ["loop", "even", *t]),
        st.tuples(cond, children, st.none() | children).map(lambda t: ["branch", *t]),
        st.tuples(children, children).map(lambda t: ["states", *t]),
    )


PLANS = st.lists(st.recursive(LEAF, _extend, max_leaves=6), min_size=1, max_size=4)
MAX_INVOCATIONS = 30  # keeps an example cheap (most plans make under 10 invocations)


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    plan=PLANS,
    value=st.integers(0, 100),
    durability=st.sampled_from(["normal", "full"]),
    driver=st.sampled_from(["sync", "async"]),
    resume_driver=st.sampled_from(["sync", "async"]),
    resume_mode=st.sampled_from(["run", "recover"]),
    data=st.data(),
)
def test_random_plans_killed_at_random_points(
    tmp_path_factory: pytest.TempPathFactory,
    plan: list[Any],
    value: int,
    durability: str,
    driver: str,
    resume_driver: str,
    resume_mode: str,
    data: st.DataObject,
) -> None:
    case = Case(
        tmp_path_factory.mktemp("example"), plan, value, durability=durability, driver=driver
    )
    ref = reference(case)
    if not ref.invocations or len(ref.invocations) > MAX_INVOCATIONS:
        return
    target = data.draw(st.sampled_from(ref.invocations), label="killed invocation")
    phase = data.draw(st.sampled_from(["start", "end", "commit"]), label="phase")
    kills = [{"phase": phase, "position": target["position"], "attempt": target["attempt"]}]
    # Sometimes the first resuming worker is killed too, at a random instant of its run.
    again = data.draw(st.none() | st.integers(0, 5000), label="kill the resume after (us)")
    if again is not None:
        kills.append({"phase": "run", "delay_us": again})
    crash_and_resume(case, kills, resume_mode, resume_driver, ref=ref)
