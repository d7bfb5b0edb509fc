"""The program the crash tests run in a subprocess: ``python -m tests.crash.worker CONFIG_JSON``.

It builds workflows from small JSON plans (so that the test process and every worker process
build exactly the same definitions, with the same plan hashes), runs one instance or recovers all
unfinished ones on a SQLite file, prints one JSON line per finished run, and SIGKILLs itself at the
kill point the config names.

Every successful step attempt appends its side effect to a file: one line
``<idempotency key> <attempt>\\n``, written with O_APPEND in a single ``write`` and fsynced before
the step goes on, so the file reflects exactly how far each step got when the process died.

Plans are lists of nodes (a pipeline); a node is a JSON list:

``["step"]``, ``["astep"]`` (async), ``["inc"]`` (adds 1), ``["flaky"]`` (raises on attempt 1,
retried at once, up to 3 attempts), ``["backoff"]`` (the same, retried after 500 ms, longer than a slow server's commit),
``["doomed"]`` (always raises; 2 attempts, retried at once) · ``["nap"]`` (a durable sleep of
``NAP`` seconds) · ``["sig"]`` (a wait for the signal ``go``, which ``finish`` sends once the instance waits for it;
its payload, the number 7, becomes the value) · ``["tmo"]`` (a wait for a signal that never comes, timing out after ``NAP``
seconds onto a step) · ``["seq", [node, ...]]``
(a sub-workflow) · ``["par", [node, ...]]`` · ``["map", k, concurrency, node]`` (a step fanning
out to ``k`` items, then a map) ·
``["loop", cond, max_iterations, node]`` · ``["branch", cond, then, otherwise_or_null]``, where
``cond`` is ``"even"`` or ``"five"`` (the folded value is even / a multiple of 5) ·
``["states", a, b]`` (a state machine: state ``a`` runs node ``a``, then a router goes to ``b``
(node ``b``) on an even value, else to ``c``; ``b`` goes to ``c``; ``c`` is a step and ends).

A kill point is ``{"phase": ..., "position": ..., "attempt": ..., "ordinal": ...}`` (any of the
last three may be left out; all given ones must match the step invocation):

- ``start``: inside the step, before its side effect. The previous step boundary is committed;
  this step has been handed out (and recorded as such) but has done nothing.
- ``end``: inside the step, after its side effect was written and synced, before it returns: the
  step's work happened but its result was never committed.
- ``commit``: the step returns normally, and a killer process (forked at startup, blocked on a
  pipe) is woken as it returns and SIGKILLs the worker ``delay_us`` microseconds later (default 0),
  while the engine encodes and commits the result. The kill races the commit: it may land before,
  during or after it (or even in a later step). Tests must accept every outcome and use the
  committed history to tell which one happened.
- ``backoff``: when the engine first waits on the clock (a retry backoff; sync driver only).
- ``open``: like ``commit``, but the killer is woken before the worker opens the store, so the
  kill lands (after ``delay_us``) while it creates or opens the SQLite file, creates the instance
  or runs its first steps.
- ``run``: the same, woken once the store is open, just before ``engine.run``/``recover()``: the
  kill lands while the engine reads and replays the stored records, commits the tasks it hands
  out again, or runs steps.

Before killing, the worker writes the killed invocation to the ``marker`` file as JSON.

A gate ``{"position": p, "effects": path, "key": k}`` makes the step at position ``p`` wait until
another process has written the side effect of ``k`` to ``path`` (to overlap two processes).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from tideflow import Engine, Retry, Run, Step, UnknownInstance, Workflow, step

__all__ = [
    "NAP",
    "Invocation",
    "build",
    "configure",
    "describe",
    "finish",
    "fold",
    "invocations",
    "main",
    "read_effects",
    "store_url",
]

#: A step invocation as the worker logs it: ordinal (1-based, per process), position, attempt,
#: idempotency key, step name, and whether this attempt raises.
Invocation = dict[str, Any]


class _State:
    effects: str | None = None
    marker: str | None = None
    kill: dict[str, Any] | None = None
    ordinal = 0
    log: list[Invocation] = []
    gate: dict[str, str] | None = None  # {"position", "effects", "key"}: wait for another process
    killer: int | None = None  # the pipe to the killer process (commit, open and run kills)
    fired = False


_S = _State()

#: How long a worker whose killer process was woken waits for it before exiting (it never gets to
#: the end of that wait).
WORKER_GRACE = 30.0


def configure(
    effects: str | None, kill: dict[str, Any] | None = None, marker: str | None = None
) -> None:
    """Sets where side effects go and where (if anywhere) to die; resets the invocation log."""
    _S.effects, _S.kill, _S.marker = effects, kill, marker
    _S.ordinal = 0
    _S.log = []
    _S.killer = None
    if kill is not None and kill.get("phase") in ("commit", "open", "run"):
        _S.killer = _fork_killer(float(kill.get("delay_us", 0)) / 1e6)


def _fork_killer(delay: float) -> int:
    """Forks a process that SIGKILLs this one ``delay`` seconds after a byte arrives on the pipe
    whose write end is returned. Being another process, it needs nothing from this one (not even
    the GIL) to strike while this one is inside the engine's commit."""
    r, w = os.pipe()
    target = os.getpid()
    if os.fork() == 0:  # the killer
        try:
            os.close(w)
            for fd in (0, 1, 2):  # do not hold the test's pipes open
                os.close(fd)
            if os.read(r, 1):
                until = time.perf_counter() + delay
                while time.perf_counter() < until:
                    pass
                os.kill(target, signal.SIGKILL)
        finally:
            os._exit(0)
    os.close(r)
    return w


