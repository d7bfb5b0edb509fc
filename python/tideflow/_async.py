"""The asyncio driver: executes what the core's policy answers (``_core.AsyncRun.next``): runs
ready tasks (the async ones of a wave concurrently) and hands each result back, waits for the next
timer, signal or task without polling, and, on an ``AsyncStore``, awaits the store calls the
policy asks for. It decides nothing itself (see ``rust/core/src/drive/mod.rs``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from tideflow.errors import Cancelled, StepTimeout, StoreConflict, StoreError, TideflowError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from tideflow import _core
    from tideflow.engine import Engine

__all__ = ["drive", "timed"]

#: How many times the driver lets other tasks run before a virtual clock jumps to the next timer.
_YIELDS = 8

# the answers of `AsyncRun` (see rust/bindings/src/async_run.rs)
_RUN, _WAIT, _DONE, _COMMIT, _INBOX, _LOAD, _CREATE = range(7)


async def timed(step: Awaitable[Any], budget: float | None) -> Any:
    """Awaits an async step, cancelling it past its budget (its timeout, capped by the workflow's
    deadline) with a ``StepTimeout``. Both drivers run async steps through this."""
    if budget is None:
        return await step
    try:
        return await asyncio.wait_for(step, budget)
    except asyncio.TimeoutError:
        raise StepTimeout(
            f"the step ran past its timeout of {budget}s and was cancelled"
        ) from None


async def _call(fn: Any, ctx: Any, value: Any, budget: float | None) -> Any:
    """Runs an async step (its coroutine made only once the task runs: a task cancelled before
    it starts leaves no coroutine unawaited)."""
    return await timed(fn(ctx, value), budget)


async def _store_call(store: Any, what: str, call: Awaitable[Any]) -> Any:
    """Awaits one call of an ``AsyncStore``; an error that is not tideflow's becomes a
    ``StoreError`` naming the store and the call, with the store's exception as its cause."""
    try:
        return await call
    except TideflowError:
        raise
    except Exception as e:
        raise StoreError(f"{store.describe()}: {what}: {type(e).__name__}: {e}") from e


async def drive(engine: Engine, handle: _core.AsyncRun, iid: str) -> None:
    """Drives one instance until it completes, fails or is cancelled."""
    core = engine._core
    store: Any = engine.store
    event = asyncio.Event()
    engine._wakers[iid] = (asyncio.get_running_loop(), event)
    pending: dict[asyncio.Future[Any], tuple[int, str]] = {}
    fut: asyncio.Future[Any]
    run, wait, done = _RUN, _WAIT, _DONE  # locals: read once per step
    kind, arg = handle.next()
    try:
        while True:
            if kind == run:
                if len(arg) == 1 and not pending:
                    # the sequential fast path: await the step inline, no task scheduling
                    tid, fn, ctx, value, is_async, budget = arg[0]
                    try:
                        if not is_async:
                            out = fn(ctx, value)
                        elif budget is None:
                            out = await fn(ctx, value)
                        else:
                            out = await timed(fn(ctx, value), budget)
                    except (Exception, Cancelled) as exc:
                        # Cancelled is a BaseException: the core takes it as the step stopping for
                        # a cancellation that was asked for (and re-raises it otherwise)
                        kind, arg = handle.fail(tid, exc)
                    else:
                        kind, arg = handle.complete(tid, out)
                    continue
                # the async steps of a wave start together; a sync one comes last (the policy
                # hands out at most one: they run one at a time, each committed as it finishes)
                *launched, last = arg
                for tid, fn, ctx, value, _, budget in launched:
                    fut = asyncio.ensure_future(_call(fn, ctx, value, budget))
                    pending[fut] = (tid, ctx.position)
                tid, fn, ctx, value, is_async, budget = last
                if is_async:
                    fut = asyncio.ensure_future(_call(fn, ctx, value, budget))
                    pending[fut] = (tid, ctx.position)
                    kind, arg = _WAIT, handle.deadline()
                    continue
                try:
                    out = fn(ctx, value)
                except (Exception, Cancelled) as exc:
                    kind, arg = handle.fail(tid, exc)
                else:
                    kind, arg = handle.complete(tid, out)
            elif kind == wait:
                if handle.cancelling:
                    for fut, (_, position) in pending.items():
                        if position != "cancel":
                            fut.cancel()
                if not pending:
                    await _idle(core, event, arg, engine._poll)
                    event.clear()
                    handle.wake()
                else:
                    await _settle_some(core, handle, pending, event, arg)
                kind, arg = handle.next()
            elif kind == done:
                return
            elif kind == _COMMIT:
                try:
                    await _store_call(store, "commit", store.commit(arg))
                except StoreConflict:
                    kind, arg = handle.conflicted()
                else:
                    kind, arg = handle.committed()
            elif kind == _INBOX:
                kind, arg = handle.inbox(await _store_call(store, "signals", store.signals(iid, arg)))
            elif kind == _LOAD:
                kind, arg = handle.reloaded(await _store_call(store, "load", store.load(iid)))
            elif kind == _CREATE:
                kind, arg = handle.created(await _store_call(store, "create", store.create(*arg)))
            else:  # pragma: no cover - the extension and this module disagree
                raise TideflowError(f"unknown driver answer {kind!r}")
    finally:
        engine._wakers.pop(iid, None)
        for fut in pending:
            fut.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


async def _settle_some(
    core: _core.Engine,
    handle: _core.AsyncRun,
    pending: dict[asyncio.Future[Any], tuple[int, str]],
    event: asyncio.Event,
    deadline: float | None,
) -> None:
    """Waits for the first of: a running task's end, a wake-up, the deadline; hands back every
    task that ended (one commit for all of them, at the next answer)."""
    timeout = None if deadline is None else max(0.0, deadline - core.now())
    waker = asyncio.ensure_future(event.wait())
    try:
        wait_for = timeout if not core.virtual_clock else None
        done, _ = await asyncio.wait(
            [*pending, waker], timeout=wait_for, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        waker.cancel()
    if event.is_set():
        event.clear()
        handle.wake()
    for fut in done:
        if fut is waker:
            continue
        tid, _ = pending.pop(fut)
        if fut.cancelled():
            # only this driver cancels its tasks: for a cancellation of the instance
            handle.fail(tid, Cancelled("the step was cancelled with its instance"), advance=False)
            continue
        err = fut.exception()
        if err is None:
            handle.complete(tid, fut.result(), advance=False)
        elif isinstance(err, (Exception, Cancelled)):
            handle.fail(tid, err, advance=False)
        else:
            raise err


async def _idle(
    core: _core.Engine, event: asyncio.Event, deadline: float | None, poll: float | None
) -> None:
    """Waits for a wake-up (a signal, a cancellation) or the next timer, whichever comes first,
    and on a store other processes share at most ``poll`` seconds (real time), so that the
    driver then reads the inbox: another process's signal, cancellation or completion of the
    instance reaches it. A virtual clock jumps to the timer once the other tasks have had their
    turn."""
    if core.virtual_clock:
        for _ in range(_YIELDS):
            if event.is_set():
                return
            await asyncio.sleep(0)
        if deadline is None:
            await _wait(event, poll)
        else:
            core.sleep(max(0.0, deadline - core.now()))
        return
    left = None if deadline is None else max(0.0, deadline - core.now())
    if poll is not None and (left is None or poll < left):
        left = poll
    await _wait(event, left)


async def _wait(event: asyncio.Event, seconds: float | None) -> None:
    """Waits for ``event``, for at most ``seconds`` (None: for as long as it takes)."""
    if seconds is None:
        await event.wait()
        return
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
