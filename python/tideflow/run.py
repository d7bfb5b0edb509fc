"""What a run shows: an instance's status and result (`Run`), and its history (`StepEvent`).

Kept apart from the engine that produces them; ``tideflow.engine`` re-exports every name.
"""

from __future__ import annotations

import enum

from tideflow import _core
from tideflow.errors import DefinitionError, TideflowError, WorkflowFailed

TYPE_CHECKING = False  # (see tideflow.retry)
if TYPE_CHECKING:
    from typing import Any

    from tideflow.engine import Engine

__all__ = ["InvalidTransition", "Run", "Status", "StepEvent"]


class Status(enum.Enum):
    """Where an instance is in its lifecycle."""

    PENDING = "pending"
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the instance can never move again."""
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


class InvalidTransition(DefinitionError, WorkflowFailed):
    """An instance failed because its definition could not say where to go next (a router
    returned an unknown state, or an output matched no label)."""


class StepEvent:
    """One finished attempt of one step, as the instance's history records it."""

    __slots__ = ("attempt", "error", "finished_at", "position", "started_at", "status", "step")

    def __init__(
        self,
        position: str,
        step: str,
        attempt: int,
        status: str,
        started_at: float,
        finished_at: float,
        error: str | None = None,
    ) -> None:
        self.position = position
        self.step = step
        self.attempt = attempt
        self.status = status
        self.started_at = started_at
        self.finished_at = finished_at
        self.error = error

    @property
    def duration(self) -> float:
        """Seconds the attempt took."""
        return self.finished_at - self.started_at

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StepEvent):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in StepEvent.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        err = f", error={self.error!r}" if self.error else ""
        return (
            f"StepEvent(position={self.position!r}, step={self.step!r}, attempt={self.attempt}, "
            f"status={self.status!r}, duration={self.duration:.6f}{err})"
        )


class Run:
    """The state of one workflow instance: its status, and its output or error once finished."""

    __slots__ = ("_engine", "error", "id", "output", "plan_hash", "status", "workflow")

    def __init__(
        self,
        id: str,
        workflow: str,
        status: Status,
        output: Any = None,
        error: TideflowError | None = None,
        plan_hash: str = "",
        engine: Engine | None = None,
    ) -> None:
        self.id = id
        self.workflow = workflow
        self.status = status
        self.output = output
        self.error = error
        self.plan_hash = plan_hash
        self._engine = engine

    @property
    def ok(self) -> bool:
        """Whether the instance completed."""
        return self.status is Status.COMPLETED

    def result(self) -> Any:
        """The output if the instance completed; raises its error if it failed."""
        if self.error is not None:
            raise self.error
        if self.status is not Status.COMPLETED:
            raise TideflowError(f"instance {self.id!r} is {self.status.value}, not completed")
        return self.output

    def history(self) -> list[StepEvent]:
        """Every finished step attempt of this instance, in the order they were committed."""
        if self._engine is None:
            raise TideflowError("this Run is not attached to an engine")
        return self._engine.history(self.id)

    def __repr__(self) -> str:
        tail = f", error={self.error!r}" if self.error is not None else f", output={self.output!r}"
        return f"Run(id={self.id!r}, workflow={self.workflow!r}, status={self.status}{tail})"


def _position(key: str) -> str:
    """A decision's key as the position it belongs to (``"3.u2?"``: the loop at 3)."""
    key = key.rstrip("?")
    head, _, last = key.rpartition(".")
    if last[:1] == "u" and last[1:].isdigit():  # a loop's check after iteration n
        return f"{head or 'root'} (loop check after iteration {int(last[1:]) + 1})"
    return key


def _error_from(instance_id: str, data: bytes | None) -> TideflowError | None:
    if data is None:
        return None
    e = _core.decode_json(data)
    step, attempts = e.get("step"), int(e.get("attempts") or 0)
    etype, emsg = e.get("type", ""), e.get("message", "")
    kind = e.get("kind")
    if kind == "step":
        s = "" if attempts == 1 else "s"
        msg = f"step {step!r} failed after {attempts} attempt{s}: {etype}: {emsg}"
    elif kind == "definition":
        where = f" at position {_position(e.get('key'))!r}" if e.get("key") else ""
        msg = f"instance {instance_id!r}{where}: {emsg}"
    elif kind == "codec" and step:
        msg = f"step {step!r}: {etype}: {emsg}"
    else:
        where = f" at position {_position(e.get('key'))!r}" if e.get("key") else ""
        msg = f"{kind} failed{where}: {etype}: {emsg}"
    cls = InvalidTransition if kind == "definition" else WorkflowFailed
    return cls(
        msg,
        instance_id=instance_id,
        step=step,
        attempts=attempts,
        error_type=etype,
        error_message=emsg,
        traceback=e.get("traceback", ""),
    )
