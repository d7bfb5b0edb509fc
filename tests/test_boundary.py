"""The runtime boundary: what the engine asks of a store per operation (one call to start, one to
resume, one per step boundary), that a Python store is never called under a lock (two threads on
one store cannot hang), that an async store never blocks the event loop, and the instance states
and queries the contract added (PENDING, paged listings, counts)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import pytest

import tideflow.engine as engine_module
from tideflow import Context, Engine, Status, VirtualClock, Workflow, step

from .conformance.async_dict_store import AsyncDictStore
from .conformance.dict_store import DictStore


@step
def inc(ctx: Context, x: int) -> int:
    return x + 1


@step
def boom(ctx: Context, x: int) -> int:
    raise ValueError(f"no good: {x}\nsecond line")


class Counting:
    """Counts the calls made to a synchronous store and passes them on."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if name == "describe":
            return target

        def counted(*args: Any) -> Any:
            self.calls[name] += 1
            return target(*args)

        return counted


def chain(n: int, name: str = "chain") -> Workflow:
    wf = Workflow(name)
    for _ in range(n):
        wf = wf.then(inc)
    return wf


def test_a_run_is_one_create_and_one_commit_per_step_boundary() -> None:
    store = Counting(DictStore())
    engine = Engine(store=store)
    assert engine.run(chain(5), 0, id="a").output == 5
    # the create records the first step's start; each later boundary is one commit (the last
    # one finishes the instance): nothing is read
    assert store.calls == Counter({"create": 1, "commit": 5})


def test_a_resume_is_one_load() -> None:
    data = DictStore()
    wf = Workflow("waits").then(inc).wait_signal("go").then(inc)
    Engine(store=data).run(wf, 0, id="a")
    store = Counting(data)
    engine = Engine(store=store)
    engine.register(wf)
    engine.signal("a", "go", 1)
    store.calls.clear()
    assert engine.resume("a").output == 2
    assert store.calls["load"] == 1
    assert not {"get", "records", "signals"} & set(store.calls)


def test_rerunning_a_finished_id_is_one_create_call() -> None:
    store = Counting(DictStore())
    engine = Engine(store=store)
    engine.run(chain(2), 0, id="a")
    store.calls.clear()
    assert engine.run(chain(2), 0, id="a").output == 2
    assert store.calls == Counter({"create": 1})


def test_two_threads_driving_one_python_store_do_not_hang() -> None:
    store = DictStore()
    engine = Engine(store=store)
    wf = chain(200, "busy")
    errors: list[BaseException] = []

    def work(prefix: str) -> None:
        try:
            for i in range(5):
                assert engine.run(wf, 0, id=f"{prefix}{i}").output == 200
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hung on the store"
    assert errors == []
    assert len(engine.list(status=Status.COMPLETED)) == 10


def test_an_async_store_never_blocks_the_event_loop() -> None:
    store = AsyncDictStore(delay=0.02)  # every call takes 20 ms, awaited

    @step
    async def ainc(ctx: Context, x: int) -> int:
        return x + 1

    wf = Workflow("slow").then(ainc).then(ainc).then(ainc)

    async def main() -> tuple[int, Any]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.001)
                ticks += 1

        t = asyncio.ensure_future(ticker())
        run = await Engine(store=store).run_async(wf, 0, id="a")
        stop.set()
        await t
        return ticks, run

    ticks, run = asyncio.run(main())
    assert run.output == 3
    # 1 create + 3 commits at 20 ms each: the 1 ms ticker ran all along (a blocked loop would
    # leave it at a handful of ticks)
    assert ticks >= 20, ticks


def test_engine_run_works_on_an_async_store() -> None:
    store = AsyncDictStore()
    engine = Engine(store=store)
    assert engine.run(chain(3), 0, id="a").output == 3
    assert engine.get("a").status is Status.COMPLETED
    assert [r.id for r in engine.list()] == ["a"]


