"""tideflow: an embeddable durable workflow engine for Python with a Rust core.

Define steps with ``@step``, compose them with ``Workflow``, and run them with ``Engine``: in
memory by default, with every step's output checkpointed through a typed JSON codec.
"""

from tideflow.engine import Context, Engine, InvalidTransition, Run, Status, StepEvent, VirtualClock
from tideflow.errors import (
    Cancelled,
    CodecError,
    CorruptCheckpoint,
    DefinitionError,
    InvalidArgument,
    LeaseLost,
    SignalError,
    StepTimeout,
    StoreConflict,
    StoreError,
    TideflowError,
    UnknownInstance,
    UnknownWorkflow,
    VersionMismatch,
    WorkflowFailed,
)
from tideflow.history import (
    CancelEvent,
    DecisionEvent,
    HistoryEvent,
    InterruptedStep,
    WaitEvent,
    Waiting,
)
from tideflow.retry import Retry
from tideflow.workflow import (
    Sleep,
    Step,
    WaitSignal,
    Workflow,
    sleep,
    sleep_until,
    step,
    wait_signal,
)

__all__ = [
    "CancelEvent",
    "Cancelled",
    "CodecError",
    "Context",
    "CorruptCheckpoint",
    "DecisionEvent",
    "DefinitionError",
    "Engine",
    "HistoryEvent",
    "InterruptedStep",
    "InvalidArgument",
    "InvalidTransition",
    "LeaseLost",
    "Retry",
    "Run",
    "SignalError",
    "Sleep",
    "Status",
    "Step",
    "StepEvent",
    "StepTimeout",
    "StoreConflict",
    "StoreError",
    "TideflowError",
    "UnknownInstance",
    "UnknownWorkflow",
    "VersionMismatch",
    "VirtualClock",
    "WaitEvent",
    "WaitSignal",
    "Waiting",
    "Worker",
    "Workflow",
    "WorkflowFailed",
    "sleep",
    "sleep_until",
    "step",
    "wait_signal",
]

__version__ = "0.1.0"

TYPE_CHECKING = False  # (see tideflow.retry)
if TYPE_CHECKING:
    from tideflow.worker import Worker


def __getattr__(name: str) -> object:
    """Loads ``Worker`` when first asked for: a program that only runs workflows in its own
    process never imports the worker (nor asyncio)."""
    if name == "Worker":
        from tideflow.worker import Worker

        globals()["Worker"] = Worker
        return Worker
    raise AttributeError(f"module 'tideflow' has no attribute {name!r}")
