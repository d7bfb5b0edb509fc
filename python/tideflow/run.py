"""What a run shows: an instance's status and result (`Run`), and its history (`StepEvent`).

Kept apart from the engine that produces them; ``tideflow.engine`` re-exports every name.
"""

from __future__ import annotations

import enum

from tideflow import _core
from tideflow.errors import DefinitionError, TideflowError, WorkflowFailed
from tideflow.history import HistoryEvent, StepEvent, Waiting

TYPE_CHECKING = False  # (see tideflow.retry)
if TYPE_CHECKING:
    from typing import Any

    from tideflow.engine import Engine
    from tideflow.retry import Duration

__all__ = ["InvalidTransition", "Run", "Status", "StepEvent"]

_UNREAD: Any = object()  # details not read from the store yet


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


class Run:
    """The state of one workflow instance: its status, and its output or error once finished.

    ``input``, ``created_at``, ``updated_at`` and ``due_at`` are read from the store the first
    time one of them is asked for (one read for all four, kept with the Run), so that a Run costs
    no extra read unless they are used, and an input that no longer decodes (a ``CodecError``
    when ``input`` is read) never stops ``get()`` or ``list()``."""

    __slots__ = (
        "_details",
        "_engine",
        "_error",
        "_output",
        "_untyped",
        "error_summary",
        "id",
        "plan_hash",
        "status",
        "workflow",
    )

    def __init__(
        self,
        id: str,
        workflow: str,
        status: Status,
        output: Any = None,
        error: TideflowError | None = None,
        plan_hash: str = "",
        engine: Engine | None = None,
        *,
        details: tuple[Any, float, float, float | None] | None = None,
    ) -> None:
        self.id = id
        self.workflow = workflow
        self.status = status
        self._output = output
        self._error = error
        #: A one-line summary of why a failed instance failed, as indexed by the store (set on
        #: Runs from ``Engine.list``; else None).
        self.error_summary: str | None = None
        self.plan_hash = plan_hash
        self._engine = engine
        self._details = _UNREAD if details is None else details
        self._untyped: TideflowError | None = None

    @classmethod
    def _listed(
        cls,
        engine: Engine,
        id: str,
        workflow: str,
        status: Status,
        plan_hash: str,
        error: str | None,
    ) -> Run:
        """A Run from a listing: ``output`` and ``error`` of a finished one are read from the
        store the first time one of them is asked for."""
        run = cls(
            id, workflow, status, _UNREAD if status.finished else None, None, plan_hash, engine
        )
        run.error_summary = error
        return run

    def _read_result(self) -> None:
        from tideflow.errors import CodecError, CorruptCheckpoint

        try:
            stored = self._attached().get(self.id)
        except (CorruptCheckpoint, CodecError) as e:  # listed all the same, with the problem
            self._output, self._error = None, e
            return
        self._output, self._error, self._untyped = stored.output, stored.error, stored._untyped

    @property
    def output(self) -> Any:
        """The workflow's output once it completed (decoded with its output type), else None."""
        if self._output is _UNREAD:
            self._read_result()
        return self._output

    @output.setter
    def output(self, value: Any) -> None:
        self._output = value

    @property
    def error(self) -> TideflowError | None:
        """Why the instance failed (a ``WorkflowFailed``), or None."""
        if self._output is _UNREAD:
            self._read_result()
        return self._error

    @error.setter
    def error(self, value: TideflowError | None) -> None:
        self._error = value

    @property
    def ok(self) -> bool:
        """Whether the instance completed."""
        return self.status is Status.COMPLETED

    @property
    def typed(self) -> bool:
        """Whether ``output`` was decoded with the workflow's types. False for an instance that
        completed on a plan this process has not registered (another version of the workflow, or a
        workflow it never registered): ``output`` is then the stored JSON, and ``result()`` raises
        the ``VersionMismatch`` (or ``UnknownWorkflow``) that says why."""
        if self._output is _UNREAD:
            self._read_result()
        return self._untyped is None

    def result(self) -> Any:
        """The output if the instance completed; raises its error if it failed, and the reason
        if its output could not be typed (see ``typed``)."""
        if self._output is _UNREAD:
            self._read_result()
        if self.error is not None:
            raise self.error
        if self._untyped is not None:
            raise self._untyped
        if self.status is not Status.COMPLETED:
            raise TideflowError(f"instance {self.id!r} is {self.status.value}, not completed")
        return self.output

    def _stored(self) -> tuple[Any, float, float, float | None]:
        if self._details is _UNREAD:
            self._details = self._attached()._core.details(self.id)
        details: tuple[Any, float, float, float | None] = self._details
        return details

    @property
    def input(self) -> Any:
        """The workflow input the instance started with (decoded with the workflow's input type
        when this engine registered it, else as stored JSON)."""
        return self._stored()[0]

    @property
    def created_at(self) -> float:
        """When the instance was created (seconds since the epoch, on the engine's clock)."""
        return self._stored()[1]

    @property
    def updated_at(self) -> float:
        """When the instance's last step boundary was committed."""
        return self._stored()[2]

    @property
    def due_at(self) -> float | None:
        """When a suspended instance next needs attention (a timer, a retry, a signal that
        arrived), or None if nothing but a signal can move it."""
        return self._stored()[3]

    def history(self) -> list[HistoryEvent]:
        """What happened to this instance, in the order it was recorded (see ``HistoryEvent``)."""
        return self._attached().history(self.id)

    def steps(self) -> list[StepEvent]:
        """The finished step attempts of this instance (the ``StepEvent``s of its history)."""
        return self._attached().steps(self.id)

    def waiting_for(self) -> list[Waiting]:
        """What the instance waits for now (empty unless it is suspended), rebuilt from its
        records without running any user code."""
        return self._attached().waiting_for(self.id)

    def wait(self, timeout: Duration | None = None) -> Run:
        """Blocks until the instance finishes, wherever it runs (a worker, another process), and
        returns its Run; once ``timeout`` passes, returns it as it stands (unfinished). See
        ``Engine.wait``."""
        return self._attached().wait(self.id, timeout)

    async def wait_async(self, timeout: Duration | None = None) -> Run:
        """``wait`` for code on an event loop: awaits without blocking the loop."""
        return await self._attached().wait_async(self.id, timeout)

    def _attached(self) -> Engine:
        if self._engine is None:
            raise TideflowError("this Run is not attached to an engine")
        return self._engine

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
    elif kind == "interrupted":  # its process died during the last attempt the budget allows
        s = "" if attempts == 1 else "s"  # (earlier ones may have failed or been interrupted)
        msg = f"step {step!r} failed after {attempts} attempt{s}, the last interrupted: {etype}: {emsg}"
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
