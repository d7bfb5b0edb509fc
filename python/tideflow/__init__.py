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
    "Workflow",
    "WorkflowFailed",
    "sleep",
    "sleep_until",
    "step",
    "wait_signal",
]

__version__ = "0.1.0"
