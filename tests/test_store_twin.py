"""An AsyncStore's synchronous twin (``blocking()``): ``engine.run`` and the other synchronous
calls use the twin's plain methods, ``run_async`` awaits the store's coroutines, and both see one
set of data. A twin that is not a whole synchronous store is refused when the engine is built."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from tests.conformance.async_dict_store import AsyncDictStore
from tests.conformance.dict_store import DictStore
from tideflow import Context, Engine, StoreError, Workflow, step


class CountingDict(DictStore):
    """A DictStore that counts the commits made through it."""

    def __init__(self) -> None:
        super().__init__()
        self.commits = 0

    def commit(self, commit: Any) -> None:
        self.commits += 1
        super().commit(commit)


class Twinned(AsyncDictStore):
    """An AsyncStore whose blocking() is a synchronous store over the same dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.twin = CountingDict()
        self.sync = self.twin  # the async face delegates to the same data
        self.awaited: Counter[str] = Counter()

    async def _run(self, name: str, call: Any) -> Any:
        self.awaited[name] += 1
        return await super()._run(name, call)

    def blocking(self) -> DictStore:
        return self.twin


@step
def inc(ctx: Context, n: int) -> int:
    return n + 1


FLOW = Workflow("twin").then(inc).then(inc)


def test_engine_run_calls_the_twin_and_run_async_awaits_the_coroutines() -> None:
    store = Twinned()
    engine = Engine(store=store)
    assert engine.run(FLOW, 1, id="a").output == 3
    assert store.twin.commits >= 1
    assert sum(store.awaited.values()) == 0  # no coroutine ran on the synchronous path
    commits = store.twin.commits
    assert asyncio.run(engine.run_async(FLOW, 5, id="b")).output == 7
    assert store.awaited["commit"] >= 1 and store.awaited["create"] == 1
    assert store.twin.commits == commits + store.awaited["commit"]  # the same data underneath
    assert engine.get("b").output == 7  # read through the twin
    assert Engine(store=store).get("a").output == 3


def test_a_twin_that_is_not_a_whole_store_is_refused() -> None:
    class Half:
        def create(self, *a: Any) -> None: ...

    class Bad(AsyncDictStore):
        def blocking(self) -> Half:
            return Half()

    with pytest.raises(StoreError, match=r"blocking\(\) returned a Half, which lacks commit"):
        Engine(store=Bad())


def test_a_twin_with_coroutine_methods_is_refused() -> None:
    class Bad(AsyncDictStore):
        def blocking(self) -> AsyncDictStore:
            return AsyncDictStore()

    with pytest.raises(StoreError, match="whose create is a coroutine function"):
        Engine(store=Bad())


class Closable(AsyncDictStore):
    """Counts close() and aclose()."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = 0
        self.aclosed = 0

    def close(self) -> None:
        self.closed += 1

    async def aclose(self) -> None:
        self.aclosed += 1


def test_engine_close_closes_the_store_and_with_blocks_call_it() -> None:
    store = Closable()
    with Engine(store=store) as engine:
        assert engine.run(FLOW, 1).output == 3
    assert (store.closed, store.aclosed) == (1, 0)

    async def main() -> None:
        async with Engine(store=store) as engine:
            assert (await engine.run_async(FLOW, 1)).output == 3

    asyncio.run(main())
    assert (store.closed, store.aclosed) == (1, 1)


def test_engine_close_on_memory_and_sqlite_does_nothing(tmp_path: Any) -> None:
    for url in ("memory", f"sqlite:///{tmp_path / 'c.db'}"):
        engine = Engine(store=url)
        engine.close()
        engine.close()
        with Engine(store=url) as again:
            assert again.run(FLOW, 1).output == 3


def test_a_store_error_raised_by_a_store_keeps_its_own_message() -> None:
    """A store that raises StoreError has already named itself and what failed (the server
    stores do): the engine passes that message on as it is, with the store's error as cause,
    instead of wrapping it in "create() raised StoreError: ..."."""

    class Failing(AsyncDictStore):
        async def create(self, *args: Any) -> None:
            raise StoreError("mystore://db: create: the server refused the credentials")

    text = "mystore://db: create: the server refused the credentials"
    with pytest.raises(StoreError) as err:
        asyncio.run(Engine(store=Failing()).run_async(FLOW, 1))
    assert str(err.value).endswith(text) and "raised" not in str(err.value)
    with pytest.raises(StoreError) as err:
        Engine(store=Failing()).run(FLOW, 1)  # the synchronous path, through the core
    assert str(err.value) == f"store error: {text}"
    assert isinstance(err.value.__cause__, StoreError)
    with pytest.raises(StoreError, match="RuntimeError: boom"):

        class Other(AsyncDictStore):
            async def create(self, *args: Any) -> None:
                raise RuntimeError("boom")

        asyncio.run(Engine(store=Other()).run_async(FLOW, 1))
