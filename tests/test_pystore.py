"""Python stores: errors from the driver surface as StoreError with the driver's error as cause."""

from __future__ import annotations

import pytest

from tideflow import Context, Engine, StoreError, Workflow, step
from tideflow.stores.base import Commit, Store

from .conformance.dict_store import DictStore


@step
def inc(ctx: Context, x: int) -> int:
    return x + 1


class FlakyStore(DictStore):
    """Loses its connection after `ok` commits."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.ok = ok

    def commit(self, commit: Commit) -> None:
        if self.ok == 0:
            raise ConnectionResetError("server closed the connection unexpectedly")
        self.ok -= 1
        super().commit(commit)


def test_the_reference_store_satisfies_the_protocol() -> None:
    assert isinstance(DictStore(), Store)


def test_a_dropped_connection_is_a_store_error_with_the_driver_error_as_cause() -> None:
    store = FlakyStore(ok=1)
    engine = Engine(store=store)
    with pytest.raises(StoreError, match="server closed the connection") as err:
        engine.run(Workflow("w").then(inc).then(inc).then(inc), 1, id="x")
    assert isinstance(err.value.__cause__, ConnectionResetError)
    # what was committed before the failure is intact, and the instance resumes later
    assert len(store.records("x", 0)) >= 1
    store.ok = 100
    assert engine.run(Workflow("w").then(inc).then(inc).then(inc), 1, id="x").output == 4


def test_an_object_that_is_not_a_store_is_rejected() -> None:
    class Half:
        def create(self) -> None: ...
        def commit(self) -> None: ...
        def get(self) -> None: ...
        def records(self) -> None: ...
        def list(self) -> None: ...

    with pytest.raises(
        StoreError,
        match="Half is not a store: it lacks load, signals, counts, delete, purge, send_signal, "
        "due, claim, extend, release, describe",
    ):
        Engine(store=Half())
    with pytest.raises(StoreError, match="unknown store"):
        Engine(store=object())
