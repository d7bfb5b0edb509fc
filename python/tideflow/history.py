"""An instance's history as typed events, and what a suspended instance waits for.

``run.history()`` lists what happened, in the order it was recorded: step attempts (finished, or
interrupted by a crash), the decisions taken (branch, loop check, router), timers set for sleeps
and wait timeouts, signals consumed or rejected, waits that timed out, sleeps that ended, and the
cancellation. Every event has a ``kind`` and a ``position``; docs/api-running.md lists every field.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (see tideflow.retry)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CancelEvent",
    "DecisionEvent",
    "HistoryEvent",
    "InterruptedStep",
    "StepEvent",
    "WaitEvent",
    "Waiting",
    "events_from",
]


class _Fields:
    """Equality and a repr over the fields named in ``_order`` (None fields are not shown)."""

    __slots__ = ()

    #: The fields in the order a repr shows them.
    _order: tuple[str, ...] = ()

    def _fields(self) -> tuple[str, ...]:
        return self._order

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._fields())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{n}={getattr(self, n)!r}" for n in self._fields() if getattr(self, n) is not None
        )
        return f"{type(self).__name__}({shown})"


class HistoryEvent(_Fields):
    """One event of an instance's history: what happened (``kind``) at which plan position
    (``position``, the key of ``ctx.position``; ``""`` is the workflow's root)."""

    __slots__ = ("kind", "position")

    kind: str
    position: str
    _order: tuple[str, ...] = ("kind", "position")


class StepEvent(HistoryEvent):
    """One finished attempt of one step (``kind == "step"``): ``status`` is ``"completed"`` or
    ``"failed"`` (then ``error`` is ``"Type: message"`` and ``retry_at`` when the next attempt is
    due, if the policy retries)."""

    __slots__ = ("attempt", "error", "finished_at", "retry_at", "started_at", "status", "step")
    _order = (
        "kind",
        "position",
        "step",
        "attempt",
        "status",
        "started_at",
        "finished_at",
        "error",
        "retry_at",
    )

    def __init__(
        self,
        position: str,
        step: str,
        attempt: int,
        status: str,
        started_at: float,
        finished_at: float,
        error: str | None = None,
        retry_at: float | None = None,
    ) -> None:
        self.kind = "step"
        self.position = position
        self.step = step
        self.attempt = attempt
        self.status = status
        self.started_at = started_at
        self.finished_at = finished_at
        self.error = error
        self.retry_at = retry_at

    @property
    def duration(self) -> float:
        """Seconds the attempt took."""
        return self.finished_at - self.started_at

    def __repr__(self) -> str:
        err = f", error={self.error!r}" if self.error else ""
        return (
            f"StepEvent(position={self.position!r}, step={self.step!r}, attempt={self.attempt}, "
            f"status={self.status!r}, duration={self.duration:.6f}{err})"
        )


class InterruptedStep(HistoryEvent):
    """An attempt that started and never finished (``kind == "interrupted"``): its process died
    during it. ``retried`` says whether a later attempt of that position started or was scheduled
    (or the instance finished without it); when it is false the instance is unfinished and this
    attempt is either running right now or will run again on the next resume."""

    __slots__ = ("attempt", "retried", "step")
    _order = ("kind", "position", "step", "attempt", "retried")

    def __init__(self, position: str, step: str, attempt: int, retried: bool) -> None:
        self.kind = "interrupted"
        self.position = position
        self.step = step
        self.attempt = attempt
        self.retried = retried


class DecisionEvent(HistoryEvent):
    """A decision, checkpointed so that a resume takes the same path: ``kind`` is ``"branch"``
    (``value``: the condition's truth), ``"loop"`` (the check after iteration ``iteration``,
    1-based, at the loop's ``position``; ``value`` true ends the loop) or ``"route"`` (``value``:
    the state a router or a label table picked, at the state's position ``"<name>#<visit>"``)."""

    __slots__ = ("iteration", "value")
    _order = ("kind", "position", "value", "iteration")

    def __init__(self, kind: str, position: str, value: Any, iteration: int | None = None) -> None:
        self.kind = kind
        self.position = position
        self.value = value
        self.iteration = iteration


class WaitEvent(HistoryEvent):
    """A wait for a signal or a durable sleep, at ``position``: ``kind`` is ``"timer"`` (a sleep,
    or a wait's timeout, set to end at ``until``), ``"signal"`` (the wait consumed signal
    ``signal``, the ``seq``-th sent to the instance), ``"signal_rejected"`` (that signal's payload
    did not decode: ``reason``; the wait goes on), ``"timed_out"`` (the wait's timeout fired) or
    ``"slept"`` (the sleep ended)."""

    __slots__ = ("reason", "seq", "signal", "until")
    _order = ("kind", "position", "until", "signal", "seq", "reason")

    def __init__(
        self,
        kind: str,
        position: str,
        *,
        until: float | None = None,
        signal: str | None = None,
        seq: int | None = None,
        reason: str | None = None,
    ) -> None:
        self.kind = kind
        self.position = position
        self.until = until
        self.signal = signal
        self.seq = seq
        self.reason = reason


class CancelEvent(HistoryEvent):
    """The instance was cancelled (``kind == "cancelled"``, ``position == ""``) with ``reason``;
    its compensation step, if any, follows as a step at position ``"cancel"``."""

    __slots__ = ("reason",)
    _order = ("kind", "position", "reason")

    def __init__(self, reason: str) -> None:
        self.kind = "cancelled"
        self.position = ""
        self.reason = reason


class Waiting(_Fields):
    """One thing a suspended instance waits for: ``kind`` is ``"signal"`` (signal ``signal`` for
    the wait at ``position``; ``until`` its timeout, or None), ``"sleep"`` (a durable sleep that
    ends at ``until``), ``"retry"`` (the next attempt of step ``step`` at ``position``, due at
    ``until``) or ``"workflow_timeout"`` (the workflow times out at ``until``)."""

    __slots__ = ("kind", "position", "signal", "step", "until")
    _order: tuple[str, ...] = __slots__

    def __init__(
        self,
        kind: str,
        position: str,
        signal: str | None = None,
        step: str | None = None,
        until: float | None = None,
    ) -> None:
        self.kind = kind
        self.position = position
        self.signal = signal
        self.step = step
        self.until = until


def events_from(rows: list[tuple[str, str, dict[str, Any]]]) -> list[HistoryEvent]:
    """The typed events of the extension's ``(kind, position, fields)`` rows."""
    out: list[HistoryEvent] = []
    for kind, position, f in rows:
        if kind == "step":
            out.append(
                StepEvent(
                    position,
                    f["step"],
                    f["attempt"],
                    f["status"],
                    f["started_at"],
                    f["finished_at"],
                    f["error"],
                    f["retry_at"],
                )
            )
        elif kind == "interrupted":
            out.append(InterruptedStep(position, f["step"], f["attempt"], f["retried"]))
        elif kind in ("branch", "loop", "route", "other"):
            out.append(DecisionEvent(kind, position, f["value"], f.get("iteration")))
        elif kind == "cancelled":
            out.append(CancelEvent(f["reason"]))
        else:
            out.append(WaitEvent(kind, position, **f))
    return out
