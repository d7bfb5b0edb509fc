"""The MongoDB store on a real server (the shared SecantusDB, or a private one for the faults):
the engine end to end from a URL, URL parsing, bad input, the schema marker, the log spill,
round trips, faults (connections cut, server restarted, a lost acknowledgement, the server
unreachable) and the server's lease clock. No mocks: every test talks plain pymongo to a server.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.servers import server_url, unique_name
from tests.servers.private_mongo import PrivateMongo
from tests.servers.proxy import Proxy
from tideflow import Context, Engine, Status, Workflow, step
from tideflow.errors import LeaseLost, StoreError
from tideflow.history import StepEvent
from tideflow.stores.base import Claim, Commit, InstanceMeta

pymongo = pytest.importorskip("pymongo")


def _with_db(url: str, db: str, query: str = "") -> str:
    parts = urlsplit(url)
    q = "&".join(x for x in (parts.query, query) if x)
    return f"{parts.scheme}://{parts.netloc}/{db}" + (f"?{q}" if q else "")


@pytest.fixture
def url() -> str:
    """The shared server's URL on a fresh database."""
    return _with_db(server_url("mongo"), unique_name())


@pytest.fixture
def raw(url: str) -> Iterator[Any]:
    """A plain pymongo database handle on the test's database (dropped afterwards)."""
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    db = client.get_default_database()
    try:
        yield db
    finally:
        client.drop_database(db.name)
        client.close()


def _close(engine: Engine) -> None:
    engine.store.close()


# --- workflows ------------------------------------------------------------------------------

executed: list[tuple[str, int]] = []
hooks: dict[int, Any] = {}  # step input -> something to do (once) while that step runs


@pytest.fixture(autouse=True)
def _reset() -> None:
    executed.clear()
    hooks.clear()


@step
def bump(ctx: Context, x: int) -> int:
    executed.append((ctx.idempotency_key, x))
    hook = hooks.pop(x, None)
    if hook is not None:
        hook()
    return x + 1


CHAIN = Workflow("chain3").then(bump).then(bump).then(bump)
GATED = Workflow("gated").then(bump).wait_signal("go").then(bump)


def _completed_steps(engine: Engine, iid: str) -> list[str]:
    return [
        e.position
        for e in engine.history(iid)
        if isinstance(e, StepEvent) and e.status == "completed"
    ]


def _once_each(engine: Engine, iid: str, steps: int = 3) -> None:
    done = _completed_steps(engine, iid)
    assert len(done) == steps and len(set(done)) == steps, done


# --- the engine end to end ------------------------------------------------------------------


def test_engine_from_the_url_runs_sync_and_async_and_a_second_engine_reads_it(url: str) -> None:
    engine = Engine(store=url)
    try:
        assert (
            engine.store.describe() == f"mongodb://{urlsplit(url).netloc}/{urlsplit(url).path[1:]}"
        )
        run = engine.run(CHAIN, 1, id="s1")
        assert (run.status, run.output) == (Status.COMPLETED, 4)
        run2 = asyncio.run(engine.run_async(CHAIN, 10, id="a1"))
        assert (run2.status, run2.output) == (Status.COMPLETED, 13)
        other = Engine(store=url)  # a new store object: as another process would
        try:
            assert other.get("s1").output == 4 and other.get("a1").output == 13
            _once_each(other, "s1")
            _once_each(other, "a1")
        finally:
            _close(other)
    finally:
        engine.store.drop()
        _close(engine)


def test_signals_reach_a_waiting_instance_sync_and_async(url: str) -> None:
    engine = Engine(store=url)
    try:
        engine.register(GATED)
        run = engine.run(GATED, 1, id="g1")
        assert run.status is Status.SUSPENDED
        engine.signal("g1", "go", 10)
        assert engine.resume("g1").output == 11

        async def main() -> Any:
            task = asyncio.ensure_future(engine.run_async(GATED, 5, id="g2"))
            for _ in range(500):  # the instance exists once its create went through
                await asyncio.sleep(0.01)
                if engine.store.blocking().get("g2") is not None:
                    break
            engine.signal("g2", "go", 20)
            return await asyncio.wait_for(task, 10)

        got = asyncio.run(main())
        assert (got.status, got.output) == (Status.COMPLETED, 21)
    finally:
        engine.store.drop()
        _close(engine)


