"""The engine against a reference interpreter: random plans, same outcome.

Hypothesis generates workflow definitions as plain data (pipelines of ``then``/``parallel``/
``map``/``branch``/``loop``, nested sub-workflows, and explicit state machines with gotos, label
tables and routers, cycles included), together with injected step failures and retry policies.
The same data is built into a ``tideflow.Workflow`` and run with ``engine.run`` and
``engine.run_async``, and evaluated by a small recursive interpreter written here. The
interpreter is *timed*: it knows when, on the virtual clock, every attempt of every step position
happens, so it predicts the status, the output or the failing step and its attempt count, the
attempts made at each position (with their inputs), and the virtual time spent waiting for
retries.

Semantics the interpreter encodes (and therefore pins):

* a step attempt takes no virtual time; after failed attempt ``n`` the next one starts
  ``min(initial * multiplier ** (n - 1), max_delay)`` later; ``give_up_on`` stops at once;
* sequences run one after another, ``parallel`` branches and ``map`` items run concurrently
  (``map`` starts the next item, in order, when one of at most ``concurrency`` items finishes);
* the instance fails at the *first* failure in virtual time: work due before that instant has
  run, work due after it never runs. Work due in that very instant is the only thing left open
  (the drivers may order simultaneous tasks as they like), so it is checked against bounds;
* positions: pipeline nodes ``i``, parallel branches ``p{i}``, map items ``m{i}``, branch sides
  ``t``/``f``, loop iterations ``i{n}``, states ``{name}#{visit}``, children joined with ``.``;
* the history (``engine.history``) records each attempt with its start time and outcome.

Where several things happen in the failing instant the drivers may differ (see ``check``): the
asyncio driver runs a whole wave of ready steps even after one of them failed the instance, and
which of several simultaneous failures is reported depends on the driver's order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tideflow import (
    Context,
    Engine,
    InvalidTransition,
    Retry,
    Run,
    Status,
    Step,
    VirtualClock,
    Workflow,
    WorkflowFailed,
    step,
)

# --------------------------------------------------------------------------------------------
# The definition data: what the strategy generates, the builder builds and the reference reads.


@dataclass(frozen=True)
class RetrySpec:
    max_attempts: int
    initial: float
    multiplier: float
    max_delay: float

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based), as the design states it."""
        return min(self.initial * self.multiplier ** (attempt - 1), self.max_delay)


@dataclass(frozen=True)
class StepSpec:
    name: str
    op: str  # add | mul | half | sub | spread | label
    arg: int
    is_async: bool
    retry: RetrySpec | None
    fail_k: int  # fails on its first k attempts (at every position, or at positions by hash)
    fail_hash: bool
    fatal: bool  # raises Fatal (in give_up_on) instead of Boom


@dataclass(frozen=True)
class Cond:
    kind: str  # even | gt | mod3
    arg: int


@dataclass(frozen=True)
class Then:
    body: Runnable


@dataclass(frozen=True)
class Par:
    bodies: tuple[Runnable, ...]


@dataclass(frozen=True)
class MapOf:
    body: Runnable
    concurrency: int | None


@dataclass(frozen=True)
class Branch:
    cond: Cond
    then: Runnable
    otherwise: Runnable | None


@dataclass(frozen=True)
class Loop:
    body: Runnable
    until: Cond
    max_iterations: int


Item = Union[Then, Par, MapOf, Branch, Loop]


@dataclass(frozen=True)
class Pipe:
    name: str
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Goto:
    target: str


@dataclass(frozen=True)
class Labels:
    table: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Router:
    threshold: int
    hi: str  # where the router goes when num(value) > threshold
    lo: str
    targets: tuple[str, ...] | None  # declared targets (the router's .targets attribute)


Next = Union[Goto, Labels, Router, None]


@dataclass(frozen=True)
class State:
    name: str
    body: Runnable
    next: Next


