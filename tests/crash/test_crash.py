"""Crash tests: run workflows in a subprocess on a SQLite file (and, where a test takes the
``server`` fixture, on each server store), SIGKILL it at chosen points, resume
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

import json
import os
import subprocess
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.crash.harness import (
    KILLED,
    ROOT,
    WORKER_TIMEOUT,
    Case,
    completed,
    crash,
    crash_and_resume,
    reference,
    resume,
    spawn,
    stored,
    worker_command,
)
from tests.crash.worker import read_effects
from tests.servers import BACKENDS

pytestmark = pytest.mark.crash


# --------------------------------------------------------------------------------------------
# (a) every step boundary of a 10-step chain

CHAIN = [["step"]] * 10


# Every boundary on the default durability; the first, a middle and the last one on "full".
# Every boundary on each server store too (durability is SQLite's setting).
CHAIN_KILLS = [
    (k, phase, "normal", b) for b in BACKENDS for k in range(10) for phase in ("start", "end")
] + [(k, phase, "full", "sqlite") for k in (0, 5, 9) for phase in ("start", "end")]


@pytest.mark.parametrize(("k", "phase", "durability", "server"), CHAIN_KILLS, indirect=["server"])
def test_chain_killed_at_every_step_boundary(
    tmp_path: Path, k: int, phase: str, durability: str, server: str | None
) -> None:
    """``start`` of step k: steps 0..k-1 committed, step k handed out but not started. ``end``
    of step k: its side effect is done, its result not committed."""
    case = Case(tmp_path, CHAIN, durability=durability, url=server)
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
    ("k", "delay_us", "durability", "server"),
    [(0, 0, "normal", "sqlite"), (3, 100, "full", "sqlite"), (6, 200, "normal", "sqlite")]
    + [(9, 0, "full", "sqlite"), (9, 300, "normal", "sqlite")]
    + [(k, d, "normal", b) for b in BACKENDS[1:] for k, d in ((3, 100), (6, 300), (9, 0))],
    indirect=["server"],
)
def test_chain_kill_racing_the_commit(
    tmp_path: Path, k: int, delay_us: int, durability: str, server: str | None
) -> None:
    """A killer process strikes ``delay_us`` after step k returns, racing the engine's commit of
    step k (it lands before, inside or after it: all outcomes are legal, and the committed history
    says which one happened). Either way the SQLite file is consistent: step k and everything
    after it ran once if their completion is in the history, else once more with attempt 2."""
    case = Case(tmp_path, CHAIN, durability=durability, url=server)
    t = crash_and_resume(case, {"phase": "commit", "position": str(k), "delay_us": delay_us})
    assert len(completed(t.crash_hist)) >= k
    assert t.crash_state["status"] in ("running", "completed")


@pytest.mark.parametrize(
    ("delay_us", "server"),
    [(d, "sqlite") for d in (0, 25_000, 60_000, 90_000, 130_000)]
    + [(d, b) for b in BACKENDS[1:] for d in (0, 60_000, 150_000, 300_000)],
    indirect=["server"],
)
def test_killed_while_creating_the_store_and_the_instance(
    tmp_path: Path, delay_us: int, server: str | None
) -> None:
    """A killer strikes ``delay_us`` after the worker starts opening a new SQLite file: the kill
    lands while it creates the file and its schema, creates the instance, or runs its first steps.
    Whatever it left behind, a fresh process opens the file and runs the instance to the same
    result, re-running no committed step."""
    case = Case(tmp_path, CHAIN, durability="full", url=server)
    t = crash_and_resume(case, {"phase": "open", "delay_us": delay_us})
    assert t.crash_state["status"] in ("absent", "running", "completed")


# --------------------------------------------------------------------------------------------
# (b) in the middle of a step


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("phase", ["start", "end"])
@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_killed_in_the_middle_of_an_async_step(
    tmp_path: Path, server: str | None, phase: str, driver: str
) -> None:
    """Killed inside an async step after it awaited: it runs again with the same key, attempt 2."""
    case = Case(tmp_path, [["step"], ["astep"], ["step"]], driver=driver, url=server)
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
@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_killed_during_a_parallel_fan_out(
    tmp_path: Path, server: str | None, i: int, phase: str, driver: str
) -> None:
    case = Case(tmp_path, FAN_OUT, driver=driver, url=server)
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
        # every other branch step ran exactly once, and one that had not started when the
        # process died was not charged an attempt for it.
        for p in others:
            assert len(t.lines(p)) == 1, (p, t.lines(p))
            if not t.lines(p, t.before):
                assert completed(t.final_hist)[p] == 1, (p, t.final_hist)
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
@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_killed_inside_a_loop(tmp_path: Path, server: str | None, pos: str, phase: str) -> None:
    case = Case(tmp_path, LOOP, input=1, url=server)
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
# (e) around a signal

SIGNALLED = [["step"], ["sig"], ["inc"], ["step"]]


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize(("pos", "phase"), [("0", "end"), ("2", "start"), ("2", "end")])
@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_killed_around_a_signal(
    tmp_path: Path, server: str | None, pos: str, phase: str, driver: str
) -> None:
    """The instance waits for the signal ``go``, which the worker sends once it waits (as another
    process would): killed before the wait, or after the signal was taken, the resumed instance
    takes the one signal once (its payload, 7, is the value after the wait), and the steps run
    as after any crash."""
    case = Case(tmp_path, SIGNALLED, driver=driver, url=server)
    ref = reference(case)
    t = crash_and_resume(
        case,
        {"phase": phase, "position": pos},
        resume_driver=driver,
        resume_mode="recover",
        ref=ref,
    )
    assert t.result == ref.result
    assert list(completed(t.final_hist)) == ["0", "2", "3"]
    assert t.lines("0")[-1] == ("X/0", 1 if pos != "0" else 2)
    assert t.lines("3") == [("X/3", 1)]


# --------------------------------------------------------------------------------------------
# Retries and crashes


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_killed_while_waiting_to_retry(tmp_path: Path, server: str | None) -> None:
    """Killed in the backoff after a failed attempt: the instance is stored as suspended with the
    failure; recover() waits out the backoff and runs attempt 2, once."""
    case = Case(tmp_path, [["step"], ["backoff"], ["step"]], url=server)
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


@pytest.mark.parametrize("delay_us", [0, 3_000, 60_000])
def test_a_kill_racing_the_commit_of_a_failed_attempt_may_land_in_its_retry(
    tmp_path: Path, delay_us: int
) -> None:
    """The killer races the commit of attempt 1 of a step that fails and is retried at once:
    it may land before that commit, inside attempt 2, or after attempt 2 committed (the longer
    delays). Every outcome resumes to the uninterrupted result, no committed step runs again.
    (Regression: the harness assumed the kill lands before the next attempt starts, which a
    loaded machine broke in `test_random_plans_killed_at_random_points`.)"""
    case = Case(tmp_path, [["step"], ["flaky"], ["step"]])
    t = crash_and_resume(
        case, {"phase": "commit", "position": "1", "attempt": 1, "delay_us": delay_us}
    )
    assert t.result["status"] == "completed"


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_killed_during_a_retry_attempt(tmp_path: Path, server: str | None, driver: str) -> None:
    """Attempt 1 fails (committed), attempt 2 (handed out by the retry timer) is killed: the
    re-run is attempt 3, same key."""
    case = Case(tmp_path, [["step"], ["flaky"], ["step"]], driver=driver, url=server)
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
@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_an_interrupted_attempt_counts_towards_the_retry_budget(
    tmp_path: Path, server: str | None, driver: str
) -> None:
    """A step allowed 2 attempts is killed in attempt 1: after resuming it gets one more attempt
    (2), and when that fails the instance fails, "after 2 attempts" (a step that keeps crashing
    the process cannot retry forever)."""
    case = Case(tmp_path, [["step"], ["doomed"], ["step"]], driver=driver, url=server)
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
@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_killed_twice_in_the_same_step(tmp_path: Path, server: str | None, driver: str) -> None:
    """Two processes die in step 2 (allowed 3 attempts) in a row: the third runs it with attempt
    3, same key."""
    case = Case(
        tmp_path, [["step"], ["step"], ["flaky"], ["step"], ["step"]], driver=driver, url=server
    )
    kill = {"phase": "start", "position": "2"}
    t = crash_and_resume(case, [kill, kill], resume_driver=driver)
    first, second = (json.loads(line) for line in case.marker.read_text().splitlines())
    assert (first["key"], first["attempt"]) == ("X/2", 1)
    assert (second["key"], second["attempt"]) == ("X/2", 2)
    assert t.segments == [[("X/0", 1), ("X/1", 1)], []]
    assert t.later == [("X/2", 3), ("X/3", 1), ("X/4", 1)]


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_a_step_that_kills_its_process_every_time_fails_the_instance(
    tmp_path: Path, server: str | None, driver: str
) -> None:
    """A step without retries (max_attempts=1) gets one re-run after its process died in it; when
    the process dies in that one too, the instance fails (a poison step is not retried forever),
    with an error that says so, names the step and counts the attempts."""
    case = Case(tmp_path, [["step"], ["step"], ["step"]], driver=driver, url=server)
    kill = {"phase": "start", "position": "1"}
    assert crash(case, kill)["attempt"] == 1
    assert crash(case, kill)["attempt"] == 2
    [result] = resume(case, driver=driver)
    assert result["status"] == "failed"
    assert "StepInterrupted" in result["error"] and "'1'" in result["error"], result["error"]
    assert "died during its last attempt (attempt 2)" in result["error"], result["error"]
    assert stored(case)[0] == result
    assert [(e.position, e.attempt, e.status) for e in stored(case)[1]] == [("0", 1, "completed")]
    assert read_effects(case.effects) == [("X/0", 1)]
    [again] = resume(case, driver=driver)  # failed for good: nothing runs again
    assert again == result and read_effects(case.effects) == [("X/0", 1)]


@pytest.mark.parametrize("delay_us", [0, 1000, 3000, 6000])
@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_killed_again_while_resuming(tmp_path: Path, server: str | None, delay_us: int) -> None:
    """The first worker dies at the end of step 4 (its side effect done, not committed); the
    worker resuming it is killed ``delay_us`` after it calls ``engine.run``: while it reads and
    replays the records, records that it hands step 4 out again, or runs the next steps."""
    case = Case(tmp_path, CHAIN, url=server)
    kills = [{"phase": "end", "position": "4"}, {"phase": "run", "delay_us": delay_us}]
    t = crash_and_resume(case, kills)
    assert t.segments[0] == [(case.key(str(i)), 1) for i in range(5)]
    assert len(completed(t.crash_hist)) >= 4


# --------------------------------------------------------------------------------------------
# recover() resumes every unfinished instance


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_recover_resumes_every_unfinished_instance(tmp_path: Path, server: str | None) -> None:
    chain = {"name": "chain", "plan": CHAIN}
    fan = {"name": "fan", "plan": FAN_OUT}
    cases = {
        "c1": (
            Case(tmp_path, CHAIN, name="chain", id="c1", url=server),
            {"phase": "start", "position": "4"},
        ),
        "c2": (
            Case(tmp_path, CHAIN, name="chain", id="c2", url=server),
            {"phase": "end", "position": "9"},
        ),
        "f1": (
            Case(tmp_path, FAN_OUT, name="fan", id="f1", url=server),
            {"phase": "end", "position": "1.p1"},
        ),
        "done": (Case(tmp_path, CHAIN, name="chain", id="done", url=server), None),
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


@pytest.mark.parametrize(
    ("durability", "delay_us", "server"),
    [("normal", 0, "sqlite"), ("full", 150, "sqlite")] + [("normal", 0, b) for b in BACKENDS[1:]],
    indirect=["server"],
)
def test_killed_while_another_process_commits_to_the_same_file(
    tmp_path: Path, durability: str, delay_us: int, server: str | None
) -> None:
    """A worker is killed racing its own commit while another worker keeps committing another
    instance to the same SQLite file (or server namespace): the survivor is not disturbed (it completes, each step once,
    attempt 1), and the victim resumes as after any crash."""
    shared = tmp_path / "shared.db"
    (tmp_path / "s").mkdir()
    (tmp_path / "v").mkdir()
    n = 60
    survivor = Case(
        tmp_path / "s",
        [["step"]] * n,
        name="long",
        id="S",
        durability=durability,
        store=shared,
        url=server,
    )
    # The victim starts its first step once the survivor is under way (10 of its steps done).
    gate = {"position": "0", "effects": str(survivor.effects), "key": "S/10"}
    victim = Case(
        tmp_path / "v", CHAIN, id="V", durability=durability, store=shared, gate=gate, url=server
    )
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

LEAF = st.sampled_from([["step"], ["step"], ["astep"], ["inc"], ["flaky"], ["nap"], ["tmo"]])


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
    max_examples=int(os.environ.get("TIDEFLOW_CRASH_EXAMPLES", "25")),  # bigger for a local soak
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
