"""Plans for tests/test_reference.py: built into a ``tideflow.Workflow``, generated, and run.

``build`` turns the plan data of ``reference_interpreter`` into a real workflow whose steps log
what they saw (``Obs``); ``plans`` is the Hypothesis strategy that generates the data; ``run_on``
runs a built workflow on a fresh engine and virtual clock.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tideflow import (
    Context,
    Engine,
    Retry,
    Run,
    Step,
    VirtualClock,
    Workflow,
    step,
)

from .reference_interpreter import (
    Boom,
    Branch,
    Cond,
    Fatal,
    Goto,
    Item,
    Labels,
    Loop,
    Machine,
    MapOf,
    Next,
    Par,
    Pipe,
    RetrySpec,
    Router,
    Runnable,
    State,
    StepSpec,
    Then,
    apply_op,
    failures_at,
    holds,
    routed,
)

# --------------------------------------------------------------------------------------------
# Building the same data into a tideflow.Workflow.


@dataclass(frozen=True)
class Obs:
    """What a step saw of its context on one attempt."""

    instance: str
    position: str
    attempt: int
    step: str
    key: str
    value: Any
    input: Any


def make_step(s: StepSpec, log: list[Obs]) -> Step[Any, Any]:
    def body(ctx: Context, v: Any) -> Any:
        log.append(
            Obs(
                ctx.instance_id,
                ctx.position,
                ctx.attempt,
                ctx.step_name,
                ctx.idempotency_key,
                v,
                ctx.input,
            )
        )
        if ctx.attempt <= failures_at(s, ctx.position):
            raise (Fatal if s.fatal else Boom)(f"{s.name}@{ctx.position}#{ctx.attempt}")
        return apply_op(s, v)

    fn: Callable[..., Any]
    if s.is_async:

        async def fn(ctx: Context, v: Any) -> Any:
            await asyncio.sleep(0)
            return body(ctx, v)

    else:

        def fn(ctx: Context, v: Any) -> Any:
            return body(ctx, v)

    retry = None
    if s.retry is not None:
        r = s.retry
        retry = Retry(
            max_attempts=r.max_attempts,
            initial_delay=r.initial,
            multiplier=r.multiplier,
            max_delay=r.max_delay,
            jitter=0.0,
            give_up_on=(Fatal,),
        )
    return step(name=s.name, retry=retry)(fn)


def make_cond(c: Cond) -> Callable[[Any], bool]:
    def cond(v: Any) -> bool:
        return holds(c, v)

    return cond


def make_router(r: Router) -> Callable[[Any], str]:
    def router(v: Any) -> str:
        return routed(r, v)

    if r.targets is not None:
        router.targets = list(r.targets)  # type: ignore[attr-defined]
    return router


def build(
    r: Runnable, log: list[Obs], built: dict[str, Any] | None = None
) -> Step[Any, Any] | Workflow:
    """The step or workflow for ``r``; a runnable used in several places is built once (the
    same Step or Workflow object then stands at several positions)."""
    built = {} if built is None else built
    if r.name not in built:
        built[r.name] = build_new(r, log, built)
    return built[r.name]


def build_new(r: Runnable, log: list[Obs], built: dict[str, Any]) -> Step[Any, Any] | Workflow:
    if isinstance(r, StepSpec):
        return make_step(r, log)
    if isinstance(r, Pipe):
        w = Workflow(r.name)
        for it in r.items:
            if isinstance(it, Then):
                w = w.then(build(it.body, log, built))
            elif isinstance(it, Par):
                w = w.parallel(*(build(b, log, built) for b in it.bodies))
            elif isinstance(it, MapOf):
                w = w.map(build(it.body, log, built), concurrency=it.concurrency)
            elif isinstance(it, Branch):
                other = None if it.otherwise is None else build(it.otherwise, log, built)
                w = w.branch(make_cond(it.cond), then=build(it.then, log, built), otherwise=other)
            else:
                body = build(it.body, log, built)
                w = w.loop(body, until=make_cond(it.until), max_iterations=it.max_iterations)
        return w
    w = Workflow(r.name, start=r.start)
    for s in r.states:
        nxt: Any
        if s.next is None:
            nxt = None
        elif isinstance(s.next, Goto):
            nxt = s.next.target
        elif isinstance(s.next, Labels):
            nxt = dict(s.next.table)
        else:
            nxt = make_router(s.next)
        w = w.state(s.name, build(s.body, log, built), next=nxt)
    return w


# --------------------------------------------------------------------------------------------
# The strategy.

MAX_DEPTH = 3
STEP_BUDGET = 30
RETRIES = st.builds(
    RetrySpec,
    max_attempts=st.integers(1, 5),
    initial=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]),
    multiplier=st.sampled_from([1.0, 2.0, 3.0]),
    max_delay=st.sampled_from([0.5, 1.0, 4.0, 60.0]),
)
CONDS = st.one_of(
    st.builds(Cond, st.just("even"), st.just(0)),
    st.builds(Cond, st.just("gt"), st.integers(0, 8)),
    st.builds(Cond, st.just("mod3"), st.integers(0, 2)),
)


@st.composite
def plans(draw: st.DrawFn) -> Pipe | Machine:
    counter = itertools.count()
    steps_made = [0]
    made: list[Runnable] = []
    # how often steps fail: never, now and then, or often (per plan, so that shrinking can drop it)
    fail_percent = draw(st.sampled_from([0, 10, 25]))

    def fresh(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    def new_step(op: str | None = None, arg: int | None = None, flaky: bool = False) -> StepSpec:
        """A step; a flaky one fails at some positions and (usually) recovers after a wait."""
        steps_made[0] += 1
        if op is None:
            op = draw(st.sampled_from(["add", "mul", "half", "sub"]))
        if arg is None:
            arg = draw(st.integers(1, 3))
        if flaky:
            fail_k, fail_hash, fatal = draw(st.integers(1, 2)), True, False
            retry: RetrySpec | None = RetrySpec(
                draw(st.integers(2, 4)), draw(st.sampled_from([0.5, 1.0])), 2.0, 60.0
            )
        else:
            fails = draw(st.integers(0, 99)) < fail_percent
            fail_k = draw(st.sampled_from([1, 1, 1, 2, 2, 3])) if fails else 0
            fail_hash = fail_k > 0 and draw(st.booleans())
            fatal = fail_k > 0 and draw(st.integers(0, 5)) == 0
            retry = draw(RETRIES) if draw(st.integers(0, 7)) else None
        return StepSpec(
            name=fresh("s"),
            op=op,
            arg=arg,
            is_async=draw(st.booleans()),
            retry=retry,
            fail_k=fail_k,
            fail_hash=fail_hash,
            fatal=fatal,
        )

    def leaf_only(depth: int) -> bool:
        return depth >= MAX_DEPTH or steps_made[0] >= STEP_BUDGET

    def runnable(depth: int) -> Runnable:
        if made and draw(st.integers(0, 9)) == 0:
            return draw(st.sampled_from(made))  # the same step or sub-workflow, used again
        if leaf_only(depth):
            r: Runnable = new_step()
        else:
            kind = draw(st.sampled_from(["step", "step", "pipe", "machine"]))
            r = new_step() if kind == "step" else pipe(depth) if kind == "pipe" else machine(depth)
        made.append(r)
        return r

    def pipe(depth: int, name: str | None = None) -> Pipe:
        items: list[Item] = []
        for _ in range(draw(st.integers(1, 4))):
            items.extend(pipe_items(depth, items))
        return Pipe(name or fresh("w"), tuple(items))

    def pipe_items(depth: int, before: list[Item]) -> list[Item]:
        kinds = ["then"] if leaf_only(depth) else ["then", "then", "par", "map", "branch", "loop"]
        kind = draw(st.sampled_from(kinds))
        if kind == "then":
            return [Then(runnable(depth + 1))]
        if kind == "par":
            return [Par(tuple(runnable(depth + 1) for _ in range(draw(st.integers(1, 3)))))]
        if kind == "map":
            # a map needs a list (or tuple) before it: a parallel block, or a spreading step
            spread = [] if before and isinstance(before[-1], Par) else [Then(new_step("spread", 0))]
            conc = draw(st.sampled_from([None, 1, 2]))
            # items that recover after different waits make the concurrency bound visible in time
            body = new_step(flaky=True) if draw(st.booleans()) else runnable(depth + 1)
            return [*spread, MapOf(body, conc)]
        if kind == "branch":
            other = draw(st.booleans())
            return [
                Branch(draw(CONDS), runnable(depth + 1), runnable(depth + 1) if other else None)
            ]
        return [Loop(runnable(depth + 1), draw(CONDS), draw(st.integers(1, 6)))]

    def label_body(depth: int, m: int) -> Runnable:
        labeler = new_step("label", m)
        if leaf_only(depth) or draw(st.booleans()):
            return labeler
        inner = pipe(depth + 1)
        return Pipe(inner.name, (*inner.items, Then(labeler)))

    def machine(depth: int, name: str | None = None) -> Machine:
        names = ["a", "b", "c", "d"][: draw(st.integers(1, 4))]
        target = st.sampled_from(names)
        states = []
        for i, sname in enumerate(names):
            later = names[i + 1 :]
            kind = draw(st.sampled_from(["end", "goto", "labels", "router"]))
            if kind == "end" and later and draw(st.booleans()):
                kind = "goto"
            if kind in ("goto", "router") and not later:
                kind = "end"  # with no way forward, the last state would cycle for ever
            nxt: Next = None
            if kind == "labels":
                m = draw(st.integers(2, 3))
                body = label_body(depth, m)
                forward_or_any = st.sampled_from(later) if later else target
                table = [
                    (f"L{j}", draw(target if draw(st.integers(0, 3)) == 0 else forward_or_any))
                    for j in range(m)
                ]
                if draw(st.integers(0, 5)) == 0:  # a partial table: an unknown label may occur
                    del table[draw(st.integers(0, m - 1))]
                nxt = Labels(tuple(table))
            else:
                body = runnable(depth + 1)
                if kind == "goto":
                    nxt = Goto(draw(st.sampled_from(later)))
                elif kind == "router":
                    # cycles bounded by the data: a countdown (back to itself while the value is
                    # big, with a body that makes it smaller), or back to any earlier state
                    lo = draw(st.sampled_from(later))
                    if draw(st.booleans()):
                        hi = sname
                        body = new_step(draw(st.sampled_from(["half", "sub"])))
                    else:
                        hi = draw(
                            st.sampled_from(names[: i + 1]) if draw(st.booleans()) else target
                        )
                    declared = draw(st.sampled_from([None, None, (hi, lo), (hi,)]))
                    nxt = Router(draw(st.integers(0, 3)), hi, lo, declared)
            states.append(State(sname, body, nxt))
        start = draw(st.sampled_from(names))
        # keep the states reachable from the start (the engine rejects unreachable ones)
        by_name = {s.name: s for s in states}
        seen: set[str] = set()
        todo = [start]
        while todo:
            n = todo.pop()
            if n in seen or n not in by_name:
                continue
            seen.add(n)
            nx = by_name[n].next
            if isinstance(nx, Goto):
                todo.append(nx.target)
            elif isinstance(nx, Labels):
                todo.extend(t for _, t in nx.table)
            elif isinstance(nx, Router):
                todo.extend(nx.targets if nx.targets is not None else (nx.hi, nx.lo))
        kept = tuple(s for s in states if s.name in seen)
        return Machine(name or fresh("sm"), start, kept)

    if draw(st.integers(0, 3)) == 0:
        return machine(0, "root")
    return pipe(0, "root")


# --------------------------------------------------------------------------------------------
# Running a built workflow on a fresh engine and virtual clock.


@dataclass(frozen=True)
class Outcome:
    run: Run
    elapsed: float
    obs: tuple[Obs, ...]  # what the steps saw
    history: tuple[Any, ...]  # what the instance recorded (StepEvents)


START = 1000.0


def run_on(wf: Workflow, value: Any, iid: str, log: list[Obs], *, use_async: bool) -> Outcome:
    clock = VirtualClock(START)
    engine = Engine(clock=clock)
    if use_async:
        r = asyncio.run(engine.run_async(wf, value, id=iid))
    else:
        r = engine.run(wf, value, id=iid)
    obs = tuple(o for o in log if o.instance == iid)
    return Outcome(r, clock.now() - START, obs, tuple(engine.steps(iid)))
