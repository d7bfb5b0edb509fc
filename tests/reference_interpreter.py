"""The reference interpreter for tests/test_reference.py: plans as data, and what they do.

A plan is plain data (pipelines of ``then``/``parallel``/``map``/``branch``/``loop``, nested
sub-workflows, and explicit state machines with gotos, label tables and routers, cycles included),
together with injected step failures and retry policies. ``Reference`` evaluates it with a small
recursive interpreter. The interpreter is *timed*: it knows when, on the virtual clock, every
attempt of every step position happens, so it predicts the status, the output or the failing step
and its attempt count, the attempts made at each position (with their inputs), and the virtual
time spent waiting for retries.

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
"""

from __future__ import annotations

import heapq
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

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