def test_two_databases_on_one_server_are_independent() -> None:
    base = server_url("mongo")
    one, two = _with_db(base, unique_name()), _with_db(base, unique_name())
    e1, e2 = Engine(store=one), Engine(store=two)
    try:
        e1.run(CHAIN, 1, id="same")
        e2.run(CHAIN, 100, id="same")
        assert e1.get("same").output == 4 and e2.get("same").output == 103
        e1.store.blocking().delete("same")
        assert e2.get("same").output == 103
    finally:
        for e in (e1, e2):
            e.store.drop()
            _close(e)


# --- URLs -----------------------------------------------------------------------------------


def test_the_database_comes_from_the_path_or_the_keyword_or_defaults() -> None:
    from tideflow.stores import MongoStore

    assert MongoStore("mongodb://127.0.0.1:1/").describe() == "mongodb://127.0.0.1:1/tideflow"
    assert MongoStore("mongodb://127.0.0.1:1").describe() == "mongodb://127.0.0.1:1/tideflow"
    assert MongoStore("mongodb://127.0.0.1:1/app").describe() == "mongodb://127.0.0.1:1/app"
    s = MongoStore("mongodb://127.0.0.1:1/app", database="other")
    assert s.describe() == "mongodb://127.0.0.1:1/other"
    many = MongoStore("mongodb://u:pw@h1:1,h2:2/db?replicaSet=rs0&appName=tf&w=majority")
    assert many.describe() == "mongodb://h1:1,h2:2/db"
    assert "pw" not in repr(many)


@pytest.mark.parametrize(
    "bad",
    [
        "mongodb://127.0.0.1:1/db?notAnOption=1",  # unknown option
        "mongodb://127.0.0.1:1/db?maxPoolSize=-1",  # a bad value
        "mongodb://127.0.0.1:notaport/db",
        "mongodb://",
        "mongodb:///db",
        "http://127.0.0.1:1/db",
        "mongodb://127.0.0.1:1/bad.name",
        "mongodb://127.0.0.1:1/db?timeoutMS=never",
    ],
)
def test_a_bad_url_is_a_store_error(bad: str) -> None:
    from tideflow.stores import MongoStore

    with pytest.raises(StoreError):
        MongoStore(bad)


def test_engine_dispatches_mongodb_urls_and_srv() -> None:
    with pytest.raises(StoreError, match=r"unknown option|malformed"):
        Engine(store="mongodb://127.0.0.1:1/db?bogus=1")
    from tideflow.stores import MongoStore

    srv = MongoStore("mongodb+srv://user:pw@cluster.example.invalid/app")
    assert srv.describe() == "mongodb+srv://cluster.example.invalid/app"


def test_options_in_the_url_go_to_pymongo(url: str) -> None:
    from tideflow.stores import MongoStore

    store = MongoStore(url + "?appName=tideflow-test&retryWrites=false&timeoutMS=4000")
    twin = store.blocking()
    try:
        assert twin.get("nothing") is None
        client = twin._client
        assert client.options.pool_options.metadata["application"]["name"] == "tideflow-test"
        assert client.options.retry_writes is False
        assert client.options.timeout == 4.0
    finally:
        store.drop()
        store.close()


def test_importing_the_module_imports_no_driver() -> None:
    code = "import tideflow, tideflow.stores.mongo, sys; print('pymongo' in sys.modules, 'bson' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- bad input ------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get_and_close(store: Any, iid: str) -> Any:
    """``await store.get(iid)``, then ``aclose()`` on the same loop: when the server cannot be
    reached, pymongo's monitor task may be in the middle of connecting, and ``asyncio.run``
    cancels it before the loop closes (pymongo leaks that socket), so close the client first."""
    try:
        return await store.get(iid)
    finally:
        await store.aclose()


@pytest.fixture
def pymongo_leaks() -> Iterator[None]:
    """Collects after the test, without a warning, the socket pymongo (4.20) leaks when its async
    monitor task is cancelled while connecting (``pool_shared._async_create_connection`` closes
    it on OSError only, not on cancellation): it happens when a client is closed while its server
    refuses connections. Left to the garbage collector, it would fail whichever later test the
    collection happens to run in."""
    yield
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _assert_clean(err: BaseException, secret: str, caplog: pytest.LogCaptureFixture) -> None:
    chain: BaseException | None = err
    while chain is not None:
        assert secret not in str(chain) and secret not in repr(chain)
        chain = chain.__cause__ or chain.__context__
    for rec in caplog.records:
        assert secret not in rec.getMessage()


