"""The asyncio driver: runs ready tasks (the async ones of a wave concurrently), hands each result
back to the core, and sleeps until the next timer or signal, without polling."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from tideflow.errors import Cancelled, StepTimeout

if TYPE_CHECKING:
    from tideflow import _core
    from tideflow.engine import Engine

__all__ = ["drive"]

#: How many times the driver lets other tasks run before a virtual clock jumps to the next timer.
_YIELDS = 8


async def _call(fn: Any, ctx: Any, value: Any, timeout: float | None) -> Any:
    """Awaits an async step, cancelling it past its timeout."""
    if timeout is None:
        return await fn(ctx, value)
    try:
        return await asyncio.wait_for(fn(ctx, value), timeout)
    except asyncio.TimeoutError:
        raise StepTimeout(
            f"the step ran past its timeout of {timeout}s and was cancelled"
        ) from None


async def drive(engine: Engine, handle: _core.AsyncRun, iid: str) -> None:
    """Drives one instance until it completes, fails or is cancelled."""
    core = engine._core
    event = asyncio.Event()
    engine._wakers[iid] = (asyncio.get_running_loop(), event)
    pending: dict[asyncio.Future[Any], tuple[int, str]] = {}
    fut: asyncio.Future[Any]
    ready = handle.ready()
    try:
        while True:
            if len(ready) == 1 and not pending:
                # the sequential fast path: await the step inline, no task scheduling
                tid, fn, ctx, value, is_async, timeout = ready[0]
                try:
                    out = await _call(fn, ctx, value, timeout) if is_async else fn(ctx, value)
                except (Exception, Cancelled) as exc:
                    # Cancelled is a BaseException: the core takes it as the step stopping for a
                    # cancellation that was asked for (and re-raises it otherwise)
                    ready = handle.fail(tid, exc)
                else:
                    ready = handle.complete(tid, out)
                continue
            if ready:
                # the async steps of a wave start together; a sync one comes last (the core hands
                # out at most one: they run one at a time, each committed as it finishes, so that
                # a crash later in the wave never runs it again and never charges the ones that
                # had not started yet)
                *launched, last = ready
                for tid, fn, ctx, value, _, timeout in launched:
                    fut = asyncio.ensure_future(_call(fn, ctx, value, timeout))
                    pending[fut] = (tid, ctx.position)
                tid, fn, ctx, value, is_async, timeout = last
                if is_async:
                    fut = asyncio.ensure_future(_call(fn, ctx, value, timeout))
                    pending[fut] = (tid, ctx.position)
                    ready = []
                    continue
                try:
                    out = fn(ctx, value)
                except (Exception, Cancelled) as exc:
                    ready = handle.fail(tid, exc)
                else:
                    ready = handle.complete(tid, out)
                continue
            if handle.finished:
                return
            if handle.cancelling:
                for fut, (_, position) in pending.items():
                    if position != "cancel":
                        fut.cancel()
            if not pending:
                await _idle(core, event, handle.deadline(), engine._poll)
                event.clear()
                ready = handle.refresh()
                continue
            deadline = handle.deadline()
            timeout = None if deadline is None else max(0.0, deadline - core.now())
            waker = asyncio.ensure_future(event.wait())
            try:
                wait_for = timeout if not core.virtual_clock else None
                done, _ = await asyncio.wait(
                    [*pending, waker], timeout=wait_for, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waker.cancel()
            event.clear()
            for fut in done:
                if fut is waker:
                    continue
                tid, _ = pending.pop(fut)
                if fut.cancelled():
                    # only this driver cancels its tasks: for a cancellation of the instance
                    stopped = Cancelled("the step was cancelled with its instance")
                    handle.fail(tid, stopped, commit=False)
                    continue
                err = fut.exception()
                if err is None:
                    handle.complete(tid, fut.result(), commit=False)
                elif isinstance(err, (Exception, Cancelled)):
                    handle.fail(tid, err, commit=False)
                else:
                    raise err
            ready = handle.refresh()
    finally:
        engine._wakers.pop(iid, None)
        for fut in pending:
            fut.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


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
