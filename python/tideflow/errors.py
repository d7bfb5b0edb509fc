"""The tideflow exception tree: every error the library raises derives from :class:`TideflowError`.

The Rust extension maps its errors onto these classes in one place (``rust/bindings/src/errors.rs``),
so a caller can catch one base class or any precise subclass.
"""

from __future__ import annotations

__all__ = [
    "Cancelled",
    "CodecError",
    "CorruptCheckpoint",
    "DefinitionError",
    "InvalidArgument",
    "LeaseLost",
    "SignalError",
    "StepTimeout",
    "StoreConflict",
    "StoreError",
    "TideflowError",
    "UnknownInstance",
    "UnknownWorkflow",
    "VersionMismatch",
    "WorkflowFailed",
]


class TideflowError(Exception):
    """Base class of every error raised by tideflow."""


class DefinitionError(TideflowError):
    """A workflow definition is invalid (found when it is built or registered, not while it runs)."""


class InvalidArgument(TideflowError, ValueError, TypeError):
    """A value passed to the API is out of range or of the wrong kind (a negative or NaN duration,
    a clock without ``now()`` and ``sleep()``).

    Also a ``ValueError`` and a ``TypeError``, so code that catches the built-in class Python would
    raise for the same mistake keeps working.
    """


class CodecError(TideflowError, TypeError):
    """A value could not be encoded to, or decoded from, a checkpoint payload."""


class UnknownWorkflow(TideflowError, LookupError):
    """A workflow name (or version) was asked for that this engine has not registered."""


class UnknownInstance(TideflowError, LookupError):
    """An instance id was asked for that the store does not hold."""


class VersionMismatch(TideflowError):
    """A stored instance pins a plan hash that no registered version of its workflow has."""


class CorruptCheckpoint(TideflowError):
    """A stored checkpoint record is truncated, corrupted or of an unknown format."""


class StoreError(TideflowError):
    """The store failed (I/O, a dropped connection, a read-only file); the driver's error is the cause."""


class StoreConflict(StoreError):
    """A commit carried a stale version: another writer advanced the instance first. The store
    changed nothing; the engine reloads the instance and goes on from what is stored."""

    def __init__(self, instance_id: str, expected: int, found: int) -> None:
        super().__init__(
            f"instance {instance_id!r} was advanced by another writer "
            f"(expected version {expected}, found {found})"
        )
        self.instance_id = instance_id
        self.expected = expected
        self.found = found


class LeaseLost(StoreError):
    """A commit or an extend came from a writer that does not hold the instance's lease (it
    expired, or another owner holds it now), or a commit without owner met someone else's live
    lease; the store changed nothing. ``owner`` is the writer (None: an engine in its own
    process), ``holder`` the live holder (None when the lease ran out)."""

    def __init__(
        self, instance_id: str, owner: str | None = None, holder: str | None = None
    ) -> None:
        if owner is not None:
            message = f"worker {owner!r} no longer holds the lease on instance {instance_id!r}"
        else:
            message = f"instance {instance_id!r} is leased to a worker"
        message += f" ({holder!r} holds it now)" if holder else " (its lease expired)"
        super().__init__(message)
        self.instance_id = instance_id
        self.owner = owner
        self.holder = holder


class SignalError(TideflowError):
    """A signal could not be delivered (unknown, finished or cancelled instance)."""


class StepTimeout(TideflowError):
    """A step attempt, a wait or a whole workflow ran past its timeout."""


class Cancelled(BaseException):
    """Raised inside a step whose instance was cancelled; derives from BaseException so that a
    broad ``except Exception`` in user code does not swallow it."""


class WorkflowFailed(TideflowError):
    """A workflow instance failed: a step raised and its retry policy gave up.

    Carries the failing step's name, the number of attempts made, and the original exception's
    type, message and traceback text (the exception object itself is not kept: it may not survive
    a restart, and nothing is pickled).
    """

    def __init__(
        self,
        message: str,
        *,
        instance_id: str = "",
        step: str | None = None,
        attempts: int = 0,
        error_type: str = "",
        error_message: str = "",
        traceback: str = "",
    ) -> None:
        super().__init__(message)
        self.instance_id = instance_id
        self.step = step
        self.attempts = attempts
        self.error_type = error_type
        self.error_message = error_message
        self.traceback = traceback

    def __reduce__(self) -> tuple[object, ...]:  # keeps copy/deepcopy working with keyword fields
        return (
            _rebuild_workflow_failed,
            (
                str(self),
                self.instance_id,
                self.step,
                self.attempts,
                self.error_type,
                self.error_message,
                self.traceback,
            ),
        )


def _rebuild_workflow_failed(
    message: str,
    instance_id: str,
    step: str | None,
    attempts: int,
    error_type: str,
    error_message: str,
    traceback: str,
) -> WorkflowFailed:
    return WorkflowFailed(
        message,
        instance_id=instance_id,
        step=step,
        attempts=attempts,
        error_type=error_type,
        error_message=error_message,
        traceback=traceback,
    )
