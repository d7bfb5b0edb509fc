"""The engine: runs workflows to completion on a store, synchronously or on asyncio.

This module (with ``_compile``) is the only importer of the native extension ``tideflow._core``.
"""

from __future__ import annotations

import os
import sys

from tideflow import _core
from tideflow._args import check_count, check_text
from tideflow.errors import DefinitionError, InvalidArgument, LeaseLost, TideflowError
from tideflow.history import HistoryEvent, Waiting, events_from
from tideflow.retry import to_seconds
from tideflow.run import InvalidTransition, Run, Status, StepEvent, _error_from
from tideflow.workflow import Workflow

TYPE_CHECKING = False  # (see tideflow.retry)
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

    from tideflow._compile import CompiledWorkflow
    from tideflow.retry import Duration

__all__ = ["Context", "Engine", "InvalidTransition", "Run", "Status", "StepEvent", "VirtualClock"]

#: What a step receives as its first argument (instance id, step name, attempt, idempotency key).
Context = _core.Context
#: A clock that only moves when told to (or when the engine would wait): tests never sleep.
VirtualClock = _core.VirtualClock


#: How often an idle ``run_async`` on a shared store reads its inbox (see docs/api-waiting.md).
_POLL_SECONDS = 1.0

#: How many instances ``list`` and ``recover`` read from the store at a time.
_PAGE = 500

_UNFINISHED = ["pending", "running", "suspended"]

_loops: Any = None  # a threading.local, created on first use (keeps `threading` off the import)


def _run_coroutine(coro: Any, timeout: float | None = None) -> Any:
    """Runs an async step's coroutine to completion for the synchronous driver (cancelled, as a
    ``StepTimeout``, past the step's timeout)."""
    import asyncio

    if _in_event_loop():
        coro.close()
        raise TideflowError(
            "engine.run() cannot run an async step inside a running event loop; "
            "use `await engine.run_async(...)` there"
        )
    global _loops
    if _loops is None:
        import threading

        _loops = threading.local()
    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _loops.loop = loop
        import atexit

        atexit.register(loop.close)
    from tideflow._async import timed

    return loop.run_until_complete(timed(coro, timeout))


_store_loop: Any = None  # the event loop of the thread that runs AsyncStore calls for the sync API


def _run_store_call(coro: Any, _timeout: float | None = None) -> Any:
    """Runs a coroutine of an ``AsyncStore`` to completion for the synchronous API (``run``,
    ``signal``, ``get``...): always on one event loop of its own, in a helper thread, so that it
    also works from inside a running event loop (a sync call in an async step), and the store
    always sees the same loop on these paths. ``run_async`` awaits the store on the caller's loop
    instead."""
    import asyncio

    global _store_loop
    if _store_loop is None or _store_loop.is_closed():
        import threading

        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="tideflow-store", daemon=True).start()
        _store_loop = loop
    return asyncio.run_coroutine_threadsafe(coro, _store_loop).result()


def _in_event_loop() -> bool:
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _new_id() -> str:
    return os.urandom(16).hex()


