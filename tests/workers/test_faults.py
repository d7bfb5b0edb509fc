"""Worker guarantees under faults, on every backend: a worker killed mid-step is replaced and
the step reruns with the same idempotency key; heartbeats keep a long step; a worker that lost
its lease cannot commit; a poison instance fails after bounded takeovers; racing claimers get
an instance once; a fan-out survives the death of its holder."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.servers import BACKENDS
from tests.workers.app import CHAIN, FAN, PACED, POISON, POISON_MAP, SLOW, WORKFLOWS
from tests.workers.harness import Workers, noted, pause, records, store_url, unpause, wait_until
from tideflow import Engine, LeaseLost, Status, StepEvent, Workflow
from tideflow.stores.base import Claim, Commit


def _sync_store(engine: Engine) -> Any:
    """The engine's store with the synchronous protocol (a server store's blocking twin)."""
    store = engine.store
    blocking = getattr(store, "blocking", None)
    return blocking() if callable(blocking) else store


def _plan_hash(engine: Engine, wf: Workflow) -> str:
    """The plan hash ``engine`` registered ``wf`` under."""
    hashes = [h for h, c in engine._by_hash.items() if c.name == wf.name]
    assert len(hashes) == 1, hashes
    return hashes[0]


def _completed_steps(engine: Engine, id: str) -> list[tuple[str, str]]:
    """(position, step) of every completed step event of an instance."""
    return [
        (e.position, e.step)
        for e in engine.history(id)
        if isinstance(e, StepEvent) and e.status == "completed"
    ]


def _once_each(engine: Engine, id: str) -> None:
    """Every position of the instance's history completed exactly once."""
    done = _completed_steps(engine, id)
    assert len(done) == len(set(done)), f"a step was recorded twice: {done}"


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_killed_mid_step_resumes_elsewhere(server: str | None, tmp_path: Path) -> None:
    url = store_url(server, tmp_path)
    log = tmp_path / "steps.jsonl"
    with Engine(store=url) as engine, Workers(url, log) as workers:
        engine.register(*WORKFLOWS)
        a = workers.start(lease=1.5)
        run = engine.start(PACED, 1, id="paced")  # slow sleeps 2 s
        wait_until(lambda: noted(log, step="slow", phase="start"), what="the slow step to start")
        workers.kill(a)
        b = workers.start(lease=1.5)
        done = run.wait(timeout=60)
        assert done.status is Status.COMPLETED, done
        assert done.output == "slept!"
        starts = noted(log, step="slow", phase="start")
        assert [n["pid"] for n in starts] == [a.pid, b.pid]
        assert starts[0]["idem"] == starts[1]["idem"]
        assert starts[1]["attempt"] > starts[0]["attempt"]
        assert [n["pid"] for n in noted(log, step="slow", phase="end")] == [b.pid]
        for s in ("inc", "pace", "after"):
            assert len(noted(log, step=s)) == 1, f"{s} ran again"
        _once_each(engine, "paced")
        assert Counter(s for _, s in _completed_steps(engine, "paced")) == {
            "inc": 1,
            "pace": 1,
            "slow": 1,
            "after": 1,
        }


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_heartbeats_keep_a_step_longer_than_the_lease(server: str | None, tmp_path: Path) -> None:
    url = store_url(server, tmp_path)
    log = tmp_path / "steps.jsonl"
    with Engine(store=url) as engine, Workers(url, log) as workers:
        engine.register(*WORKFLOWS)
        workers.start(lease=1.0)
        workers.start(lease=1.0)
        run = engine.start(SLOW, {"seconds": 3.5}, id="long")
        done = run.wait(timeout=60)
        assert done.status is Status.COMPLETED, done
        assert done.output == "slept!"
        notes = records(log)
        assert [(n["step"], n.get("phase")) for n in notes] == [
            ("slow", "start"),
            ("slow", "end"),
            ("after", None),
        ]
        assert len({n["pid"] for n in notes if n["step"] == "slow"}) == 1
        _once_each(engine, "long")


#: On SQLite a worker SIGSTOPped inside a write transaction (a claim or a heartbeat: the stop
#: lands there now and then) holds the file's lock while frozen, so no other process can write
#: until it resumes (docs/workers.md, "Failure modes"); the others survive it (they retry their
#: claims) but cannot take over in time. A limit of one file shared by processes, so not strict.
_PAUSED_SQLITE = pytest.mark.xfail(
    strict=False,
    reason="a process frozen inside a SQLite write transaction blocks the file until it resumes",
)


