"""Workers: processes that run the instances other processes start, on a store they share.

``engine.start(...)`` only writes an instance (PENDING). A ``Worker`` claims instances whose plan
it has registered with a lease (owner + expiry), drives them with the same core as
``engine.run``, renews the lease by heartbeat while it holds them, and fences every commit with
the lease as well as the version, so a worker that lost its lease changes nothing. A suspended
instance is handed back (its lease released) and becomes due again by its timer or a signal, for
any worker. One claim also takes instances whose lease expired: a worker that died is replaced
without a separate rescuer.

Steps of a fan-out (a ``parallel`` block or a ``map``), and steps routed to a queue this worker
does not serve (``@step(queue="gpu")``), are handed out as *tasks*: small stored instances of
the reserved workflow ``!task`` that any worker serving the step's queue claims. The holder of
the instance waits for their outcomes (a note in its inbox says when one is ready) and takes
each as if the step had run in its own process. See ``docs/workers.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import socket
import threading
from typing import TYPE_CHECKING, Any

from tideflow import _core
from tideflow._args import check_count, check_text
from tideflow._async import _store_call, timed
from tideflow.errors import (
    Cancelled,
    InvalidArgument,
    LeaseLost,
    SignalError,
    StoreConflict,
    TideflowError,
    UnknownInstance,
)
from tideflow.retry import to_seconds
from tideflow.stores.base import Claim, Commit, InstanceMeta

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable
    from concurrent.futures import ThreadPoolExecutor
    from datetime import timedelta

    from tideflow._compile import CompiledWorkflow
    from tideflow.engine import Engine

__all__ = ["DEFAULT_LEASE", "DEFAULT_QUEUE", "TASK_WORKFLOW", "Worker"]

#: The lease a worker takes on what it claims, in seconds, unless ``Worker(lease=...)`` says.
DEFAULT_LEASE = 30.0
#: The queue of a step without ``queue=``, and the one a worker serves unless told others.
DEFAULT_QUEUE = "default"
#: The reserved workflow name of the tasks a worker hands out (see the module docs).
TASK_WORKFLOW = "!task"
#: The inbox note that a task of the instance has its outcome.
_TASK_DONE = "!task"

#: How long an idle worker waits at most between two looks at a store that cannot notify
#: (seconds); it starts at ``_POLL_MIN`` after it found work, doubling, with jitter.
_POLL_MAX = 1.0
_POLL_MIN = 0.01
#: How long the holder of an instance waits at most between two looks at its inbox for the
#: outcomes of the tasks it handed out, on a store that cannot notify.
_REMOTE_POLL_MAX = 0.25

# the answers of `AsyncRun` (see rust/bindings/src/async_run.rs)
_RUN, _WAIT, _DONE, _COMMIT, _INBOX, _LOAD, _CREATE = range(7)


class _Lost(Exception):
    """The worker lost its lease on an instance (it expired, or the instance was deleted)."""


class _Holding:
    """What a worker holds: one instance it drives, or one task it runs."""

    __slots__ = ("coro", "id", "inbox_after", "lost", "news", "remote", "slot", "step")

    def __init__(self, id: str) -> None:
        self.id = id
        self.lost = False
        #: Set when the store (or this process) says the instance had news.
        self.news = asyncio.Event()
        #: Task instance id -> the driver's task id, for the steps handed out and not back yet.
        self.remote: dict[str, int] = {}
        #: The asyncio task that drives it (cancelled when the lease is lost).
        self.coro: asyncio.Task[Any] | None = None
        #: The RemoteStep a task runs (its context is cancelled with its instance).
        self.step: Any = None
        #: The highest inbox number read for task notes.
        self.inbox_after = 0
        #: The concurrency slot (a named lease) held for it, for a workflow with a limit.
        self.slot: str | None = None


def _task_id(parent: str, key: str, base: int) -> str:
    """The id of the task that runs the step at ``key`` of ``parent`` from attempt ``base``."""
    return f"{parent}~{key}~{base}"


def _slot_group(workflow: str) -> str:
    """The named-lease group of the concurrency slots of ``workflow``."""
    return f"slot:{workflow}"


def _task_plan(queue: str, plan_hash: str) -> str:
    """The plan hash a task is indexed by: what it runs (the parent's plan) and where (queue)."""
    return f"{TASK_WORKFLOW}:{queue}:{plan_hash}"


class Worker:
    """Runs the instances of the workflows registered on ``engine`` that any process started,
    claiming them from its store with a lease; several workers (threads, processes, machines)
    share the work of one store.

    ``concurrency`` caps the steps this worker runs at once; ``queues`` names the step queues it
    serves (``["default"]`` unless given: ``["default", "gpu"]`` for both); ``lease`` is how
    long (seconds or a ``timedelta``) what it claims stays its own without a heartbeat (it
    renews every third of that while alive; a worker that dies is replaced once it expires)."""

    def __init__(
        self,
        engine: Engine,
        concurrency: int = 10,
        queues: Iterable[str] | None = None,
        lease: float | timedelta = DEFAULT_LEASE,
        *,
        name: str | None = None,
        spread: bool = True,
    ) -> None:
        from tideflow.engine import Engine

        if not isinstance(engine, Engine):
            raise InvalidArgument(f"Worker needs a tideflow.Engine, got {type(engine).__name__}")
        check_count(concurrency, "Worker(concurrency=)")
        if concurrency < 1:
            raise InvalidArgument(f"Worker(concurrency=) must be at least 1, got {concurrency}")
        if isinstance(queues, str):
            raise InvalidArgument(
                f"Worker(queues=) takes a list of queue names, got the str {queues!r} "
                f"(write queues=[{queues!r}])"
            )
        served = [DEFAULT_QUEUE] if queues is None else list(queues)
        for q in served:
            check_text(q, "a queue name")
        if not served:
            raise InvalidArgument("Worker(queues=) names no queue: a worker must serve one")
        seconds = to_seconds(lease, "Worker(lease=)", InvalidArgument)
        if seconds <= 0:
            raise InvalidArgument(f"Worker(lease=) must be positive, got {lease!r}")
        if name is not None:
            check_text(name, "Worker(name=)")
        #: The engine whose store and registered workflows the worker serves.
        self.engine = engine
        #: At most this many steps run at once.
        self.concurrency = concurrency
        #: The step queues this worker serves.
        self.queues: frozenset[str] = frozenset(served)
        #: The lease on what it claims, in seconds.
        self.lease = seconds
        #: Whether a fan-out's steps are handed to other workers (else run here, concurrently).
        self.spread = spread
        #: The lease owner this worker claims as (unique per worker).
        self.id = name if name is not None else _worker_id()
        self._held: dict[str, _Holding] = {}
        self._busy = 0  # held things that need a step slot (not parents waiting on tasks)
        self._stopping = False
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._slot_tasks: set[asyncio.Future[Any]] = set()
        #: What ran here: instances driven, tasks run, leases lost (for tests and logs).
        self.stats = {"instances": 0, "tasks": 0, "lost": 0}

    def __repr__(self) -> str:
        queues = ",".join(sorted(self.queues))
        return f"<tideflow Worker {self.id} concurrency={self.concurrency} queues={queues}>"

    # -- public control ---------------------------------------------------------------------

    def run(self) -> None:
        """Runs the worker in this thread until ``stop()`` (from another thread or a signal
        handler) or an error; what it holds is finished or handed back before it returns."""
        from tideflow.engine import _in_event_loop

        if _in_event_loop():
            raise TideflowError(
                "Worker.run() cannot run inside a running event loop; use "
                "`await worker.run_async()` there"
            )
        asyncio.run(self.run_async())

    def stop(self, drain: bool = True) -> None:
        """Asks the worker to stop; safe from any thread and from a signal handler.

        With ``drain`` (the default) it claims no new instances, finishes what it holds (each
        instance runs until it suspends or finishes; tasks of instances it holds still run),
        then ``run()`` returns. Without, it returns at once: the steps running are abandoned,
        and their leases expire so that other workers take over (the step runs again there,
        with the same idempotency key)."""
        with self._lock:
            self._draining = True
            if not drain:
                self._stopping = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._stop_soon, not drain)

    def _stop_soon(self, now: bool) -> None:
        assert self._wake is not None
        self._wake.set()
        if now:
            for h in list(self._held.values()):
                if h.coro is not None:
                    h.coro.cancel()

    async def run_async(self) -> None:
        """Runs the worker on the running event loop until ``stop()``."""
        from concurrent.futures import ThreadPoolExecutor

        if self._loop is not None:
            raise TideflowError(f"worker {self.id} is already running")
        engine = self.engine
        if not engine._by_hash:
            raise TideflowError(
                "the worker's engine has no registered workflow: call engine.register(...) "
                "with the workflows it should run"
            )
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"tideflow-{self.id}")
        engine._listeners.append(self._heard)
        watcher = None
        watch = getattr(engine.store, "watch", None)
        if callable(watch) and engine._core.async_store:
            await self._store(watch(0.0))  # subscribe before the first look
            watcher = asyncio.ensure_future(self._watch(watch))
        beat = asyncio.ensure_future(self._heartbeat())
        try:
            await self._make_slots()
            await self._claim_loop()
        finally:
            beat.cancel()
            if watcher is not None:
                watcher.cancel()
            holders = [h.coro for h in self._held.values() if h.coro is not None]
            if self._stopping:
                for c in holders:
                    c.cancel()
            if holders:
                await asyncio.gather(*holders, return_exceptions=True)
            await asyncio.gather(beat, *(w for w in [watcher] if w), return_exceptions=True)
            if self._slot_tasks:
                await asyncio.gather(*self._slot_tasks, return_exceptions=True)
            with contextlib.suppress(ValueError):
                engine._listeners.remove(self._heard)
            self._pool.shutdown(wait=not self._stopping, cancel_futures=True)
            self._loop = None
            self._wake = None

    # -- the claim loop ---------------------------------------------------------------------

    def _plan_hashes(self) -> list[str]:
        """What this worker claims: instances of its registered plans, and tasks of those plans
        on the queues it serves (while draining, only tasks, and only while it holds an
        instance that may wait for them)."""
        plans = list(self.engine._by_hash)
        tasks = [_task_plan(q, h) for h in plans for q in sorted(self.queues)]
        if self._draining:
            return tasks if self._held else []
        limited = {h for hs in self._limited().values() for h in hs}
        return [h for h in plans if h not in limited] + tasks

    def _limited(self) -> dict[str, list[str]]:
        """The plan hashes of each registered workflow with a concurrency limit, by name."""
        out: dict[str, list[str]] = {}
        for h, c in self.engine._by_hash.items():
            if c.workflow.concurrency is not None:
                out.setdefault(c.name, []).append(h)
        return out

    async def _make_slots(self) -> None:
        """Stores the concurrency slots of the limited workflows (create-or-return)."""
        from tideflow.leases import lease_rows

        engine = self.engine
        now = engine._core.now()
        for name in self._limited():
            limit = max(
                c.workflow.concurrency or 0 for c in engine._by_hash.values() if c.name == name
            )
            for meta, header in lease_rows(_slot_group(name), limit, now):
                await self._store(engine.store.create(meta, header, []), "create")

    async def _claim_limited(self, free: int) -> int:
        """Claims instances of the limited workflows, each under a slot lease of its workflow
        (so the store caps them across all workers); how many it took."""
        from tideflow.leases import lease_plan

        engine = self.engine
        taken = 0
        for name, hashes in self._limited().items():
            if free - taken <= 0:
                break
            now = engine._core.now()
            slots = await self._store(
                engine.store.claim(
                    Claim(self.id, free - taken, self.lease, now, [lease_plan(_slot_group(name))])
                ),
                "claim",
            )
            for slot in slots:
                got = await self._store(
                    engine.store.claim(Claim(self.id, 1, self.lease, now, hashes)), "claim"
                )
                if not got:
                    for rest in slots[slots.index(slot) :]:
                        await self._release(InstanceMeta(*rest).id)
                    break
                self._take(got[0], slot=InstanceMeta(*slot).id)
                taken += 1
        return taken

    async def _claim_loop(self) -> None:
        assert self._wake is not None
        engine = self.engine
        idle = _POLL_MIN
        while not self._stopping:
            if self._draining and not self._held:
                return
            free = self.concurrency - self._busy
            got: list[InstanceMeta] = []
            hashes = self._plan_hashes()
            limited = 0
            try:
                if free > 0 and hashes:
                    claim = Claim(self.id, free, self.lease, engine._core.now(), hashes)
                    got = await self._store(engine.store.claim(claim), "claim")
                    for meta in got:
                        self._take(meta)
                if free - len(got) > 0 and not self._draining and self._limited():
                    limited = await self._claim_limited(free - len(got))
            except TideflowError as e:
                # the store is unreachable or busy now (a lost connection, a locked SQLite
                # file): what is held goes on, and the worker looks again after a pause
                _log().warning("worker %s: claim failed, retrying: %s", self.id, e)
                await asyncio.sleep(_POLL_MAX * (0.5 + random.random()))
                continue
            if got or limited:
                idle = _POLL_MIN
                continue
            self._wake.clear()
            timeout = idle * (0.5 + random.random())  # jitter: workers do not poll in step
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            idle = _POLL_MIN if self._wake.is_set() else min(idle * 2, _POLL_MAX)

    def _take(self, meta: Any, slot: str | None = None) -> None:
        meta = InstanceMeta(*meta)
        h = _Holding(meta.id)
        h.slot = slot
        self._held[meta.id] = h
        self._busy += 1
        if meta.workflow == TASK_WORKFLOW:
            h.coro = asyncio.ensure_future(self._run_task(h, meta))
        else:
            h.coro = asyncio.ensure_future(self._drive(h, meta))
        h.coro.add_done_callback(functools.partial(self._dropped, h))

    def _dropped(self, h: _Holding, _done: object = None) -> None:
        self._held.pop(h.id, None)
        self._busy -= 1
        if h.slot is not None and not self._stopping and self._loop is not None:
            fut = asyncio.ensure_future(self._release(h.slot))
            self._slot_tasks.add(fut)
            fut.add_done_callback(self._slot_tasks.discard)
        if self._wake is not None:
            self._wake.set()

    def _heard(self, id: str) -> None:
        """News about instance ``id`` in this process (started, signalled, cancelled...)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._news, [id])

    def _news(self, ids: list[str]) -> None:
        for id in ids:
            h = self._held.get(id)
            if h is not None:
                h.news.set()
        if self._wake is not None:
            self._wake.set()

    async def _watch(self, watch: Any) -> None:
        """Hands the store's notifications to what waits for them."""
        while True:
            try:
                ids = await watch(_POLL_MAX * 10)
            except asyncio.CancelledError:
                raise
            except Exception:  # a store that cannot notify now: polling goes on meanwhile
                await asyncio.sleep(_POLL_MAX)
                continue
            if ids:
                self._news(list(ids))

    async def _heartbeat(self) -> None:
        """Renews every lease this worker holds, every third of the lease."""
        engine = self.engine
        while True:
            await asyncio.sleep(self.lease / 3)
            for h in list(self._held.values()):
                if h.lost:
                    continue
                try:
                    for id in (h.id, h.slot) if h.slot is not None else (h.id,):
                        await self._store(
                            engine.store.extend(id, self.id, self.lease, engine._core.now()),
                            "extend",
                        )
                except (LeaseLost, UnknownInstance):
                    self._lose(h)
                except TideflowError:
                    pass  # the store is unreachable now: the next beat tries again

    def _lose(self, h: _Holding) -> None:
        """The lease on ``h`` is gone: stop driving it (its commits would be refused anyway)."""
        if not h.lost:
            h.lost = True
            self.stats["lost"] += 1
            if h.coro is not None:
                h.coro.cancel()

    async def _store(self, call: Any, what: str = "call") -> Any:
        """Awaits an ``AsyncStore`` call, or returns a synchronous store's answer."""
        if asyncio.iscoroutine(call) or isinstance(call, asyncio.Future):
            return await _store_call(self.engine.store, what, call)
        return call

    async def _release(self, id: str) -> None:
        with contextlib.suppress(TideflowError):
            await self._store(self.engine.store.release(id, self.id), "release")

    # -- driving an instance ----------------------------------------------------------------

    async def _drive(self, h: _Holding, meta: InstanceMeta) -> None:
        engine = self.engine
        core = engine._core
        handle = None
        done = False
        try:
            handle = _core.AsyncRun.claimed(core, meta.id, meta.workflow, self.id, self.spread)
            self.stats["instances"] += 1
            done = await self._drive_run(h, handle, meta)
        except asyncio.CancelledError:
            if not (h.lost or self._stopping):
                raise
        except (_Lost, LeaseLost):
            h.lost = True
        finally:
            if not done and not h.lost and not self._stopping:
                await self._release(meta.id)

    async def _drive_run(self, h: _Holding, handle: Any, meta: InstanceMeta) -> bool:
        """Drives one claimed instance until it finishes (True) or suspends (False)."""
        engine = self.engine
        store: Any = engine.store
        iid = meta.id
        compiled = self._compiled(meta.plan_hash)
        local: dict[asyncio.Future[Any], int] = {}
        results: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        consumed: list[str] = []
        kind, arg = handle.next()
        while True:
            if kind == _RUN:
                remote = []
                for tid, fn, ctx, value, is_async, budget in arg:
                    step, key, attempt, interrupted = handle.task_info(tid)
                    queue = compiled.queues[step] if compiled is not None else DEFAULT_QUEUE
                    if queue not in self.queues or (self.spread and len(arg) > 1):
                        remote.append((tid, step, key, attempt - interrupted, queue))
                    elif is_async:
                        local[asyncio.ensure_future(timed(fn(ctx, value), budget))] = tid
                    else:
                        loop = asyncio.get_running_loop()
                        local[loop.run_in_executor(self._pool, fn, ctx, value)] = tid
                if remote:
                    await self._hand_out(h, iid, meta.plan_hash, remote, results)
                    if not local:
                        self._busy -= 1  # waiting on others frees this worker's slot
                        self._wake_claims()
                        try:
                            kind, arg = await self._await_remote(h, handle, results, local)
                        finally:
                            self._busy += 1
                        continue
                kind, arg = _WAIT, handle.deadline()
            elif kind == _WAIT:
                if handle.cancelling:
                    for fut in local:
                        fut.cancel()
                    for task_id, tid in list(h.remote.items()):
                        handle.fail(tid, Cancelled("the instance was cancelled"), advance=False)
                        del h.remote[task_id]
                if not local and not h.remote:
                    return False  # suspended (committed): handed back, due by timer or signal
                kind, arg = await self._await_remote(h, handle, results, local, arg)
            elif kind == _DONE:
                await self._forget(consumed)
                return True
            elif kind == _COMMIT:
                try:
                    await _store_call(store, "commit", store.commit(arg))
                except StoreConflict:
                    kind, arg = handle.conflicted()
                else:
                    kind, arg = handle.committed()
                    await self._forget(consumed)
            elif kind == _INBOX:
                kind, arg = handle.inbox(
                    await _store_call(store, "signals", store.signals(iid, arg))
                )
            elif kind == _LOAD:
                kind, arg = handle.reloaded(await _store_call(store, "load", store.load(iid)))
            else:  # pragma: no cover - the extension and this module disagree
                raise TideflowError(f"unknown driver answer {kind!r}")
            if kind in (_RUN, _WAIT) and not engine._core.async_store:
                await self._forget(consumed)

    def _compiled(self, plan_hash: str) -> CompiledWorkflow | None:
        return self.engine._by_hash.get(plan_hash)

    def _wake_claims(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _forget(self, consumed: list[str]) -> None:
        """Deletes the tasks whose outcomes the instance committed."""
        while consumed:
            task_id = consumed.pop()
            with contextlib.suppress(TideflowError):
                await self._store(self.engine.store.delete(task_id), "delete")

    async def _hand_out(
        self,
        h: _Holding,
        iid: str,
        plan_hash: str,
        remote: list[tuple[int, int, str, int, str]],
        results: asyncio.Queue[tuple[int, bytes]],
    ) -> None:
        """Stores a task for each step handed to other workers (or finds the one a predecessor
        stored: a takeover hands out the same run again under the same id)."""
        engine = self.engine
        now = engine._core.now()
        calls = []
        for tid, _step, key, base, queue in remote:
            task_id = _task_id(iid, key, base)
            h.remote[task_id] = tid
            info = json.dumps({"parent": iid, "key": key, "base": base}).encode()
            tplan = _task_plan(queue, plan_hash)
            header = _core.task_header(tplan, info, now)
            meta = InstanceMeta(
                task_id, TASK_WORKFLOW, tplan, "pending", 1, now, now, now, None, None, None
            )
            calls.append((task_id, self._store(engine.store.create(meta, header, []), "create")))
        if engine._core.async_store:
            answers = await asyncio.gather(*(c for _, c in calls))
        else:
            answers = [await c for _, c in calls]
        for (task_id, _), existing in zip(calls, answers, strict=True):
            if existing is not None:  # handed out before (a takeover): perhaps already done
                _info, outcome = _core.task_fields(task_id, existing[1])
                if outcome is not None:
                    results.put_nowait((h.remote.pop(task_id), outcome))
        self._wake_claims()

    async def _await_remote(
        self,
        h: _Holding,
        handle: Any,
        results: asyncio.Queue[tuple[int, bytes]],
        local: dict[asyncio.Future[Any], int],
        deadline: float | None = None,
    ) -> tuple[int, Any]:
        """Waits for the first of: a local step's end, a task's outcome, news for the instance
        (a signal, a cancellation), the deadline; hands back everything that ended."""
        engine = self.engine
        core = engine._core
        poll = _POLL_MIN
        looked = asyncio.get_running_loop().time()
        while True:
            if not results.empty():
                break
            if local and asyncio.get_running_loop().time() - looked >= _POLL_MAX:
                # a step runs here: look at the inbox now and then, for a cancellation sent
                # from a process this one hears nothing from (a store that cannot notify)
                handle.wake()
                break
            waits: list[Awaitable[Any]] = [*local]
            news = asyncio.ensure_future(h.news.wait())
            waits.append(news)
            timeout = None if deadline is None else max(0.0, deadline - core.now())
            if h.remote and (timeout is None or timeout > poll):
                timeout = poll
            if local and (timeout is None or timeout > _POLL_MAX):
                timeout = _POLL_MAX
            try:
                done, _ = await asyncio.wait(
                    waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                news.cancel()
            if any(f is not news for f in done) or (
                deadline is not None and core.now() >= deadline
            ):
                break
            heard = h.news.is_set()
            h.news.clear()
            if h.remote:
                h.inbox_after = await self._collect(h, results, h.inbox_after)
                poll = _POLL_MIN if heard else min(poll * 2, _REMOTE_POLL_MAX)
            if heard and results.empty():
                handle.wake()  # a signal or cancellation: the policy reads the inbox
                break
        for fut in [f for f in local if f.done()]:
            tid = local.pop(fut)
            if fut.cancelled():
                handle.fail(
                    tid, Cancelled("the step was cancelled with its instance"), advance=False
                )
                continue
            err = fut.exception()
            if err is None:
                handle.complete(tid, fut.result(), advance=False)
            elif isinstance(err, (Exception, Cancelled)):
                handle.fail(tid, err, advance=False)
            else:
                raise err
        while not results.empty():
            tid, outcome = results.get_nowait()
            handle.remote(tid, outcome, advance=False)
        answer: tuple[int, Any] = handle.next()
        return answer

    async def _collect(
        self,
        h: _Holding,
        results: asyncio.Queue[tuple[int, bytes]],
        after: int,
    ) -> int:
        """Reads the instance's inbox for notes that tasks have their outcomes, and fetches
        those outcomes; returns the highest inbox number read."""
        engine = self.engine
        raw = await self._store(engine.store.signals(h.id, after), "signals")
        newest = after
        woken = False
        for seq, name, payload in _core.inbox_entries(h.id, [tuple(r) for r in raw]):
            newest = max(newest, seq)
            if name != _TASK_DONE:
                woken = True
                continue
            task_id = payload.decode()
            tid = h.remote.pop(task_id, None)
            if tid is None:
                continue
            stored = await self._store(engine.store.get(task_id), "get")
            outcome = None if stored is None else _core.task_fields(task_id, stored[1])[1]
            if outcome is None:  # the note came before the outcome was readable: look again
                h.remote[task_id] = tid
                continue
            results.put_nowait((tid, outcome))
        if woken:
            h.news.set()
        return newest

    # -- running a task ---------------------------------------------------------------------

    async def _run_task(self, h: _Holding, meta: InstanceMeta) -> None:
        engine = self.engine
        store: Any = engine.store
        version = meta.version
        finished = False
        try:
            stored = await self._store(store.get(meta.id), "get")
            if stored is None:
                return
            info_bytes, outcome = _core.task_fields(meta.id, stored[1])
            info = json.loads(info_bytes)
            parent, key, base = info["parent"], info["key"], info["base"]
            if outcome is None:
                loaded = await self._store(store.load(parent), "load")
                step = _core.RemoteStep.open(engine._core, loaded, key, base)
                if isinstance(step, str):
                    outcome = b"s" + step.encode()
                elif version - 1 >= step.max_runs:
                    outcome = step.interrupted(version - 1)
                else:
                    # a start is recorded before the step runs: a worker that dies in it is
                    # seen by the next one, which counts it against the step's budget
                    start = _commit(meta.id, version, "running", None, self.id, engine._core.now())
                    await self._store(store.commit(start), "commit")
                    version += 1
                    h.step = step
                    self.stats["tasks"] += 1
                    outcome = await self._call_step(step)
                header = _core.task_header(meta.plan_hash, info_bytes, meta.created_at, outcome)
                end = _commit(meta.id, version, "completed", header, self.id, engine._core.now())
                await self._store(store.commit(end), "commit")
            finished = True
            await self._tell_parent(parent, meta.id)
        except asyncio.CancelledError:
            if not (h.lost or self._stopping):
                raise
        except (LeaseLost, _Lost):
            h.lost = True
        finally:
            if not finished and not h.lost and not self._stopping:
                await self._release(meta.id)

    async def _call_step(self, step: Any) -> bytes:
        """Runs a task's step as its holder would have, and returns its outcome bytes."""
        fn, ctx, value, is_async, budget = step.call()
        try:
            if is_async:
                out = await timed(fn(ctx, value), budget)
            else:
                out = await asyncio.get_running_loop().run_in_executor(self._pool, fn, ctx, value)
        except (Exception, Cancelled) as exc:
            return bytes(step.fail(exc))
        return bytes(step.complete(out))

    async def _tell_parent(self, parent: str, task_id: str) -> None:
        """Notes in the parent's inbox that the task has its outcome (and wakes its holder)."""
        engine = self.engine
        now = engine._core.now()
        record = _core.internal_signal(_TASK_DONE, task_id.encode(), now)
        with contextlib.suppress(SignalError, UnknownInstance):
            await self._store(engine.store.send_signal(parent, record, now), "send_signal")
        held = self._held.get(parent)
        if held is not None:
            held.news.set()


def _commit(
    id: str, version: int, status: str, header: bytes | None, owner: str, now: float
) -> Commit:
    """A commit of a task instance (no log records: its state is in its header)."""
    return Commit(id, version, status, now, None, header, [], 0, owner, None)


def _log() -> Any:
    import logging

    return logging.getLogger("tideflow.worker")


def _worker_id() -> str:
    """A worker id that says where it runs: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