@dataclass(frozen=True)
class Machine:
    name: str
    start: str
    states: tuple[State, ...]


Runnable = Union[StepSpec, Pipe, Machine]


# --------------------------------------------------------------------------------------------
# What steps and conditions compute (shared by the real steps and the reference: test data).


class Boom(Exception):
    """An injected, retryable step failure."""


class Fatal(Exception):
    """An injected failure listed in the step's ``give_up_on``."""


def num(v: Any) -> int:
    """Every value as an int: ints as they are, labels by their number, containers summed."""
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        return int(v[1:])
    return sum(num(x) for x in v)


def apply_op(s: StepSpec, v: Any) -> Any:
    n = num(v)
    if s.op == "add":
        return (n + s.arg) % 50
    if s.op == "mul":
        return (n * s.arg) % 50
    if s.op == "half":
        return n // 2
    if s.op == "sub":
        return max(n - s.arg, 0)
    if s.op == "spread":
        return [(n + j) % 5 for j in range(n % 5)]
    assert s.op == "label"
    return f"L{n % s.arg}"


def failures_at(s: StepSpec, position: str) -> int:
    """How many leading attempts of step ``s`` fail at ``position``."""
    if s.fail_k == 0 or not s.fail_hash:
        return s.fail_k
    return zlib.crc32(f"{s.name}/{position}".encode()) % (s.fail_k + 1)


def holds(c: Cond, v: Any) -> bool:
    n = num(v)
    if c.kind == "even":
        return n % 2 == 0
    if c.kind == "gt":
        return n > c.arg
    return n % 3 == c.arg


def routed(r: Router, v: Any) -> str:
    return r.hi if num(v) > r.threshold else r.lo


def child(key: str, seg: str) -> str:
    return seg if not key else f"{key}.{seg}"


# --------------------------------------------------------------------------------------------
# The reference interpreter.


class NonTerminating(Exception):
    """The generated state machine cycles for longer than the fuel allows (example rejected)."""


@dataclass(frozen=True)
class Exec:
    position: str
    attempt: int
    step: str
    input: Any
    time: float
    failed: bool


@dataclass(frozen=True)
class Cand:
    """A failure the instance may end with (several only when they happen at the same instant)."""

    kind: str  # step | loop | definition
    step: str | None
    attempts: int
    error_type: str
    message: str  # the exact error_message (step) or a fragment of it
    position: str
    chain: frozenset[int]  # executions this failure causally follows (so they surely ran)


@dataclass(frozen=True)
class Done:
    value: Any
    time: float
    chain: frozenset[int]


@dataclass(frozen=True)
class Failed:
    time: float
    cands: tuple[Cand, ...]


Result = Union[Done, Failed]

STATE_FUEL = 12  # visits per state-machine instance before an example counts as non-terminating
EXEC_BUDGET = 400  # hypothetical executions per example before it is rejected as too big