class Engine:
    """Runs workflows on a store (in memory by default) with an injectable clock."""

    def __init__(self, store: object = None, clock: object = None, observer: object = None) -> None:
        from tideflow.codec import to_jsonable
        from tideflow.stores import parse_store

        if isinstance(store, str):
            check_text(store, "store", empty=True)
        #: The store the engine runs on: a ``MemoryStore``, a ``SQLiteStore`` (both native), or the
        #: store written in Python that was given (``tideflow.stores.base.Store`` or ``AsyncStore``).
        self.store: Any = parse_store(store)
        native, py_store = (
            (self.store, None) if isinstance(self.store, _core.NativeStore) else (None, self.store)
        )
        self._notify: Any = None
        if observer is not None:
            from tideflow.observe import notifier

            self._notify = notifier(observer)
        self._core = _core.Engine(
            to_jsonable, _run_coroutine, clock, native, py_store, self._notify, _run_store_call
        )
        self.clock = clock
        self.observer = observer
        self._by_name: dict[str, CompiledWorkflow] = {}
        #: Every registered plan, by hash (several versions of one name may be registered).
        self._by_hash: dict[str, CompiledWorkflow] = {}
        self._wakers: dict[str, tuple[Any, Any]] = {}  # id -> (loop, asyncio.Event) of a driver
        #: Told the id of every instance this process starts, signals or cancels (the workers
        #: running on this engine, so that they need not wait for the store to say so).
        self._listeners: list[Any] = []
        #: How often (seconds, real time) an idle ``run_async`` looks at a store that other
        #: processes share, for their signals, cancellations and completions; None in memory.
        self._poll: float | None = _POLL_SECONDS if self._core.shared_store else None

    def register(self, *workflows: Workflow) -> None:
        """Validates and registers workflows so that their instances can be run and resumed."""
        for w in workflows:
            self._compiled(w)

    def _compiled(self, w: Workflow) -> CompiledWorkflow:
        if not isinstance(w, Workflow):
            raise DefinitionError(f"expected a Workflow, got {type(w).__name__}")
        c = w.compile()
        self._core.register(c.core)
        self._by_name[c.name] = c
        self._by_hash[c.hash] = c
        return c

    def workflows(self) -> list[Workflow]:
        """The workflows registered on this engine (``register``, ``run``, ``start``...), every
        version, in the order they were first registered."""
        return [c.workflow for c in self._by_hash.values()]

    def _run_of(
        self, id: str, workflow: str, outcome: tuple[str, Any, bytes | None], plan_hash: str
    ) -> Run:
        status, output, err = outcome
        return Run(id, workflow, Status(status), output, _error_from(id, err), plan_hash, self)

    def run(self, workflow: Workflow, input: Any = None, *, id: str | None = None) -> Run:
        """Runs ``workflow`` on ``input`` in this thread until it completes, fails or suspends.

        With ``id`` of an instance that already finished, returns its stored Run and runs nothing.
        """
        c = self._compiled(workflow)
        if c.has_async and _in_event_loop():
            raise TideflowError(
                f"workflow {c.name!r} has async steps and engine.run() was called inside a running "
                "event loop; use `await engine.run_async(...)` there"
            )
        iid = _new_id() if id is None else _check_id(id)
        return self._run_of(iid, c.name, self._core.run(c.core, iid, input), c.hash)

    def start(self, workflow: Workflow, input: Any = None, *, id: str | None = None) -> Run:
        """Writes a new instance of ``workflow`` on ``input`` as PENDING and runs nothing: a later
        ``resume(id)``, ``run_due()``, ``recover()`` (or, in a later release, a worker) runs it.
        With the ``id`` of an existing instance, changes nothing and returns its stored Run."""
        c = self._compiled(workflow)
        iid = _new_id() if id is None else _check_id(id)
        status = self._core.start(c.core, iid, input)
        self._tell(iid)
        if status == Status.PENDING.value:
            return Run(iid, c.name, Status.PENDING, None, None, c.hash, self)
        return self.get(iid)

    async def run_async(
        self, workflow: Workflow, input: Any = None, *, id: str | None = None
    ) -> Run:
        """Runs ``workflow`` on asyncio: async steps of a parallel block or map run concurrently."""
        c = self._compiled(workflow)
        iid = _new_id() if id is None else _check_id(id)
        from tideflow._async import drive

        handle = _core.AsyncRun(self._core, c.core, iid, input)
        await drive(self, handle, iid)
        return self._run_of(iid, c.name, handle.outcome(), c.hash)

    def get(self, id: str) -> Run:
        """The stored state of instance ``id``; raises UnknownInstance if there is none. It never
        raises for an instance whose plan is not registered: see ``Run.typed``."""
        iid, workflow, status, output, err, _created, _updated, plan_hash, untyped = self._core.get(
            _check_id(id)
        )
        run = self._run_of(iid, workflow, (status, output, err), plan_hash)
        if untyped is not None:
            from tideflow import errors

            run._untyped = getattr(errors, untyped[0])(untyped[1])
        return run

    def history(self, id: str) -> list[HistoryEvent]:
        """What happened to instance ``id``, in the order it was recorded: step attempts
        (``StepEvent``, ``InterruptedStep``), decisions, waits, sleeps and signals, cancellation
        (see ``tideflow.history``). Runs nothing."""
        return events_from(self._core.history(_check_id(id)))

    def steps(self, id: str) -> list[StepEvent]:
        """The finished step attempts of instance ``id`` (the ``StepEvent``s of its history)."""
        return [e for e in self.history(id) if isinstance(e, StepEvent)]

    def waiting_for(self, id: str) -> list[Waiting]:
        """What instance ``id`` waits for now: signals, sleeps, retries, the workflow's timeout
        (empty unless it is suspended). Rebuilt from its records without running user code;
        raises ``UnknownWorkflow`` or ``VersionMismatch`` if this engine cannot read its plan."""
        return [Waiting(*row) for row in self._core.waiting_for(_check_id(id))]

    def signal(self, id: str, name: str, payload: Any = None) -> None:
        """Persists signal ``name`` with ``payload`` for instance ``id``, before anything else, then
        wakes whatever drives the instance in this process. It runs no step in this thread. A signal
        sent before the instance waits for it is kept for it; each is consumed once, in order of
        arrival per name. Raises ``SignalError`` for an unknown, finished or cancelled instance."""
        iid = _check_id(id)
        self._core.signal(iid, check_text(name, "a signal name", empty=True), payload)
        self._wake(iid)
        self._tell(iid)

    def cancel(self, id: str, reason: str = "cancelled") -> Run:
        """Cancels instance ``id``; the request is persisted first, so a crash cannot lose it.

        If nothing in this process drives the instance, it is cancelled here, in this thread (its
        compensation step, if any, runs with ``reason`` as its input) and the returned Run is
        CANCELLED. If this process drives it (``run_async``, or ``run`` in another thread), that
        driver finishes the cancellation at the step boundary it reaches next (a running step sees
        ``ctx.cancelled``; whatever it returns is discarded) and the returned Run shows the
        instance as it stands now; the driver's own Run (or a later ``get``) ends CANCELLED. A
        driver in another process finds the request when it next looks at the instance's inbox.
        If this process has not registered the instance's workflow (or the version it runs on),
        the stored request is the success: the returned Run is the instance as stored (not
        cancelled yet), and whichever process drives it next (``run_due``, ``resume``,
        ``recover``) applies the cancellation. The same holds when a worker holds the instance
        (it applies the request at its next look at the instance's inbox: at once on a store
        that notifies, within a second otherwise). Raises ``UnknownInstance``, ``InvalidArgument``
        for a ``reason`` that is not text, or ``TideflowError`` for an instance that already
        completed or failed."""
        iid = _check_id(id)
        try:
            outcome = self._core.cancel(iid, check_text(reason, "a cancel reason", empty=True))
        except LeaseLost:
            # a worker (here or in another process) holds the instance: the stored request is
            # the success, and that worker applies it at its next look at the inbox
            outcome = None
        self._wake(iid)
        self._tell(iid)
        if outcome is None:  # the driver in this process finishes the cancellation
            return self.get(iid)
        info = self._core.get(iid)
        return self._run_of(iid, info[1], outcome, info[7])

    def run_due(self, limit: int | None = None) -> list[Run]:
        """Continues, in this thread, every suspended instance whose signal or timer is ready, until
        each completes or suspends again; returns their Runs."""
        if limit is not None:
            check_count(limit, "run_due(limit=)")
        return self._resume_each(self._core.due(limit), "run_due")

    def _resume_each(self, ids: Iterable[str], what: str) -> list[Run]:
        """Resumes each instance; one that cannot be resumed (its plan is no longer registered, a
        record is corrupt, a stored value no longer decodes) does not stop the others. Those are
        reported together at the end by one exception of the first one's class, carrying
        ``runs`` (what was resumed) and ``failures`` (instance id -> exception)."""
        runs: list[Run] = []
        failures: dict[str, TideflowError] = {}
        for iid in ids:
            try:
                runs.append(self.resume(iid))
            except TideflowError as e:
                failures[iid] = e
        if failures:
            first = next(iter(failures.values()))
            lines = "; ".join(str(e) for e in failures.values())
            n = len(failures)
            msg = f"{what}: {n} instance{'s' if n > 1 else ''} could not be resumed: {lines}"
            try:
                err = type(first)(msg)
            except TypeError:  # a class whose constructor takes more than a message
                err = TideflowError(msg)
            err.runs = runs  # type: ignore[attr-defined]
            err.failures = failures  # type: ignore[attr-defined]
            raise err
        return runs

    def _tell(self, id: str) -> None:
        for listener in self._listeners:
            listener(id)

    def wait(self, id: str, timeout: Duration | None = None) -> Run:
        """Blocks until instance ``id`` completes, fails or is cancelled, wherever it runs (a
        worker, another process), and returns its Run; once ``timeout`` (seconds or a
        ``timedelta``) passes, returns its Run as it stands, unfinished. It reads the store
        (with backoff, from 5 ms up to 0.5 s between looks) and runs nothing itself. Raises
        ``UnknownInstance``."""
        import time

        deadline = self._wait_deadline(timeout)
        pause = 0.005
        while True:
            run = self.get(id)
            if run.status.finished:
                return run
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return run
            time.sleep(pause if left is None else min(pause, left))
            pause = min(pause * 2, 0.5)

    async def wait_async(self, id: str, timeout: Duration | None = None) -> Run:
        """``wait`` for code on an event loop. On a store that notifies (``Watchable``:
        PostgreSQL, Redis) it wakes when the instance finishes; else it polls as ``wait``."""
        import asyncio
        import time

        deadline = self._wait_deadline(timeout)
        watch = getattr(self.store, "watch", None) if self._core.async_store else None
        if watch is not None:
            await watch(0.0)  # subscribed before the first look: no finish is missed
        pause = 0.005
        while True:
            run = self.get(id)
            if run.status.finished:
                return run
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return run
            wait_for = 0.5 if watch is not None else pause
            if left is not None:
                wait_for = min(wait_for, left)
            if watch is not None:
                await watch(wait_for)
            else:
                await asyncio.sleep(wait_for)
                pause = min(pause * 2, 0.5)

    @staticmethod
    def _wait_deadline(timeout: Duration | None) -> float | None:
        import time

        if timeout is None:
            return None
        return time.monotonic() + to_seconds(timeout, "wait(timeout=)", InvalidArgument)

    def _wake(self, id: str) -> None:
        waker = self._wakers.get(id)
        if waker is not None:
            loop, event = waker
            loop.call_soon_threadsafe(event.set)

    def resume(self, id: str) -> Run:
        """Continues stored instance ``id`` in this thread until it finishes or suspends again
        (a PENDING one starts)."""
        iid = _check_id(id)
        outcome, workflow, plan_hash = self._core.resume(iid)
        return self._run_of(iid, workflow, outcome, plan_hash)

    def recover(self) -> list[Run]:
        """Resumes every unfinished instance in the store whose workflow this engine registered,
        in this thread, and returns their Runs.

        An instance that cannot be resumed (pinned to a plan that is no longer registered, a
        corrupt record, a stored value that no longer decodes) is left untouched and does not stop
        the others; they are reported at the end by one exception (``VersionMismatch`` when that
        is the first problem) whose ``runs`` holds the Runs that were resumed and ``failures`` maps
        each instance id to its error. Until workers hold leases (a later release), call this
        where no other live process is driving the same instances. The store is read one page at
        a time (``_PAGE`` instances), so memory does not grow with the number of instances."""
        return self._resume_each(self._unfinished_ids(), "recover")

    def _unfinished_ids(self) -> Iterator[str]:
        """Ids of the unfinished instances whose workflow is registered, a page at a time."""
        cursor = None
        while True:
            rows, cursor = self._core.list(_UNFINISHED, None, _PAGE, cursor)
            for row in rows:
                if row[1] in self._by_name:
                    yield row[0]
            if cursor is None:
                return

    def list(
        self,
        status: Status | str | Iterable[Status | str] | None = None,
        workflow: str | None = None,
        limit: int | None = None,
        *,
        plan_hash: str | None = None,
    ) -> list[Run]:
        """Stored instances, newest first, filtered by status(es), workflow name and plan hash
        (the instances of one version of a workflow: ``Workflow.plan_hash``).

        The store is read a page at a time and nothing is read per row: a listed Run's ``output``
        and ``error`` are read when first asked for. An instance whose stored state cannot be read
        (a corrupt record, an output that no longer decodes) is listed all the same, with its
        indexed status and the problem as ``run.error``, so that one bad instance never hides the
        others."""
        statuses = _status_names(status)
        if workflow is not None:
            check_text(workflow, "list(workflow=)")
        if plan_hash is not None:
            check_text(plan_hash, "list(plan_hash=)")
        if limit is not None:
            check_count(limit, "list(limit=)")
        runs: list[Run] = []
        cursor = None
        while limit is None or len(runs) < limit:
            page = _PAGE if limit is None else min(_PAGE, limit - len(runs))
            rows, cursor = self._core.list(statuses, workflow, page, cursor, plan_hash)
            for iid, wf, st, _created, _updated, _due, plan_hash, error in rows:
                if wf.startswith("!"):  # the engine's own (a worker's tasks)
                    continue
                runs.append(Run._listed(self, iid, wf, Status(st), plan_hash, error))
            if cursor is None:
                break
        return runs

    def counts(self) -> dict[str, dict[Status, int]]:
        """How many instances there are per workflow and status (statuses with none left out),
        counted by the store without reading any instance."""
        out: dict[str, dict[Status, int]] = {}
        for workflow, status, n in self._core.counts():
            if workflow.startswith("!"):  # the engine's own (a worker's tasks)
                continue
            out.setdefault(workflow, {})[Status(status)] = n
        return out

    def purge(
        self,
        older_than: Duration,
        status: Status | str | Iterable[Status | str] | None = None,
    ) -> int:
        """Deletes finished instances (of these statuses) last updated more than ``older_than``
        ago; returns how many were deleted. Unfinished instances are never purged."""
        age = to_seconds(older_than, "purge(older_than=)", InvalidArgument)
        return self._core.purge(self._core.now() - age, _status_names(status))

    def compact(self) -> None:
        """Gives the disk space of purged and deleted instances back to the file system.

        On SQLite, ``purge()`` already does this in a file created by this version; ``compact()``
        also frees what ``delete()`` left, and rewrites a file made by an older tideflow once
        (a ``VACUUM``: it holds the write lock meanwhile and needs as much free disk as the file
        takes). A no-op on the other stores."""
        self._core.compact()

    def close(self) -> None:
        """Closes the store's connections (a server store's; memory and SQLite need nothing).

        The engine must not be used afterwards. ``with Engine(store=url) as engine:`` closes it
        on leaving the block. A store object passed in by the caller is closed too."""
        close = getattr(self.store, "close", None)
        if callable(close):
            close()

    async def aclose(self) -> None:
        """``close()`` for code on an event loop: awaits the store's ``aclose()`` where it has one."""
        aclose = getattr(self.store, "aclose", None)
        if callable(aclose):
            await aclose()
        else:
            self.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def delete(self, id: str) -> bool:
        """Deletes one instance and its history; whether it existed."""
        return self._core.delete(_check_id(id))


def _status_names(status: Status | str | Iterable[Status | str] | None) -> list[str]:
    if status is None:
        return []
    if isinstance(status, (Status, str)):
        items: list[object] = [status]
    else:
        try:
            items = list(status)
        except TypeError:
            items = [status]
    names = []
    for s in items:
        try:
            names.append(Status(s).value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in Status)
            raise InvalidArgument(
                f"status must be a Status or one of {allowed} (or several), got {s!r}"
            ) from None
    return names


def _check_id(id: object) -> str:
    return check_text(id, "an instance id")