def test_start_leaves_an_instance_pending_until_something_runs_it() -> None:
    clock = VirtualClock()
    engine = Engine(clock=clock)
    run = engine.start(chain(2), 0, id="p")
    assert run.status is Status.PENDING
    assert engine.get("p").status is Status.PENDING
    assert engine.steps("p") == []
    assert [r.id for r in engine.list(status="pending")] == ["p"]
    assert engine.start(chain(2), 5, id="p").status is Status.PENDING  # an existing id: unchanged
    (done,) = engine.run_due()
    assert (done.id, done.output) == ("p", 2)
    assert [e.attempt for e in engine.steps("p")] == [1, 1]


def test_a_pending_instance_is_resumed_and_recovered() -> None:
    engine = Engine()
    engine.start(chain(1), 0, id="r")
    engine.start(chain(1), 10, id="s")
    assert engine.resume("r").output == 1
    assert [(r.id, r.output) for r in engine.recover()] == [("s", 11)]


def test_recover_and_list_read_the_store_a_page_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "_PAGE", 3)
    store = Counting(DictStore())
    engine = Engine(store=store)
    wf = Workflow("w").then(inc).wait_signal("go").then(inc)
    for i in range(10):
        engine.run(wf, i, id=f"i{i}")
    store.calls.clear()
    listed = engine.list()
    assert sorted(r.id for r in listed) == [f"i{i}" for i in range(10)]
    assert store.calls["list"] == 4  # 3 + 3 + 3 + 1
    assert "get" not in store.calls  # a listing shows its rows without reading each instance
    assert len(engine.list(limit=4)) == 4
    for i in range(10):
        engine.signal(f"i{i}", "go", i)  # the wait hands its payload on
    assert sorted(r.output for r in engine.recover()) == list(range(1, 11))


def test_a_listed_run_reads_its_output_only_when_asked() -> None:
    store = Counting(DictStore())
    engine = Engine(store=store)
    engine.run(chain(1), 1, id="ok")
    engine.run(Workflow("bad").then(boom), 1, id="bad")
    store.calls.clear()
    runs = {r.id: r for r in engine.list()}
    assert "get" not in store.calls
    assert runs["bad"].error_summary == "ValueError: no good: 1"
    assert runs["ok"].error_summary is None
    assert runs["ok"].output == 2
    assert store.calls["get"] == 1
    assert runs["bad"].status is Status.FAILED and "no good" in str(runs["bad"].error)


def test_counts_per_workflow_and_status() -> None:
    engine = Engine()
    engine.run(chain(1, "a"), 0)
    engine.run(chain(1, "a"), 0)
    engine.run(Workflow("b").then(boom), 0)
    engine.start(chain(1, "b"), 0)
    assert engine.counts() == {
        "a": {Status.COMPLETED: 2},
        "b": {Status.FAILED: 1, Status.PENDING: 1},
    }


def test_list_by_plan_hash_shows_the_instances_of_one_version() -> None:
    engine = Engine()
    v1, v2 = chain(1, "v"), chain(2, "v")
    engine.run(v1, 0, id="old")
    engine.run(v2, 0, id="new")
    assert [r.id for r in engine.list(plan_hash=v1.plan_hash)] == ["old"]
    assert [r.id for r in engine.list(workflow="v", plan_hash=v2.plan_hash)] == ["new"]
    assert {r.plan_hash for r in engine.list()} == {v1.plan_hash, v2.plan_hash}


def test_what_an_async_store_returns_is_checked_like_a_sync_stores() -> None:
    from tideflow import StoreError
    from tideflow.stores.base import Loaded

    class IntsForBytes(AsyncDictStore):
        async def load(self, id: str) -> Loaded | None:
            got = await super().load(id)
            assert got is not None
            return got._replace(records=[list(r) for r in got.records])  # type: ignore[misc]

    store = IntsForBytes()
    wf = Workflow("waits").then(inc).wait_signal("go").then(inc)
    assert Engine(store=store).run(wf, 0, id="a").status is Status.SUSPENDED
    with pytest.raises(StoreError, match="load"):
        asyncio.run(Engine(store=store).run_async(wf, 0, id="a"))
