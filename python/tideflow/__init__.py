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
    SignalError,
    StepTimeout,
    StoreError,
    TideflowError,
    UnknownInstance,
    UnknownWorkflow,
    VersionMismatch,
    WorkflowFailed,
)
from tideflow.retry import Retry
from tideflow.workflow import Step, Workflow, step

__all__ = [
    "Cancelled",
    "CodecError",
    "Context",
    "CorruptCheckpoint",
    "DefinitionError",
    "Engine",
    "InvalidTransition",
    "Retry",
    "Run",
    "SignalError",
    "Status",
    "Step",
    "StepEvent",
    "StepTimeout",
    "StoreError",
    "TideflowError",
    "UnknownInstance",
    "UnknownWorkflow",
    "VersionMismatch",
    "VirtualClock",
    "Workflow",
    "WorkflowFailed",
    "step",
]

__version__ = "0.1.0"
