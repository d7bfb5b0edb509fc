"""Type stubs for the native extension ``tideflow._core`` (checked by stubtest)."""

import builtins
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Literal, final, overload

from typing_extensions import Self, disjoint_base

from tideflow.stores.base import (
    Claim,
    Commit,
    Count,
    InstanceMeta,
    ListPage,
    ListQuery,
    Loaded,
    StoredInstance,
)

__all__ = [
    "FORMAT_VERSION",
    "AsyncRun",
    "Compiled",
    "Context",
    "Engine",
    "NativeStore",
    "Plan",
    "RemoteStep",
    "VirtualClock",
    "decode_json",
    "encode_json",
    "inbox_entries",
    "internal_signal",
    "task_fields",
    "task_header",
]

FORMAT_VERSION: int

StepBinding = tuple[
    Callable[..., Any],
    bool,
    Callable[[Any], Any] | None,
    Callable[[Any], Any] | None,
    tuple[type[BaseException], ...],
    tuple[type[BaseException], ...],
    str,
    str,
]
Outcome = tuple[str, Any, bytes | None]
ReadyTask = tuple[int, Callable[..., Any], Context, Any, bool, float | None]
#: What ``AsyncRun`` answers: ``(kind, argument)`` (see rust/bindings/src/async_run.rs).
Answer = tuple[int, Any]
#: One listed instance: (id, workflow, status, created_at, updated_at, due_at, plan hash, error).
ListRow = tuple[str, str, str, float, float, float | None, str, str | None]

def decode_json(data: bytes) -> Any:
    """Decodes JSON bytes into JSON-native Python values (used for stored payloads)."""

def encode_json(value: object, fallback: Callable[[Any], Any] | None = None) -> bytes:
    """Encodes a JSON-native value (with an optional fallback for other types) to JSON bytes."""

@final
class Context:
    """The context a step receives as its first argument."""

    @property
    def instance_id(self) -> str:
        """The id of the workflow instance this step runs in."""
    @property
    def step_name(self) -> str:
        """The name of the step being run."""
    @property
    def attempt(self) -> int:
        """1 on the first attempt, then 2, 3, … (an attempt interrupted by a crash counts)."""
    @property
    def position(self) -> str:
        """The step's position in the plan (stable across retries and resumes)."""
    @property
    def idempotency_key(self) -> str:
        """A key for exactly-once side effects: stable for this step position across retries."""
    @property
    def input(self) -> Any:
        """The workflow's input."""
    @property
    def cancelled(self) -> bool:
        """Whether the instance was asked to cancel."""
    def check_cancelled(self) -> None:
        """Raises ``tideflow.Cancelled`` if the instance was asked to cancel."""

@final
class VirtualClock:
    """A clock whose time only moves when told to (or when the engine waits on it)."""

    def __new__(cls, start: float = 1704067200.0) -> VirtualClock:
        """A clock starting at ``start`` (seconds since the epoch); raises
        ``tideflow.InvalidArgument`` unless it is a finite int or float."""
    def now(self) -> float:
        """The current virtual time, seconds since the epoch."""
    def sleep(self, seconds: float | timedelta) -> None:
        """Advances time by ``seconds`` (int, float or timedelta) at once; raises
        ``tideflow.InvalidArgument`` for a negative, NaN or infinite duration or another type."""
    def advance(self, seconds: float | timedelta) -> None:
        """Moves time forward by ``seconds`` (int, float or timedelta)."""

@final
class Plan:
    """A validated, hashed plan (data only: no code)."""

    def __new__(cls, spec: str) -> Plan: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str | None: ...
    @property
    def hash(self) -> str: ...
    def to_mermaid(self) -> str: ...
    def to_json(self) -> str: ...

@final
class Compiled:
    """A plan bound to this process's callables."""

    def __new__(
        cls,
        plan: Plan,
        steps: Sequence[StepBinding],
        fns: Sequence[Callable[[Any], Any]],
        input_encode: Callable[[Any], Any] | None = None,
        input_decode: Callable[[Any], Any] | None = None,
        output_decode: Callable[[Any], Any] | None = None,
        waits: Sequence[Callable[[Any], Any] | None] = ...,
        input_check: str = "untyped",
        input_hint: str = "",
    ) -> Compiled: ...
    @property
    def hash(self) -> str: ...
    @property
    def name(self) -> str: ...