class Reference:
    """A direct recursive evaluator with a virtual clock; records every step attempt.

    Concurrent children are evaluated in full from their common start time; the earliest failure
    then decides where the real run stops (``Failed.time``), and executions after it are moot.
    """

    def __init__(self) -> None:
        self.execs: list[Exec] = []

    def run(self, r: Runnable, v: Any, key: str, t: float, chain: frozenset[int]) -> Result:
        if len(self.execs) > EXEC_BUDGET:
            raise NonTerminating("too much work")
        if isinstance(r, StepSpec):
            return self.step(r, v, key, t, chain)
        if isinstance(r, Pipe):
            for i, item in enumerate(r.items):
                res = self.item(item, v, child(key, str(i)), t, chain)
                if isinstance(res, Failed):
                    return res
                v, t, chain = res.value, res.time, res.chain
            return Done(v, t, chain)
        return self.machine(r, v, key, t, chain)

    def step(self, s: StepSpec, v: Any, key: str, t: float, chain: frozenset[int]) -> Result:
        failing = failures_at(s, key)
        attempt = 1
        while True:
            self.execs.append(Exec(key, attempt, s.name, v, t, attempt <= failing))
            chain = chain | {len(self.execs) - 1}
            if attempt > failing:
                return Done(apply_op(s, v), t, chain)
            if s.retry is None or s.fatal or attempt >= s.retry.max_attempts:
                etype = "Fatal" if s.fatal else "Boom"
                msg = f"{s.name}@{key}#{attempt}"
                return Failed(t, (Cand("step", s.name, attempt, etype, msg, key, chain),))
            t += s.retry.delay(attempt)
            attempt += 1

    def item(self, it: Item, v: Any, key: str, t: float, chain: frozenset[int]) -> Result:
        if isinstance(it, Then):
            return self.run(it.body, v, key, t, chain)
        if isinstance(it, Par):
            results = [
                self.run(b, v, child(key, f"p{i}"), t, chain) for i, b in enumerate(it.bodies)
            ]
            return join(results, tuple, t, chain)
        if isinstance(it, MapOf):
            items = list(v)
            limit = len(items) if it.concurrency is None else it.concurrency
            finishes: list[float] = []  # finish times of the items in flight
            results = []
            for i, x in enumerate(items):
                start = t if i < limit else heapq.heappop(finishes)
                res = self.run(it.body, x, child(key, f"m{i}"), start, chain)
                heapq.heappush(finishes, res.time)
                results.append(res)
            return join(results, list, t, chain)
        if isinstance(it, Branch):
            if holds(it.cond, v):
                return self.run(it.then, v, child(key, "t"), t, chain)
            if it.otherwise is not None:
                return self.run(it.otherwise, v, child(key, "f"), t, chain)
            return Done(v, t, chain)
        assert isinstance(it, Loop)
        for i in range(it.max_iterations):
            res = self.run(it.body, v, child(key, f"i{i}"), t, chain)
            if isinstance(res, Failed):
                return res
            v, t, chain = res.value, res.time, res.chain
            if holds(it.until, v):
                return Done(v, t, chain)
        fragment = f'loop at position "{key}" ran max_iterations={it.max_iterations} times'
        return Failed(t, (Cand("loop", None, 0, "LoopLimitExceeded", fragment, key, chain),))

    def machine(self, m: Machine, v: Any, key: str, t: float, chain: frozenset[int]) -> Result:
        by_name = {s.name: s for s in m.states}
        visits: Counter[str] = Counter()
        cur = by_name[m.start]
        for _ in range(STATE_FUEL):
            skey = child(key, f"{cur.name}#{visits[cur.name]}")
            visits[cur.name] += 1
            res = self.run(cur.body, v, skey, t, chain)
            if isinstance(res, Failed):
                return res
            v, t, chain = res.value, res.time, res.chain
            nxt = cur.next
            if nxt is None:
                return Done(v, t, chain)
            if isinstance(nxt, Goto):
                cur = by_name[nxt.target]
                continue
            if isinstance(nxt, Labels):
                assert isinstance(v, str), "label states end with a label step"
                target = dict(nxt.table).get(v)
                if target is None:
                    msg = f'state "{cur.name}" produced label "{v}"'
                    return Failed(
                        t, (Cand("definition", None, 0, "DefinitionError", msg, skey, chain),)
                    )
                cur = by_name[target]
                continue
            name = routed(nxt, v)
            if name not in by_name or (nxt.targets is not None and name not in nxt.targets):
                why = "a state of this workflow" if name not in by_name else "among its declared"
                msg = f'of state "{cur.name}" returned "{name}", which is not {why}'
                return Failed(
                    t, (Cand("definition", None, 0, "DefinitionError", msg, skey, chain),)
                )
            cur = by_name[name]
        raise NonTerminating(m.name)


