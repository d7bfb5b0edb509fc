"""The boundary between the engine and a store object: what `Engine(store=...)` refuses at once,
what happens when a Python store returns the wrong type or raises, and what the native stores
(`engine.store`, a `NativeStore`) refuse as arguments.

Needs the extension (the engine-level half of the suite, deselected by `-k "not engine"`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tideflow import Context, Engine, InvalidArgument, StoreError, Workflow, step
from tideflow.stores import MemoryStore, NativeStore, SQLiteStore
from tideflow.stores.base import Commit, InstanceMeta, StoredInstance

from .async_dict_store import AsyncDictStore
from .dict_store import DictStore
from .protocol import T0, commit, meta


@step
def one(ctx: Context, x: int) -> int:
    return x + 1


WF = Workflow("adapter").then(one)
#: Values of the wrong type, for the checks (typed Any so that mypy lets them through).
NOT_BYTES: Any = "text"
NOT_A_LIST: Any = b"abc"
NOT_AN_INT: Any = "1"


class Partial:
    """Has the five methods `parse_store` looks for, and nothing else."""

    def create(self) -> None: ...
    def commit(self) -> None: ...
    def get(self) -> None: ...
    def records(self) -> None: ...
    def list(self) -> None: ...


def test_a_store_missing_operations_is_refused_naming_them() -> None:
    with pytest.raises(
        StoreError,
        match=r"Partial is not a store: it lacks load, signals.*claim, extend, release, describe",
    ):
        Engine(store=Partial())


class Mixed(DictStore):
    """A sync store with one coroutine method."""

    async def claim(self, claim: object) -> list[InstanceMeta]:  # type: ignore[override]
        return []


def test_a_store_mixing_coroutines_and_plain_methods_is_refused() -> None:
    with pytest.raises(StoreError, match=r"mixes coroutine and plain methods \(create, commit"):
        Engine(store=Mixed())


class BadName(DictStore):
    def describe(self) -> str:
        return 42  # type: ignore[return-value]


def test_describe_must_return_a_str() -> None:
    with pytest.raises(StoreError, match="describe\\(\\) must return a str, got 42"):
        Engine(store=BadName())


class TupleCreate(DictStore):
    """Returns a plain tuple where a `StoredInstance` belongs."""

    def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None:
        super().create(meta, header, records)
        return (meta, header)  # type: ignore[return-value]


def test_a_wrong_return_type_is_a_store_error_naming_the_method() -> None:
    with pytest.raises(
        StoreError, match=r"dict: create\(\) returned tuple .* where a StoredInstance or None"
    ):
        Engine(store=TupleCreate()).run(WF, 1, id="t")


class TextRecords(DictStore):
    def load(self, id: str) -> object:  # type: ignore[override]
        got = super().load(id)
        return None if got is None else got._replace(records=[NOT_BYTES])


def test_a_record_that_is_not_bytes_is_a_store_error() -> None:
    engine = Engine(store=TextRecords())
    engine.run(WF, 1, id="r")
    with pytest.raises(StoreError, match=r"load\(\) returned str 'text' where a record, bytes"):
        engine.resume("r")


class Broken(DictStore):
    def commit(self, commit: Commit) -> None:
        raise ConnectionResetError("the server went away")


def test_a_driver_failure_is_a_store_error_caused_by_it() -> None:
    with pytest.raises(StoreError, match="ConnectionResetError: the server went away") as err:
        Engine(store=Broken()).run(WF, 1, id="b")
    assert isinstance(err.value.__cause__, ConnectionResetError)


def test_an_async_store_runs_on_the_synchronous_path() -> None:
    store = AsyncDictStore(delay=0.001)
    run = Engine(store=store).run(WF, 1, id="a")
    assert run.output == 2
    got = store.sync.load("a")
    assert got is not None and got.meta.status == "completed"


def test_engine_store_is_a_native_store_for_memory_and_sqlite(tmp_path: Path) -> None:
    assert isinstance(Engine().store, MemoryStore)
    assert isinstance(Engine().store, NativeStore)
    s = SQLiteStore(f"{tmp_path}/x.db")
    assert (s.on_disk, s.describe(), repr(s)) == (
        True,
        f"sqlite:{tmp_path}/x.db",
        f"SQLiteStore({f'{tmp_path}/x.db'!r}, durability='normal')",
    )
    assert (MemoryStore().on_disk, repr(MemoryStore())) == (False, "MemoryStore()")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.commit(tuple(commit("x", 1))), "commit\\(\\) was given tuple"),
        (lambda s: s.commit(commit("x", 1, "runnin")), "a status"),
        (lambda s: s.commit(commit("x", 1, records=[NOT_BYTES])), "a record, bytes"),
        (lambda s: s.commit(commit("x", 1, records=NOT_A_LIST)), "a sequence of bytes records"),
        (
            lambda s: s.create(meta("y")._replace(version=NOT_AN_INT), b"", []),
            "InstanceMeta.version",
        ),
        (lambda s: s.send_signal("x", "text", T0), "a signal record, bytes"),
        (lambda s: s.purge(T0, "completed"), "a sequence of statuses"),
    ],
)
def test_a_native_store_refuses_bad_arguments(call: object, message: str) -> None:
    store = MemoryStore()
    store.create(meta("x"), b"h", [])
    before = store.load("x")
    with pytest.raises(InvalidArgument, match=message):
        call(store)  # type: ignore[operator]
    assert store.load("x") == before


@pytest.mark.parametrize("make", [DictStore, AsyncDictStore], ids=["dict", "async-dict"])
def test_two_threads_drive_one_python_store_at_once(make: type[object]) -> None:
    # each step waits for the other thread's step: a lock held across a store call (or a step)
    # would deadlock here; the adapter holds none
    barrier = threading.Barrier(2)

    @step
    def meet(ctx: Context, x: int) -> int:
        barrier.wait(timeout=10)
        return x * 10

    wf = Workflow("meet").then(meet).then(one)
    engine = Engine(store=make())
    engine.register(wf)
    out: dict[int, object] = {}

    def drive(i: int) -> None:
        out[i] = engine.run(wf, i, id=f"t{i}").output

    threads = [threading.Thread(target=drive, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert out == {1: 11, 2: 21}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_engine_store_holds_what_the_engine_runs(kind: str, tmp_path: Path) -> None:
    # the engine runs on the very store `engine.store` is (`NativeStore.shared`), so a tool that
    # claims or lists through it sees the engine's instances, in memory too
    engine = Engine(store=MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "e.db"))
    engine.run(WF, 1, id="seen")
    store = engine.store
    assert isinstance(store, NativeStore)
    got = store.load("seen")
    assert got is not None and got.meta.status == "completed"
    again = Engine(store=store)  # a second engine on the same store object shares its data
    assert again.get("seen").output == 2
