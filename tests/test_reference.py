"""The engine against a reference interpreter: random plans, same outcome.

Hypothesis generates workflow definitions as plain data (pipelines of ``then``/``parallel``/
``map``/``branch``/``loop``, nested sub-workflows, and explicit state machines with gotos, label
tables and routers, cycles included), together with injected step failures and retry policies.
The same data is built into a ``tideflow.Workflow`` and run with ``engine.run`` and
``engine.run_async``, and evaluated by the reference interpreter (tests/reference_interpreter.py,
whose docstring lists the semantics it pins); the plans are built and generated in
tests/reference_plans.py.

Where several things happen in the failing instant the drivers may differ (see ``check``): the
asyncio driver runs a whole wave of ready steps even after one of them failed the instance, and
which of several simultaneous failures is reported depends on the driver's order.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tideflow import (
    InvalidTransition,
    Status,
    Workflow,
    WorkflowFailed,
)

from .reference_interpreter import (
    Cand,
    Done,
    Machine,
    NonTerminating,
    Pipe,
    Reference,
    Result,
)
from .reference_plans import (
    START,
    Obs,
    Outcome,
    build,
    plans,
    run_on,
)

# --------------------------------------------------------------------------------------------
# Comparing a run with the reference.


def matches(err: object, c: Cand) -> bool:
    if not isinstance(err, WorkflowFailed) or err.error_type != c.error_type:
        return False
    if c.kind == "step":
        return (
            not isinstance(err, InvalidTransition)
            and err.step == c.step
            and err.attempts == c.attempts
            and err.error_message == c.message
        )
    if c.kind == "loop":
        return err.step is None and "max_iterations" in str(err) and c.message in err.error_message
    return (
        isinstance(err, InvalidTransition) and err.step is None and c.message in err.error_message
    )


def attempts(execs: Any) -> Counter[str]:
    """Attempts made per step position."""
    return Counter(e.position for e in execs)


def check(ref: Reference, expected: Result, got: Outcome, iid: str, value: Any) -> Cand | None:
    """Checks one engine run against the reference; returns the failure it ended with, if any."""
    run = got.run
    keys = [(o.position, o.attempt) for o in got.obs]
    assert len(set(keys)) == len(keys), f"an attempt ran twice: {sorted(keys)}"
    by_key = {(e.position, e.attempt): e for e in ref.execs}
    for o in got.obs:
        assert o.key == f"{iid}/{o.position}", o
        assert o.input == value, o
        e = by_key.get((o.position, o.attempt))
        assert e is not None, f"the engine ran {o.step} at {o.position!r} attempt {o.attempt}"
        assert (o.step, o.value) == (e.step, e.input), (o, e)
    assert run.id == iid
    # the history: each recorded attempt ran, at the time and with the outcome predicted
    recorded = {(h.position, h.attempt): h for h in got.history}
    assert len(recorded) == len(got.history), "an attempt was recorded twice"
    assert set(recorded) <= set(keys), "the history has an attempt that never ran"
    for k, h in recorded.items():
        e = by_key[k]
        assert h.step == e.step, (h, e)
        assert (h.started_at - START, h.finished_at - START) == (e.time, e.time), (h, e)
        assert h.status == ("failed" if e.failed else "completed"), (h, e)

    if isinstance(expected, Done):
        assert set(recorded) == set(keys)
        assert run.status is Status.COMPLETED, run.error
        assert run.error is None
        assert run.output == expected.value
        assert attempts(got.obs) == attempts(ref.execs)
        assert got.elapsed == expected.time
        return None

    assert run.status is Status.FAILED, (run.status, run.output)
    assert run.output is None
    found = [c for c in expected.cands if matches(run.error, c)]
    assert found, (
        f"{run.error!r} ({getattr(run.error, 'error_message', '')}) not in {expected.cands}"
    )
    assert got.elapsed == expected.time
    end = expected.time
    # before the failing instant everything ran; after it nothing; in it, what the failure needed
    # (failures that differ only in position read the same: trust only what they all needed)
    surely = {i for i, e in enumerate(ref.execs) if e.time < end}
    surely |= frozenset.intersection(*(c.chain for c in found))
    maybe = {i for i, e in enumerate(ref.execs) if e.time <= end}
    low = attempts(ref.execs[i] for i in surely)
    high = attempts(ref.execs[i] for i in maybe)
    made = attempts(got.obs)
    for pos in set(low) | set(high) | set(made):
        assert low[pos] <= made[pos] <= high[pos], (pos, low[pos], made[pos], high[pos])
    # what ran before the failing instant, and the failing attempt itself, are in the history
    final = (found[0].position, found[0].attempts)
    before = {(e.position, e.attempt) for e in ref.execs if e.time < end}
    if found[0].kind == "step":
        before.add(final)
    assert before <= set(recorded), sorted(before - set(recorded))
    return found[0]


def exact_instant(ref: Reference, expected: Result) -> bool:
    """Whether the reference leaves nothing to the drivers' ordering of simultaneous tasks."""
    if isinstance(expected, Done):
        return True
    if len(expected.cands) != 1:
        return False
    chain = expected.cands[0].chain
    return all(i in chain for i, e in enumerate(ref.execs) if e.time == expected.time)


# generating and checking takes a few seconds; shrinking a subtle failure can take minutes
@pytest.mark.timeout(900)
@settings(max_examples=300, deadline=None)
@given(plan=plans(), value=st.integers(0, 9))
def test_engine_agrees_with_the_reference_interpreter(plan: Pipe | Machine, value: int) -> None:
    ref = Reference()
    try:
        expected = ref.run(plan, value, "", 0.0, frozenset())
    except NonTerminating:
        assume(False)
        raise  # unreachable: assume(False) raises
    log: list[Obs] = []
    wf = build(plan, log)
    assert isinstance(wf, Workflow)
    a = run_on(wf, value, "sync-run", log, use_async=False)
    b = run_on(wf, value, "async-run", log, use_async=True)
    fa = check(ref, expected, a, "sync-run", value)
    fb = check(ref, expected, b, "async-run", value)

    # both drivers agree (on which failure, too, unless several happen in the same instant)
    assert a.run.status is b.run.status
    assert a.run.output == b.run.output
    assert a.elapsed == b.elapsed
    if len(getattr(expected, "cands", ())) <= 1:
        assert fa == fb
        assert type(a.run.error) is type(b.run.error)
    if exact_instant(ref, expected):
        assert attempts(a.obs) == attempts(b.obs)
        assert sorted(timeline(a)) == sorted(timeline(b))


def timeline(o: Outcome) -> list[tuple[str, int, str, float]]:
    """The recorded attempts of a run: (position, attempt, status, start)."""
    return [(h.position, h.attempt, h.status, h.started_at) for h in o.history]