def test_an_unreachable_port_is_a_store_error_within_the_timeout(
    caplog: pytest.LogCaptureFixture, pymongo_leaks: None
) -> None:
    from tideflow.stores import MongoStore

    caplog.set_level(logging.DEBUG)
    port = _free_port()
    secret = "hunter2-secret"
    store = MongoStore(f"mongodb://me:{secret}@127.0.0.1:{port}/db", timeout=2)
    t = time.monotonic()
    with pytest.raises(StoreError) as info:
        store.blocking().get("x")
    assert time.monotonic() - t < 6
    assert f"127.0.0.1:{port}" in str(info.value) and "timed out" in str(info.value)
    _assert_clean(info.value, secret, caplog)
    assert secret not in store.describe() and secret not in repr(store)
    with pytest.raises(StoreError):
        asyncio.run(_get_and_close(store, "x"))
    store.close()


def test_a_malformed_url_never_shows_the_password(caplog: pytest.LogCaptureFixture) -> None:
    from tideflow.stores import MongoStore

    caplog.set_level(logging.DEBUG)
    for bad in (
        "mongodb://me:pw-xyz-secret@127.0.0.1:notaport/db",
        "mongodb://me:pw-xyz-secret@h/db?nope=1",
    ):
        with pytest.raises(StoreError) as info:
            MongoStore(bad)
        _assert_clean(info.value, "pw-xyz-secret", caplog)
        assert "127.0.0.1" in str(info.value) or "@h/db" in str(info.value)


def test_a_wrong_password_is_a_store_error_naming_host_and_port(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, pymongo_leaks: None
) -> None:
    from tideflow.stores import MongoStore

    caplog.set_level(logging.DEBUG)
    with PrivateMongo(tmp_path, auth=True, password="right-pw-123") as server:
        good = MongoStore(server.url + "/app?authSource=admin&directConnection=true", timeout=3)
        assert good.blocking().get("x") is None  # the right password works
        good.close()
        wrong = f"mongodb://tideflow:wrong-pw-456@127.0.0.1:{server.port}/app?authSource=admin&directConnection=true"
        store = MongoStore(wrong, timeout=3)
        t = time.monotonic()
        for call in (
            lambda: store.blocking().get("x"),
            lambda: asyncio.run(_get_and_close(store, "x")),
        ):
            with pytest.raises(StoreError) as info:
                call()
            assert f"127.0.0.1:{server.port}" in str(info.value)
            assert "auth" in str(info.value).lower()
            _assert_clean(info.value, "wrong-pw-456", caplog)
        assert time.monotonic() - t < 10
        assert "wrong-pw-456" not in store.describe() + repr(store)
        store.close()


# --- schema ---------------------------------------------------------------------------------


def _meta(iid: str, now: float = 1_700_000_000.0, status: str = "pending") -> InstanceMeta:
    return InstanceMeta(iid, "wf", "plan", status, 1, now, now, now, None, None, None)


def _commit(iid: str, version: int, records: list[bytes], **kw: Any) -> Commit:
    fields: dict[str, Any] = dict(
        id=iid,
        expected_version=version,
        status="running",
        updated_at=1_700_000_001.0,
        due_at=None,
        header=None,
        records=records,
        signals_seen=0,
        owner=None,
        error=None,
    )
    fields.update(kw)
    return Commit(**fields)


def test_a_newer_schema_is_refused_and_left_alone(url: str, raw: Any) -> None:
    from tideflow.stores import MongoStore

    first = MongoStore(url)
    first.blocking().create(_meta("x"), b"h", [b"r"])
    first.close()
    raw.tideflow_meta.update_one({"_id": "schema"}, {"$set": {"version": 2}})
    before = list(raw.tideflow_instances.find())
    store = MongoStore(url)
    with pytest.raises(StoreError, match="newer tideflow"):
        store.blocking().get("x")
    with pytest.raises(StoreError, match="newer tideflow"):
        asyncio.run(store.create(_meta("y"), b"h", []))
    assert list(raw.tideflow_instances.find()) == before
    assert raw.tideflow_meta.find_one({"_id": "schema"})["version"] == 2
    store.close()