def join(
    results: list[Result], build: Callable[[Any], Any], t: float, chain: frozenset[int]
) -> Result:
    """The outcome of concurrent children: all values, or the earliest failure(s)."""
    failed = [r for r in results if isinstance(r, Failed)]
    if failed:
        first = min(f.time for f in failed)
        return Failed(first, tuple(c for f in failed if f.time == first for c in f.cands))
    done = [r for r in results if isinstance(r, Done)]
    end = max((r.time for r in done), default=t)
    return Done(build(r.value for r in done), end, chain.union(*(r.chain for r in done)))


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
# Running and comparing.


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


# --------------------------------------------------------------------------------------------
# Targeted tests of semantics the random plans rarely pin down on their own.

Runner = Callable[[Workflow, Any, str], tuple[Run, float]]


@pytest.fixture(params=["sync", "async"])
def drive(request: pytest.FixtureRequest) -> Runner:
    """Runs a workflow on a fresh engine and virtual clock; returns the run and the time spent."""

    def go(wf: Workflow, value: Any, iid: str) -> tuple[Run, float]:
        clock = VirtualClock(START)
        engine = Engine(clock=clock)
        if request.param == "sync":
            r = engine.run(wf, value, id=iid)
        else:
            r = asyncio.run(engine.run_async(wf, value, id=iid))
        return r, clock.now() - START

    return go


def test_idempotency_keys_are_unique_per_position_and_iteration_and_stable_across_retries(
    drive: Runner,
) -> None:
    seen: list[tuple[str, int, str]] = []

    @step(retry=Retry(max_attempts=3, initial_delay=1.0, multiplier=2.0, jitter=0.0))
    def flaky(ctx: Context, x: Any) -> int:
        seen.append((ctx.position, ctx.attempt, ctx.idempotency_key))
        if ctx.attempt == 1:
            raise Boom(ctx.position)
        return num(x) + 1

    @step
    async def spread(ctx: Context, x: Any) -> list[Any]:
        seen.append((ctx.position, ctx.attempt, ctx.idempotency_key))
        return [x, x]

    wf = (
        Workflow("keys")
        .then(flaky)
        .loop(flaky, until=lambda v: num(v) >= 4, max_iterations=5)
        .parallel(flaky, flaky)
        .then(spread)
        .map(flaky, concurrency=1)
    )
    run, elapsed = drive(wf, 0, "inst")
    assert run.status is Status.COMPLETED, run.error
    assert run.output == [11, 11]  # 0 -> 1 -> 2, 3, 4 -> (5, 5) -> [(5, 5), (5, 5)] -> [11, 11]
    positions = ["0", "1.i0", "1.i1", "1.i2", "2.p0", "2.p1", "4.m0", "4.m1"]
    keys = {p: {k for q, _, k in seen if q == p} for p in positions}
    assert sorted({q for q, _, _ in seen}) == sorted([*positions, "3"])
    for p in positions:
        assert sorted(a for q, a, _ in seen if q == p) == [1, 2]
        assert keys[p] == {f"inst/{p}"}  # the same key on every attempt
    assert len({k for ks in keys.values() for k in ks}) == len(positions)
    # every retry waits 1s; the parallel branches wait together, map items (concurrency 1) do not
    assert elapsed == 1 + 3 + 1 + 2