def _wait_for_effect(path: str, key: str, timeout: float = 30.0) -> None:
    """Blocks until another process has written the side effect of ``key`` to ``path``."""
    until = time.monotonic() + timeout
    while not any(k == key for k, _ in read_effects(path)):
        if time.monotonic() > until:
            raise TimeoutError(f"no side effect of {key} in {path} after {timeout} s")
        time.sleep(0.001)


def invocations() -> list[Invocation]:
    """Every step invocation of this process since the last ``configure``, in order."""
    return list(_S.log)


def _write_synced(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one unbuffered write: nothing to flush
        os.fsync(fd)
    finally:
        os.close(fd)


def _die(phase: str, inv: Invocation) -> None:
    if _S.marker is not None:
        _write_synced(_S.marker, (json.dumps({**inv, "phase": phase}) + "\n").encode())
    _S.kill = None
    if phase in ("commit", "open", "run") and _S.killer is not None:
        os.write(_S.killer, b"k")  # and return: the killer strikes while the engine works
        _S.fired = True
        return
    os.kill(os.getpid(), signal.SIGKILL)


def _maybe_kill(phase: str, inv: Invocation) -> None:
    k = _S.kill
    if k is None or k.get("phase") != phase:
        return
    if all(k[f] == inv[f] for f in ("position", "attempt", "ordinal") if k.get(f) is not None):
        _die(phase, inv)


def fold(v: Any) -> int:
    """Reduces any step output (int, or lists/tuples of them) to one int."""
    if v is None:
        return 0
    if isinstance(v, (list, tuple)):
        return sum(fold(x) for x in v)
    return int(v)


def is_even(v: Any) -> bool:
    return fold(v) % 2 == 0


def is_five(v: Any) -> bool:
    return fold(v) % 5 == 0


CONDITIONS = {"even": is_even, "five": is_five}


def route(v: Any) -> str:
    """The router of a ``states`` node: state ``b`` on an even value, else straight to ``c``."""
    return "b" if is_even(v) else "c"


class Flaky(Exception):
    """What a ``flaky`` step raises on its first attempt (and a ``doomed`` one always)."""


def _body(kind: str, name: str, arg: int, ctx: Any, value: Any) -> Any:
    _S.ordinal += 1
    fails = kind == "doomed" or (kind in ("flaky", "backoff") and ctx.attempt == 1)
    inv: Invocation = {
        "ordinal": _S.ordinal,
        "position": ctx.position,
        "attempt": ctx.attempt,
        "key": ctx.idempotency_key,
        "step": name,
        "fails": fails,
    }
    _S.log.append(inv)
    gate = _S.gate
    if gate is not None and gate["position"] == ctx.position:
        _wait_for_effect(gate["effects"], gate["key"])
    _maybe_kill("start", inv)
    if kind == "inc":
        out: Any = fold(value) + 1
    elif kind == "fan":
        out = [fold(value) + i for i in range(arg)]
    else:
        out = (fold(value) * 7919 + zlib.crc32(name.encode())) % 1_000_003
    if not fails and _S.effects is not None:
        _write_synced(_S.effects, f"{ctx.idempotency_key} {ctx.attempt}\n".encode())
    _maybe_kill("end", inv)
    _maybe_kill("commit", inv)
    if fails:
        raise Flaky(f"{name} fails on attempt {ctx.attempt}")
    return out


def _make_step(kind: str, name: str, arg: int = 0) -> Step[Any, Any]:
    # Retries are due at once (no delay), so that when they run relative to other steps does not
    # depend on how long steps take: a worker on the system clock then runs the steps of a plan in
    # the same order as the reference run on a virtual clock, and reaches every kill point it did.
    retry = None
    if kind == "flaky":
        retry = Retry(max_attempts=3, initial_delay=0)
    elif kind == "doomed":
        retry = Retry(max_attempts=2, initial_delay=0)
    elif kind == "backoff":
        retry = Retry(max_attempts=3, initial_delay=0.5)  # outlasts a slow server's commit
    if kind == "astep":

        async def run_async(ctx: Any, value: Any) -> Any:
            await asyncio.sleep(0)  # let the other branches of a wave start first
            return _body(kind, name, arg, ctx, value)

        return step(run_async, name=name, retry=retry)

    def run(ctx: Any, value: Any) -> Any:
        return _body(kind, name, arg, ctx, value)

    return step(run, name=name, retry=retry)


_LEAVES = ("step", "astep", "inc", "flaky", "doomed", "backoff")

#: The length of a ``nap`` (a durable sleep) and of a ``tmo`` wait's timeout, in seconds.
NAP = 0.02


class _Builder:
    def __init__(self) -> None:
        self.steps = 0
        self.subs = 0

    def step(self, kind: str, arg: int = 0) -> Step[Any, Any]:
        self.steps += 1
        return _make_step(kind, f"{kind}{self.steps}", arg)

    def pipeline(self, name: str, nodes: list[Any]) -> Workflow:
        wf = Workflow(name)
        for n in nodes:
            wf = self.append(wf, n)
        return wf

    def sub(self, nodes: list[Any]) -> Workflow:
        self.subs += 1
        return self.pipeline(f"sub{self.subs}", nodes)

    def runnable(self, n: list[Any]) -> Step[Any, Any] | Workflow:
        if n[0] in _LEAVES:
            return self.step(n[0])
        if n[0] == "seq":
            return self.sub(n[1])
        return self.sub([n])  # a nap or a tmo too: a one-node sub-workflow

    def append(self, wf: Workflow, n: list[Any]) -> Workflow:
        kind = n[0]
        if kind in _LEAVES:
            return wf.then(self.step(kind))
        if kind == "seq":
            return wf.then(self.sub(n[1]))
        if kind == "nap":
            return wf.sleep(NAP)
        if kind == "tmo":
            return wf.wait_signal("never", timeout=NAP, on_timeout=self.step("step"))
        if kind == "sig":
            return wf.wait_signal("go")
        if kind == "par":
            return wf.parallel(*[self.runnable(c) for c in n[1]])
        if kind == "map":
            _, k, concurrency, body = n
            return wf.then(self.step("fan", k)).map(self.runnable(body), concurrency=concurrency)
        if kind == "loop":
            _, cond, max_iterations, body = n
            return wf.loop(
                self.runnable(body), until=CONDITIONS[cond], max_iterations=max_iterations
            )
        if kind == "branch":
            _, cond, then, otherwise = n
            other = None if otherwise is None else self.runnable(otherwise)
            return wf.branch(CONDITIONS[cond], self.runnable(then), other)
        if kind == "states":
            _, a, b = n
            self.subs += 1
            machine = (
                Workflow(f"sm{self.subs}", start="a")
                .state("a", self.runnable(a), next=route)
                .state("b", self.runnable(b), next="c")
                .state("c", self.step("step"))
            )
            return wf.then(machine)
        raise ValueError(f"unknown plan node {n!r}")


def uses_signals(workflows: list[dict[str, Any]]) -> bool:
    """Whether a plan has a ``sig`` node (a wait that needs someone to send ``go``)."""
    return '"sig"' in json.dumps([w["plan"] for w in workflows])


def build(name: str, plan: list[Any]) -> Workflow:
    """The workflow a plan describes (the same definition, and plan hash, in every process)."""
    return _Builder().pipeline(name, plan)


def signal_when_waiting(engine: Engine, instance_id: str) -> threading.Thread:
    """Starts a thread that sends ``go`` (payload 7) once the instance waits for it, as another
    process would while ``run_async`` holds the instance in this one."""

    def watch() -> None:
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            try:
                waits = engine.get(instance_id).waiting_for()
            except UnknownInstance:
                waits = []
            if any(w.kind == "signal" and w.signal == "go" for w in waits):
                engine.signal(instance_id, "go", 7)
                return
            time.sleep(0.01)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def finish(engine: Engine, run: Run, pause: Callable[[], None]) -> Run:
    """Drives a suspended run on to its end the way a service does: ``pause()`` (until its
    timers are due), then ``run_due()``, as often as it takes; an instance waiting for the
    signal ``go`` is sent it (payload 7), once per wait."""
    for _ in range(10_000):
        if run.status.finished:
            return run
        if any(w.kind == "signal" and w.signal == "go" for w in run.waiting_for()):
            engine.signal(run.id, "go", 7)
        pause()
        engine.run_due()
        run = engine.get(run.id)
    raise RuntimeError(f"instance {run.id!r} never finished")


def describe(run: Run) -> dict[str, Any]:
    """A run as JSON: status, output (tuples become lists), error message."""
    return {
        "id": run.id,
        "status": run.status.value,
        "output": json.loads(json.dumps(run.output)),
        "error": None if run.error is None else str(run.error),
    }


def read_effects(path: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """The side-effect lines written so far, as (idempotency key, attempt)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        key, attempt = line.rsplit(" ", 1)
        out.append((key, int(attempt)))
    return out


def store_url(db: str, durability: str, url: str | None = None) -> str:
    """The store URL: ``url`` (a server store's) when given, else the SQLite file at ``db``."""
    if url is not None:
        return url
    return f"sqlite:///{db}?durability={durability}"


class KillClock:
    """The system clock, except that waiting on it is a kill point (``backoff``)."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        k = _S.kill
        if k is not None and k.get("phase") == "backoff":
            _die("backoff", {"ordinal": _S.ordinal, "seconds": seconds})
        time.sleep(seconds)


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    configure(cfg["effects"], cfg.get("kill"), cfg.get("marker"))
    _S.gate = cfg.get("gate")
    if _S.kill is not None and _S.kill["phase"] == "open":
        _die("open", {})
    url = store_url(cfg["db"], cfg.get("durability", "normal"), cfg.get("url"))
    engine = Engine(store=url, clock=KillClock())
    wfs = {w["name"]: build(w["name"], w["plan"]) for w in cfg["workflows"]}
    engine.register(*wfs.values())
    if _S.kill is not None and _S.kill["phase"] == "run":
        _die("run", {})
    if cfg["mode"] == "run":
        r = cfg["run"]
        wf = wfs[r["workflow"]]
        if cfg.get("driver") == "async":
            if uses_signals(cfg["workflows"]):
                signal_when_waiting(engine, r["id"])
            runs = [asyncio.run(engine.run_async(wf, r["input"], id=r["id"]))]
        else:
            runs = [engine.run(wf, r["input"], id=r["id"])]
    else:
        runs = engine.recover()
    # a sync run stops at a durable sleep or a wait: go on through run_due, as a service would
    runs = [finish(engine, run, lambda: time.sleep(NAP / 4)) for run in runs]
    for run in runs:
        print(json.dumps(describe(run)), flush=True)
    if _S.fired:
        time.sleep(WORKER_GRACE)  # the killer is on its way: wait for it
    engine.close()
    return 0


if __name__ == "__main__":
    # Run under the importable name, not as __main__: the names of conditions (and so the plan
    # hashes and error messages) must be the same as in the test process.
    from tests.crash.worker import main as _main

    sys.exit(_main(sys.argv[1:]))