@pytest.mark.parametrize(
    "server",
    [pytest.param(b, marks=_PAUSED_SQLITE) if b == "sqlite" else b for b in BACKENDS],
    indirect=True,
)
def test_a_worker_that_lost_its_lease_cannot_commit(server: str | None, tmp_path: Path) -> None:
    url = store_url(server, tmp_path)
    log = tmp_path / "steps.jsonl"
    with Engine(store=url) as engine, Workers(url, log) as workers:
        engine.register(*WORKFLOWS)
        a = workers.start(lease=1.0)
        run = engine.start(PACED, 1, id="paused")  # slow sleeps 2 s
        wait_until(lambda: noted(log, step="slow", phase="start"), what="the slow step to start")
        pause(a)
        try:
            b = workers.start(lease=1.0)
            done = run.wait(timeout=60)
        finally:
            unpause(a)
        assert done.status is Status.COMPLETED, done
        # the paused worker's step ends, and its commit must change nothing
        wait_until(
            lambda: noted(log, step="slow", phase="end", pid=a.pid), what="the paused step's end"
        )
        workers.kill(b)
        fresh = engine.start(CHAIN, 0, id="fresh").wait(timeout=60)
        assert fresh.status is Status.COMPLETED, fresh
        assert fresh.output == 5
        assert {n["pid"] for n in noted(log, id="fresh")} == {a.pid}, "the paused worker stopped"
        again = engine.get("paused")
        assert again.status is Status.COMPLETED
        assert again.output == "slept!"
        assert Counter(s for _, s in _completed_steps(engine, "paused")) == {
            "inc": 1,
            "pace": 1,
            "slow": 1,
            "after": 1,
        }
        assert [n["pid"] for n in noted(log, step="after")] == [b.pid]
        for s in ("inc", "pace"):
            assert len(noted(log, id="paused", step=s)) == 1


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_a_commit_after_the_lease_expired_is_lease_lost(server: str | None, tmp_path: Path) -> None:
    url = store_url(server, tmp_path)
    with Engine(store=url) as engine:
        engine.register(*WORKFLOWS)
        engine.start(CHAIN, 1, id="fenced")
        store = _sync_store(engine)
        plan = _plan_hash(engine, CHAIN)
        got = store.claim(Claim("A", 1, 0.5, time.time(), [plan]))
        assert [m.id for m in got] == ["fenced"]
        first = got[0]
        assert first.owner == "A"
        time.sleep(1.0)
        got = store.claim(Claim("B", 1, 30.0, time.time(), [plan]))
        assert [(m.id, m.owner) for m in got] == [("fenced", "B")]
        before = store.load("fenced")
        late = Commit(
            "fenced", first.version, "running", time.time(), None, None, [b"x"], 0, "A", None
        )
        with pytest.raises(LeaseLost):
            store.commit(late)
        after = store.load("fenced")
        assert after.meta.version == before.meta.version
        assert after.meta.owner == "B"
        assert after.meta.status == before.meta.status
        assert after.records == before.records
        assert after.header == before.header
        with pytest.raises(LeaseLost):
            store.extend("fenced", "A", 30.0, time.time())