def test_a_failing_parallel_branch_fails_the_run_and_names_the_step(drive: Runner) -> None:
    ran: list[str] = []

    @step
    def inc(ctx: Context, x: int) -> int:
        ran.append(ctx.position)
        return x + 1

    @step(retry=Retry(max_attempts=2, initial_delay=0.5, jitter=0.0))
    async def bad(ctx: Context, x: int) -> int:
        ran.append(ctx.position)
        raise ValueError(f"bad input {x}")

    @step
    def after(ctx: Context, xs: Any) -> int:
        ran.append(ctx.position)
        return num(xs)

    inner = Workflow("inner").then(inc).parallel(inc, bad)
    wf = Workflow("par-fail").then(inc).parallel(inc, inner).then(after)
    run, elapsed = drive(wf, 1, "pf")
    assert run.status is Status.FAILED
    err = run.error
    assert isinstance(err, WorkflowFailed)
    assert not isinstance(err, InvalidTransition)
    assert (err.step, err.attempts, err.error_type) == ("bad", 2, "ValueError")
    assert err.error_message == "bad input 3"
    assert "'bad'" in str(err)
    with pytest.raises(WorkflowFailed):
        run.result()
    assert "2" not in ran  # the step after the parallel block never ran
    assert Counter(ran) == Counter(["0", "1.p0", "1.p1.0", "1.p1.1.p0", "1.p1.1.p1", "1.p1.1.p1"])
    assert elapsed == 0.5


@pytest.mark.parametrize("concurrency", [None, 1, 3])
def test_map_over_an_empty_list_gives_an_empty_list(drive: Runner, concurrency: int | None) -> None:
    ran: list[Any] = []

    @step
    def body(ctx: Context, x: int) -> int:
        ran.append(x)
        return x

    @step
    def nothing(ctx: Context, x: int) -> list[int]:
        return []

    @step
    def size(ctx: Context, xs: list[int]) -> tuple[str, Any]:
        return ("after", xs)

    direct, _ = drive(Workflow("m0").map(body, concurrency=concurrency), [], "direct")
    assert direct.status is Status.COMPLETED
    assert direct.output == []
    wf = Workflow("m1").then(nothing).map(body, concurrency=concurrency).then(size)
    run, elapsed = drive(wf, 7, "made")
    assert run.status is Status.COMPLETED
    assert run.output == ("after", [])
    assert ran == []
    assert elapsed == 0


def test_a_loop_past_max_iterations_fails_and_one_at_the_bound_completes(drive: Runner) -> None:
    ran: list[str] = []

    @step
    def inc(ctx: Context, x: int) -> int:
        ran.append(ctx.position)
        return x + 1

    wf = Workflow("lp").loop(inc, until=lambda v: v >= 3, max_iterations=3)
    run, _ = drive(wf, 0, "at-bound")
    assert run.status is Status.COMPLETED
    assert run.output == 3
    assert ran == ["0.i0", "0.i1", "0.i2"]

    ran.clear()
    run, _ = drive(wf, -1, "past-bound")
    assert run.status is Status.FAILED
    assert isinstance(run.error, WorkflowFailed)
    assert "max_iterations" in str(run.error)
    assert "max_iterations=3" in run.error.error_message
    assert run.error.step is None
    assert ran == ["0.i0", "0.i1", "0.i2"]  # exactly max_iterations iterations ran


def test_state_positions_count_visits_per_state(drive: Runner) -> None:
    ran: list[str] = []

    @step
    def dec(ctx: Context, x: int) -> int:
        ran.append(ctx.position)
        return x - 1

    @step
    def classify(ctx: Context, x: int) -> str:
        ran.append(ctx.position)
        return "L0" if x % 2 == 0 else "L1"

    @step
    def done(ctx: Context, label: str) -> int:
        ran.append(ctx.position)
        return 10 if label == "L0" else 20

    sm = (
        Workflow("sm", start="dec")
        .state("dec", dec, next=lambda v: "dec" if v > 1 else "classify")
        .state("classify", classify, next={"L0": "done", "L1": "done"})
        .state("done", done)
    )
    wf = Workflow("outer").then(sm).loop(sm, until=lambda v: v >= 20, max_iterations=2)
    run, _ = drive(wf, 3, "st")
    assert run.status is Status.COMPLETED, run.error
    assert run.output == 20
    assert ran == [
        "0.dec#0",
        "0.dec#1",
        "0.classify#0",
        "0.done#0",
        *(f"1.i0.dec#{k}" for k in range(19)),
        "1.i0.classify#0",
        "1.i0.done#0",
    ]