@final
class Engine:
    """The native engine state: store, clock, registered workflows."""

    def __new__(
        cls,
        fallback: Callable[[Any], Any],
        coro_runner: Callable[[Any], Any],
        clock: object | None = None,
        store: NativeStore | None = None,
        py_store: object | None = None,
        notify: Callable[..., None] | None = None,
        store_runner: Callable[..., Any] | None = None,
    ) -> Engine: ...
    def register(self, wf: Compiled) -> None: ...
    def run(self, wf: Compiled, id: str, input: object) -> Outcome: ...
    def start(self, wf: Compiled, id: str, input: object) -> str: ...
    def resume(self, id: str) -> tuple[Outcome, str, str]: ...
    def list(
        self,
        statuses: Sequence[str],
        workflow: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        plan_hash: str | None = None,
    ) -> tuple[builtins.list[ListRow], str | None]: ...
    def counts(self) -> builtins.list[tuple[str, str, int]]: ...
    def purge(self, before: float, statuses: Sequence[str]) -> int: ...
    def compact(self) -> None: ...
    def delete(self, id: str) -> bool: ...
    def signal(self, id: str, name: str, payload: object) -> int: ...
    def cancel(self, id: str, reason: str) -> Outcome | None: ...
    def due(self, limit: int | None = None) -> builtins.list[str]: ...
    def get(
        self, id: str
    ) -> tuple[str, str, str, Any, bytes | None, float, float, str, tuple[str, str] | None]: ...
    def history(self, id: str) -> builtins.list[tuple[str, str, dict[str, Any]]]: ...
    def waiting_for(
        self, id: str
    ) -> builtins.list[tuple[str, str, str | None, str | None, float | None]]: ...
    def details(self, id: str) -> tuple[Any, float, float, float | None]: ...
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...
    @property
    def virtual_clock(self) -> bool: ...
    @property
    def async_store(self) -> bool: ...
    @property
    def shared_store(self) -> bool: ...

@final
class AsyncRun:
    """One instance driven from asyncio."""

    def __new__(cls, engine: Engine, wf: Compiled, id: str, input: object) -> AsyncRun: ...
    @staticmethod
    def claimed(
        engine: Engine, id: str, workflow: str, owner: str, spread: bool = True
    ) -> AsyncRun: ...
    def task_info(self, task_id: int) -> tuple[int, str, int, int]: ...
    @overload
    def remote(self, task_id: int, outcome: bytes, advance: Literal[True] = True) -> Answer: ...
    @overload
    def remote(self, task_id: int, outcome: bytes, advance: Literal[False]) -> None: ...
    def next(self) -> Answer: ...
    @overload
    def complete(self, task_id: int, output: object, advance: Literal[True] = True) -> Answer: ...
    @overload
    def complete(self, task_id: int, output: object, advance: Literal[False]) -> None: ...
    @overload
    def fail(self, task_id: int, exc: BaseException, advance: Literal[True] = True) -> Answer: ...
    @overload
    def fail(self, task_id: int, exc: BaseException, advance: Literal[False]) -> None: ...
    def wake(self) -> None: ...
    def created(self, existing: object) -> Answer: ...
    def committed(self) -> Answer: ...
    def conflicted(self) -> Answer: ...
    def inbox(self, signals: Sequence[tuple[int, bytes]]) -> Answer: ...
    def reloaded(self, loaded: object) -> Answer: ...
    @property
    def cancelling(self) -> bool: ...
    def deadline(self) -> float | None: ...
    @property
    def finished(self) -> bool: ...
    def outcome(self) -> Outcome: ...

@final
class RemoteStep:
    """One step of an instance held by another worker, rebuilt to be run here."""

    @staticmethod
    def open(engine: Engine, loaded: object, key: str, base: int) -> RemoteStep | str: ...
    def call(self) -> tuple[Callable[..., Any], Context, Any, bool, float | None]: ...
    def complete(self, output: object) -> bytes: ...
    def fail(self, exc: BaseException) -> bytes: ...
    @property
    def max_runs(self) -> int: ...
    def interrupted(self, runs: int) -> bytes: ...
    def cancel(self, reason: str) -> None: ...

def task_header(
    plan_hash: str,
    info: bytes,
    created_at: float,
    output: bytes | None = None,
    workflow: str = "!task",
) -> bytes: ...
def task_fields(id: str, header: bytes) -> tuple[bytes, bytes | None]: ...
def inbox_entries(id: str, raw: Sequence[tuple[int, bytes]]) -> list[tuple[int, str, bytes]]: ...
def internal_signal(name: str, payload: bytes, now: float) -> bytes: ...

@disjoint_base
class NativeStore:
    """A native store (memory, or SQLite on one file) with the synchronous store protocol of
    ``tideflow.stores.base.Store``; the base class of ``MemoryStore`` and ``SQLiteStore``."""

    def __new__(cls, path: str | None = None, durability: str = "normal") -> Self: ...
    @property
    def path(self) -> str | None: ...
    @property
    def durability(self) -> str | None: ...
    @property
    def on_disk(self) -> bool: ...
    def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None: ...
    def commit(self, commit: Commit) -> None: ...
    def get(self, id: str) -> StoredInstance | None: ...
    def load(self, id: str) -> Loaded | None: ...
    def records(self, id: str, after: int) -> builtins.list[bytes]: ...
    def signals(self, id: str, after: int) -> builtins.list[tuple[int, bytes]]: ...
    def list(self, query: ListQuery) -> ListPage: ...
    def counts(self) -> builtins.list[Count]: ...
    def delete(self, id: str) -> bool: ...
    def purge(self, before: float, statuses: Sequence[str]) -> int: ...
    def compact(self) -> None: ...
    def send_signal(self, id: str, record: bytes, now: float) -> int: ...
    def due(self, now: float, limit: int | None = None) -> builtins.list[InstanceMeta]: ...
    def claim(self, claim: Claim) -> builtins.list[InstanceMeta]: ...
    def extend(self, id: str, owner: str, lease: float, now: float) -> float: ...
    def release(self, id: str, owner: str) -> bool: ...
    def describe(self) -> str: ...