def _keep_alive(workers: Workers, n: int, lease: float, stop: threading.Event) -> None:
    """Restarts dead workers so that ``n`` run, until ``stop`` is set."""
    while not stop.is_set():
        alive = [p for p in workers.procs if p.poll() is None]
        for _ in range(n - len(alive)):
            workers.start(lease=lease)
        time.sleep(0.05)


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
@pytest.mark.parametrize("wf", [POISON, POISON_MAP], ids=["local", "in_map"])
def test_poison_fails_after_bounded_takeovers(
    server: str | None, tmp_path: Path, wf: Workflow
) -> None:
    url = store_url(server, tmp_path)
    log = tmp_path / "steps.jsonl"
    with Engine(store=url) as engine, Workers(url, log) as workers:
        engine.register(*WORKFLOWS)
        workers.start(lease=1.0)
        workers.start(lease=1.0)
        stop = threading.Event()
        keeper = threading.Thread(target=_keep_alive, args=(workers, 2, 1.0, stop))
        keeper.start()
        try:
            inp: Any = 1 if wf is POISON else {"n": 2, "nap": 0.0}
            done = engine.start(wf, inp, id="poisoned").wait(timeout=60)
            assert done.status is Status.FAILED, done
            assert "StepInterrupted" in repr(done.error), done.error
            step = "poison" if wf is POISON else "poison_item"
            assert step in str(done.error), done.error
            takeovers = len(noted(log, step=step))
            assert 1 <= takeovers <= (3 if wf is POISON else 2 * 3), takeovers
            chain = engine.start(CHAIN, 0, id="after-poison").wait(timeout=60)
            assert chain.status is Status.COMPLETED, chain
            assert chain.output == 5
        finally:
            stop.set()
            keeper.join()


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_racing_workers_run_each_step_once(server: str | None, tmp_path: Path) -> None:
    url = store_url(server, tmp_path)
    log = tmp_path / "steps.jsonl"
    n = 8 if server is not None and server.startswith("mongo") else 20
    with Engine(store=url) as engine, Workers(url, log) as workers:
        engine.register(*WORKFLOWS)
        runs = [engine.start(CHAIN, i, id=f"race-{i}") for i in range(n)]
        starters = [threading.Thread(target=workers.start, kwargs={"lease": 5.0}) for _ in range(3)]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        for r in runs:
            done = r.wait(timeout=60)
            assert done.status is Status.COMPLETED, done
            assert done.output == int(r.id.split("-")[1]) + 5
            _once_each(engine, r.id)
    keys = Counter((x["id"], x["key"]) for x in records(log))
    assert len(keys) == n * 5
    assert set(keys.values()) == {1}, [k for k, c in keys.items() if c > 1]


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_concurrent_claims_of_one_instance_one_wins(server: str | None, tmp_path: Path) -> None:
    url = store_url(server, tmp_path)
    claimers = 6
    with Engine(store=url) as engine:
        engine.register(*WORKFLOWS)
        engine.start(CHAIN, 1, id="contested")
        plan = _plan_hash(engine, CHAIN)
        engines = [Engine(store=url) for _ in range(claimers)]
        try:
            stores = [_sync_store(e) for e in engines]
            for s in stores:  # connect before the race
                s.get("contested")
            gate = threading.Barrier(claimers)
            got: dict[str, list[str]] = {}

            def claim(i: int) -> None:
                gate.wait()
                owner = f"claimer-{i}"
                metas = stores[i].claim(Claim(owner, 1, 30.0, time.time(), [plan]))
                got[owner] = [m.id for m in metas]

            threads = [threading.Thread(target=claim, args=(i,)) for i in range(claimers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            winners = [o for o, ids in got.items() if ids]
            assert len(got) == claimers
            assert len(winners) == 1, got
            assert got[winners[0]] == ["contested"]
            assert _sync_store(engine).get("contested").meta.owner == winners[0]
        finally:
            for e in engines:
                e.close()


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_fan_out_survives_its_holder(server: str | None, tmp_path: Path) -> None:
    url = store_url(server, tmp_path)
    log = tmp_path / "steps.jsonl"
    n = 6
    with Engine(store=url) as engine, Workers(url, log) as workers:
        engine.register(*WORKFLOWS)
        procs = [workers.start(concurrency=2, lease=1.5), workers.start(concurrency=2, lease=1.5)]
        run = engine.start(FAN, {"n": n, "nap": 0.5}, id="fanned")
        wait_until(lambda: noted(log, step="items"), what="the fan-out to start")
        holder = noted(log, step="items")[0]["pid"]
        a, b = sorted(procs, key=lambda p: p.pid != holder)
        wait_until(lambda: noted(log, step="nap", pid=b.pid), what="a task to end on the other")
        workers.kill(a)
        done = run.wait(timeout=60)
        assert done.status is Status.COMPLETED, done
        assert done.output == sum(i * i for i in range(n))
        naps = noted(log, id="fanned", step="nap")
        assert {x["key"] for x in naps} == {x["key"] for x in naps if x["pid"] in (a.pid, b.pid)}
        done_steps = _completed_steps(engine, "fanned")
        assert Counter(s for _, s in done_steps) == {"items": 1, "nap": n, "total": 1}
        assert len({p for p, s in done_steps if s == "nap"}) == n
        assert len({x["key"] for x in naps}) == n
        assert len(noted(log, step="items")) == 1