@pytest.mark.parametrize("coll", ["tideflow_instances", "tideflow_log", "tideflow_meta"])
def test_a_foreign_collection_is_refused_and_left_alone(url: str, raw: Any, coll: str) -> None:
    from tideflow.stores import MongoStore

    raw[coll].insert_one({"_id": "someone-else", "x": 1})
    store = MongoStore(url)
    with pytest.raises(StoreError, match="not tideflow's"):
        store.blocking().create(_meta("x"), b"h", [])
    assert sorted(raw.list_collection_names()) == [coll]
    assert list(raw[coll].find()) == [{"_id": "someone-else", "x": 1}]
    store.close()


def test_other_collections_in_the_database_are_left_alone(url: str, raw: Any) -> None:
    from tideflow.stores import MongoStore

    raw.users.insert_one({"_id": 1})
    store = MongoStore(url)
    store.blocking().create(_meta("x"), b"h", [])
    store.drop()
    assert raw.list_collection_names() == ["users"]
    store.close()


# --- the embedded log and its spill ---------------------------------------------------------


def test_the_log_moves_out_in_chunks_and_reads_back_whole(
    url: str, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tideflow.stores import MongoStore, mongo

    monkeypatch.setattr(mongo, "SPILL_ENTRIES", 4)
    store = MongoStore(url, lease_clock="engine")
    twin = store.blocking()
    recs = [b"c0", b"c1"]
    twin.create(_meta("x"), b"h", recs)
    for v in range(1, 16):
        new = [f"v{v}a".encode(), f"v{v}b".encode()] if v % 2 else [f"v{v}".encode()]
        twin.commit(_commit("x", v, new))
        recs += new
    assert twin.load("x").records == recs
    assert asyncio.run(store.load("x")).records == recs
    doc = raw.tideflow_instances.find_one({"_id": "x"})
    assert doc["cut"] > 0 and len(doc["log"]) <= 6 and doc["lc"] == len(doc["log"])
    assert raw.tideflow_log.count_documents({}) >= 3
    by_version = [(1, b"c0"), (1, b"c1")]
    for v in range(1, 16):
        by_version += (
            [(v + 1, f"v{v}a".encode()), (v + 1, f"v{v}b".encode())]
            if v % 2
            else [(v + 1, f"v{v}".encode())]
        )
    for after in range(0, 18):
        assert twin.records("x", after) == [r for ver, r in by_version if ver > after], after
    assert twin.delete("x") is True
    assert raw.tideflow_log.count_documents({}) == 0
    store.close()


def test_a_spill_interrupted_after_its_chunk_is_finished_by_the_next(
    url: str, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tideflow.stores import MongoStore, mongo

    store = MongoStore(url, lease_clock="engine")
    twin = store.blocking()
    twin.create(_meta("x"), b"h", [b"a"])
    twin.commit(_commit("x", 1, [b"b", b"c"]))
    doc = raw.tideflow_instances.find_one({"_id": "x"})
    # a mover that wrote its chunk (of versions 1..2) and died before pulling the entries
    raw.tideflow_log.insert_one(
        {
            "_id": {"s": doc["seq"], "f": 1},
            "s": doc["seq"],
            "f": 1,
            "t": 2,
            "vs": [1, 2, 2],
            "rs": [b"a", b"b", b"c"],
        }
    )
    twin.commit(_commit("x", 2, [b"d"]))
    assert twin.load("x").records == [b"a", b"b", b"c", b"d"]  # the orphan chunk is not read twice
    monkeypatch.setattr(mongo, "SPILL_ENTRIES", 1)
    twin.commit(_commit("x", 3, [b"e"]))  # this spill finds the chunk and moves exactly its entries
    doc = raw.tideflow_instances.find_one({"_id": "x"})
    assert doc["cut"] == 2 and [e["r"] for e in doc["log"]] == [b"d", b"e"]
    assert twin.load("x").records == [b"a", b"b", b"c", b"d", b"e"]
    store.close()


def test_purge_removes_the_chunks_too(url: str, raw: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tideflow.stores import MongoStore, mongo

    monkeypatch.setattr(mongo, "SPILL_ENTRIES", 1)
    store = MongoStore(url, lease_clock="engine")
    twin = store.blocking()
    twin.create(_meta("x"), b"h", [b"a", b"b"])
    twin.commit(_commit("x", 1, [b"c"], status="completed", updated_at=1_700_000_002.0))
    assert raw.tideflow_log.count_documents({}) >= 1
    assert twin.purge(1_800_000_000.0, []) == 1
    assert raw.tideflow_log.count_documents({}) == 0
    store.close()


# --- round trips ----------------------------------------------------------------------------


class _Commands:
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: Any) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


def test_one_round_trip_per_commit_create_and_load_on_both_faces(url: str) -> None:
    from pymongo import monitoring

    from tideflow.stores import MongoStore

    class Listener(_Commands, monitoring.CommandListener):
        pass

    sync_l, async_l = Listener(), Listener()
    sync_client = pymongo.MongoClient(url, event_listeners=[sync_l])

    async def main() -> None:
        client = pymongo.AsyncMongoClient(url, event_listeners=[async_l])
        store = MongoStore(
            client=client,
            sync_client=sync_client,
            database=urlsplit(url).path[1:],
            lease_clock="engine",
        )
        twin = store.blocking()
        for face, listener, call in (("sync", sync_l, None), ("async", async_l, True)):

            async def do(method: str, *args: Any, call: Any = call) -> Any:
                if call:
                    return await getattr(store, method)(*args)
                return getattr(twin, method)(*args)

            await do("get", "warm-up")  # the schema check, once
            iid = f"i-{face}"
            for method, args in (
                ("create", (_meta(iid), b"h", [b"r1"])),
                ("commit", (_commit(iid, 1, [b"r2"]),)),
                ("commit", (_commit(iid, 2, [b"r3"], status="suspended"),)),
                ("load", (iid,)),
                ("send_signal", (iid, b"s", 1_700_000_003.0)),
            ):
                listener.names.clear()
                await do(method, *args)
                assert len(listener.names) == 1, (face, method, listener.names)
        assert store.blocking().load("i-async").records == [b"r1", b"r2", b"r3"]
        store.drop()
        store.close()  # the clients are ours: the store leaves them open
        assert sync_client.admin.command("ping")["ok"] == 1
        await client.close()

    asyncio.run(main())
    sync_client.close()


# --- faults ---------------------------------------------------------------------------------


def _drive(engine: Engine, wf: Workflow, x: int, iid: str, driver: str) -> Any:
    if driver == "sync":
        return engine.run(wf, x, id=iid)
    return asyncio.run(engine.run_async(wf, x, id=iid))


def _finish(url: str, iid: str) -> Engine:
    """A new engine (as a restarted process) on the same data that completes the instance."""
    engine = Engine(store=url)
    engine.register(CHAIN)
    if engine.get(iid).status is not Status.COMPLETED:
        engine.resume(iid)
    return engine


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_server_restart_mid_run_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path, driver: str
) -> None:
    with PrivateMongo(tmp_path) as server:
        url = server.url + "/app?directConnection=true"
        engine = Engine(store=url)
        hooks[2] = server.restart  # while the second step runs: every connection is dropped
        try:
            run = _drive(engine, CHAIN, 1, "r1", driver)
            assert run.output == 4
        except StoreError as exc:
            assert engine.store.describe() in str(exc)
        _close(engine)
        other = _finish(url, "r1")
        assert other.get("r1").output == 4
        _once_each(other, "r1")
        _close(other)


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_server_down_past_the_timeout_is_a_store_error_then_recover_completes(
    tmp_path: Path, driver: str
) -> None:
    from tideflow.stores import MongoStore

    with PrivateMongo(tmp_path) as server:
        url = server.url + "/app?directConnection=true"
        engine = Engine(store=MongoStore(url, timeout=2))
        hooks[2] = server.stop  # the commit of the second step finds no server
        t = time.monotonic()
        with pytest.raises(StoreError) as info:
            _drive(engine, CHAIN, 1, "d1", driver)
        assert time.monotonic() - t < 15
        assert f"127.0.0.1:{server.port}" in str(info.value)
        _close(engine)
        server.start()
        other = Engine(store=url)
        other.register(CHAIN)
        assert [r.output for r in other.recover()] == [4]
        done = _completed_steps(other, "d1")
        assert len(done) == 3 and len(set(done)) == 3
        _close(other)


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_connections_cut_mid_run_reconnect(driver: str) -> None:
    base = server_url("mongo")
    with Proxy("127.0.0.1", urlsplit(base).port or 27017) as proxy:
        url = _with_db(proxy.url(base), unique_name(), "directConnection=true")
        engine = Engine(store=url)
        hooks[2] = proxy.cut
        try:
            run = _drive(engine, CHAIN, 1, "c1", driver)
            assert run.output == 4
        except StoreError as exc:
            assert engine.store.describe() in str(exc)
        other = _finish(url, "c1")
        _once_each(other, "c1")
        assert proxy.connections >= 2
        other.store.drop()
        _close(engine)
        _close(other)


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("retry_writes", ["true", "false"])
def test_a_lost_acknowledgement_is_decided_by_reading_back(driver: str, retry_writes: str) -> None:
    base = server_url("mongo")
    with Proxy("127.0.0.1", urlsplit(base).port or 27017) as proxy:
        url = _with_db(
            proxy.url(base), unique_name(), f"directConnection=true&retryWrites={retry_writes}"
        )
        engine = Engine(store=url)
        # while the second step runs: the reply to the next findAndModify (its commit) is lost
        hooks[2] = lambda: proxy.drop_reply_to(b"findAndModify")
        run = _drive(engine, CHAIN, 1, "l1", driver)
        assert proxy.swallowed == 1
        assert (run.status, run.output) == (Status.COMPLETED, 4)
        assert len(executed) == 3
        _once_each(engine, "l1")
        assert engine.store.blocking().get("l1").meta.version == 4  # create + 3 commits, none twice
        engine.store.drop()
        _close(engine)


def test_a_refusing_server_is_a_store_error_within_the_timeout(pymongo_leaks: None) -> None:
    from tideflow.stores import MongoStore

    base = server_url("mongo")
    with Proxy("127.0.0.1", urlsplit(base).port or 27017) as proxy:
        store = MongoStore(
            _with_db(proxy.url(base), unique_name(), "directConnection=true"), timeout=2
        )
        assert store.blocking().get("x") is None
        proxy.refuse(True)
        proxy.cut()
        for call in (
            lambda: store.blocking().get("x"),
            lambda: asyncio.run(_get_and_close(store, "x")),
        ):
            t = time.monotonic()
            with pytest.raises(StoreError) as info:
                call()
            assert time.monotonic() - t < 8
            assert f"127.0.0.1:{proxy.port}" in str(info.value)
        proxy.refuse(False)
        assert store.blocking().get("x") is None  # back: the next call reconnects
        store.drop()
        store.close()


# --- the server's lease clock ---------------------------------------------------------------


@pytest.mark.parametrize("face", ["sync", "async"])
def test_leases_are_judged_by_the_servers_clock(url: str, face: str) -> None:
    from tideflow.stores import MongoStore

    store = MongoStore(url)  # lease_clock="server", the default
    twin = store.blocking()
    loop = asyncio.new_event_loop()

    def call(method: str, *args: Any) -> Any:
        if face == "sync":
            return getattr(twin, method)(*args)
        return loop.run_until_complete(getattr(store, method)(*args))

    try:
        now = time.time()
        call("create", _meta("x", now), b"h", [])
        bogus = 0.0  # the engine's clock says 1970: a store on the server clock ignores it
        got = call("claim", Claim("w1", 5, 0.5, bogus, ["plan"]))
        assert [m.id for m in got] == ["x"] and got[0].owner == "w1"
        assert abs(got[0].lease_until - (time.time() + 0.5)) < 5  # the server's time, not 0.5
        assert call("claim", Claim("w2", 5, 0.5, 1e12, ["plan"])) == []  # live by the server
        until = call("extend", "x", "w1", 0.5, bogus)
        assert until >= got[0].lease_until
        call("commit", _commit("x", 1, [b"r"], owner="w1", updated_at=bogus))  # live: accepted
        time.sleep(0.8)
        with pytest.raises(LeaseLost):
            call(
                "commit", _commit("x", 2, [b"r2"], owner="w1", updated_at=now)
            )  # live by the engine clock
        with pytest.raises(LeaseLost):
            call("extend", "x", "w1", 0.5, bogus)
        assert [m.id for m in call("due", now + 10, None)] in (["x"], [])  # not hidden by a lease
        again = call("claim", Claim("w2", 5, 0.5, bogus, ["plan"]))
        assert [m.owner for m in again] == ["w2"]
        with pytest.raises(LeaseLost) as info:
            call("commit", _commit("x", 2, [b"r2"], owner=None, updated_at=bogus))
        assert info.value.holder == "w2"
    finally:
        store.drop()
        loop.run_until_complete(store.aclose())
        loop.close()
