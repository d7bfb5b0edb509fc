"""The PostgreSQL store on a real server: the engine end to end from its URL, URL options, bad
input (never leaking the password), the schema's version and marker, faults (the store's
connection killed, the server restarted, a lost acknowledgement, an unreachable server) and
leases on the server's clock. The protocol suite runs in ``tests/conformance`` (``-k postgres``).

The shared server comes from ``TIDEFLOW_TEST_POSTGRES_URL``; the tests that restart a server use
a private one (``tests/servers/private_postgres.py``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.servers import server_url, unique_name
from tests.servers.private_postgres import PrivatePostgres, free_port
from tests.servers.proxy import Proxy
from tideflow import Context, Engine, Status, StoreError, Workflow, step
from tideflow.errors import LeaseLost
from tideflow.stores.base import Claim, InstanceMeta

asyncpg = pytest.importorskip("asyncpg")
from tideflow.stores.postgres import PostgresStore  # noqa: E402


@pytest.fixture
def url() -> str:
    return server_url("postgres")


@pytest.fixture
def schema(url: str) -> Iterator[str]:
    """A fresh schema name, dropped afterwards (whatever a test left in it)."""
    name = unique_name("pgt")
    yield name
    _sql(url, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _sql(url: str, query: str, *args: Any) -> Any:
    """Runs one statement on its own connection (as another client would) and returns the rows."""

    async def go() -> Any:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(asyncio.run(go())))  # works inside a loop too
    t.start()
    t.join()
    return out[0]


def _hp(url: str) -> tuple[str, int]:
    p = urlsplit(url)
    assert p.hostname and p.port
    return p.hostname, p.port


def _pw(url: str) -> str:
    pw = urlsplit(url).password
    assert pw
    return pw


def _with(url: str, **query: str) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{k}={v}" for k, v in query.items())


def _kill(url: str, app: str) -> int:
    """Terminates every backend of ``application_name`` ``app``; how many."""
    rows = _sql(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        app,
    )
    return len(rows)


# -- steps and workflows --------------------------------------------------------------------------

RAN: Counter[str] = Counter()
HOOKS: dict[str, Any] = {}


@step
def one(ctx: Context, n: int) -> int:
    RAN["one"] += 1
    return n + 1


@step
def two(ctx: Context, n: int) -> int:
    RAN["two"] += 1
    hook = HOOKS.pop("two", None)
    if hook is not None:
        hook()
    return n * 10


@step
def three(ctx: Context, n: int) -> int:
    RAN["three"] += 1
    return n + 3


CHAIN = Workflow("pg-chain").then(one).then(two).then(three)


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    RAN.clear()
    HOOKS.clear()
    yield
    HOOKS.clear()


def _steps(engine: Engine, iid: str) -> Counter[str]:
    return Counter(e.step for e in engine.steps(iid) if e.status == "completed")


# -- the engine end to end ------------------------------------------------------------------------


def test_engine_from_the_url_runs_sync_and_async_and_another_store_reads_it(
    url: str, schema: str
) -> None:
    engine = Engine(store=_with(url, schema=schema))
    assert isinstance(engine.store, PostgresStore) or "postgres" in repr(engine.store).lower()
    assert engine.run(CHAIN, 1, id="s1").output == 23
    assert asyncio.run(engine.run_async(CHAIN, 2, id="a1")).output == 33
    other = Engine(store=PostgresStore(url, schema=schema))  # as another process would
    assert other.get("s1").output == 23 and other.get("a1").status is Status.COMPLETED
    assert _steps(other, "s1") == Counter(one=1, two=1, three=1)
    rows = _sql(url, f'SELECT count(*) FROM "{schema}".instances')
    assert rows[0][0] == 2


def test_signals_reach_an_instance_through_the_store(url: str, schema: str) -> None:
    from tideflow import wait_signal

    wf = Workflow("pg-sig").then(wait_signal("go")).then(one)
    engine = Engine(store=_with(url, schema=schema))
    run = engine.run(wf, None, id="w1")
    assert run.status is Status.SUSPENDED
    Engine(store=PostgresStore(url, schema=schema)).signal("w1", "go", 41)
    assert engine.resume("w1").output == 42


def test_two_schemas_in_one_database_are_independent(url: str, schema: str) -> None:
    second = unique_name("pgt")
    try:
        a = Engine(store=_with(url, schema=schema))
        b = Engine(store=PostgresStore(url, schema=second))
        a.run(CHAIN, 1, id="same")
        assert b.list() == [] or len(b.list()) == 0
        b.run(CHAIN, 5, id="same")
        assert a.get("same").output == 23 and b.get("same").output == 63
    finally:
        _sql(url, f'DROP SCHEMA IF EXISTS "{second}" CASCADE')


def test_blocking_twin_is_one_object_and_describe_names_no_password(url: str, schema: str) -> None:
    store = PostgresStore(url, schema=schema)
    try:
        assert store.blocking() is store.blocking()
        parts = urlsplit(url)
        assert (
            store.describe()
            == f"postgresql://{parts.hostname}:{parts.port}{parts.path}?schema={schema}"
        )
        assert parts.password and parts.password not in repr(store) + repr(store.blocking())
    finally:
        store.close()


def test_two_stores_opening_one_new_schema_at_once(url: str, schema: str) -> None:
    stores = [PostgresStore(url, schema=schema) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def first_use(s: PostgresStore) -> None:
        barrier.wait()
        try:
            s.blocking().counts()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=first_use, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert errors == []


# -- URL options and bad input ----------------------------------------------------------------------


def test_url_options(url: str, schema: str) -> None:
    s = PostgresStore(_with(url, schema=schema, timeout="3", lease_clock="engine",
                            application_name="tf_opts", sslmode="disable"))  # fmt: skip
    try:
        assert (s.schema, s.timeout, s.lease_clock) == (schema, 3.0, "engine")
        s.blocking().counts()
        assert _sql(url, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'tf_opts'")
    finally:
        s.close()
    assert PostgresStore(url.replace("postgresql://", "postgres://")).schema == "tideflow"
    assert PostgresStore(_with(url, schema=schema), schema=schema).schema == schema


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("?colour=blue", "unknown URL option 'colour'"),
        ("?schema=a&schema=b", "given twice"),
        ("?schema=1bad", "must be an identifier"),
        ("?schema=pg_x", "reserved"),
        ("?timeout=-1", "positive"),
        ("?timeout=soon", "number of seconds"),
        ("?lease_clock=wall", "'server' or 'engine'"),
    ],
)
def test_bad_url_options(url: str, bad: str, match: str) -> None:
    with pytest.raises(StoreError, match=match) as err:
        PostgresStore(url + bad)
    assert _pw(url) not in str(err.value)


def test_schema_given_twice_differently_is_refused(url: str) -> None:
    with pytest.raises(StoreError, match="schema"):
        PostgresStore(_with(url, schema="a"), schema="b")
    with pytest.raises(StoreError, match="identifier"):
        PostgresStore(url, schema='x"; DROP TABLE y; --')


@pytest.mark.parametrize(
    "bad",
    [
        "postgresql://u:sekret-pw@127.0.0.1:notaport/db",
        "mysql://u:sekret-pw@127.0.0.1:5432/db",
        "postgresql://u:sekret-pw@/db",
        "postgresql://u:sekret-pw@127.0.0.1:5432/db#frag",
        "postgresql://u:sekret-pw@127.0.0.1:5432/a/b",
    ],
)
def test_malformed_urls(bad: str) -> None:
    with pytest.raises(StoreError) as err:
        PostgresStore(bad)
    assert "sekret-pw" not in str(err.value) + repr(err.value)


def _assert_clean(err: BaseException, password: str, store: PostgresStore, caplog: Any) -> None:
    e: BaseException | None = err
    while e is not None:
        assert password not in str(e) and password not in repr(e)
        e = e.__cause__ or e.__context__
    assert password not in store.describe() + repr(store)
    for rec in caplog.records:
        assert password not in rec.getMessage()


def _bad(url: str, **change: Any) -> str:
    p = urlsplit(url)
    user = change.get("user", p.username)
    pw = change.get("password", p.password)
    port = change.get("port", p.port)
    db = change.get("db", p.path.lstrip("/"))
    return f"postgresql://{user}:{pw}@{p.hostname}:{port}/{db}"


@pytest.mark.parametrize("case", ["password", "database", "port"])
def test_bad_connections_fail_fast_naming_host_and_port_never_the_password(
    url: str, case: str, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    p = urlsplit(url)
    secret = "wrong-pw-" + uuid.uuid4().hex[:6]
    if case == "password":
        target, want, port = _bad(url, password=secret), "credentials", p.port
    elif case == "database":
        pw = _pw(url)
        target, want, port = (
            _bad(url, db="no_such_db_" + uuid.uuid4().hex[:6]),
            "does not exist",
            p.port,
        )
        secret = pw  # the right password, which must not show either
    else:
        port = free_port()
        target, want = _bad(url, password=secret, port=port), "connect"
    store = PostgresStore(target, schema=unique_name("pgt"), timeout=5)
    for face in ("sync", "async"):
        start = time.monotonic()
        with pytest.raises(StoreError) as err:
            if face == "sync":
                store.blocking().get("x")
            else:
                asyncio.run(store.get("x"))
        assert time.monotonic() - start < 4
        msg = str(err.value)
        assert want in msg and f"{p.hostname}:{port}" in msg, msg
        _assert_clean(err.value, secret, store, caplog)
    store.close()


# -- the schema: version and marker ---------------------------------------------------------------


def test_a_newer_schema_version_is_refused_and_left_alone(url: str, schema: str) -> None:
    s = PostgresStore(url, schema=schema)
    s.blocking().counts()  # creates it
    s.close()
    _sql(url, f"UPDATE \"{schema}\".meta SET value = '7' WHERE key = 'schema_version'")
    s2 = PostgresStore(url, schema=schema)
    with pytest.raises(StoreError, match="newer tideflow"):
        s2.blocking().counts()
    with pytest.raises(StoreError, match="newer tideflow"):
        asyncio.run(s2.counts())
    with pytest.raises(StoreError, match="newer tideflow"):
        Engine(store=s2).run(CHAIN, 1, id="x")
    with pytest.raises(StoreError, match="newer tideflow"):
        s2.drop()  # not even the drop touches it
    assert (
        _sql(url, f"SELECT value FROM \"{schema}\".meta WHERE key = 'schema_version'")[0][0] == "7"
    )
    s2.close()


@pytest.mark.parametrize("what", ["table", "meta"])
def test_a_foreign_schema_is_refused_and_left_alone(url: str, schema: str, what: str) -> None:
    _sql(url, f'CREATE SCHEMA "{schema}"')
    if what == "table":
        _sql(url, f'CREATE TABLE "{schema}".instances (x int)')
    else:
        _sql(url, f'CREATE TABLE "{schema}".meta (key text, value text)')
        _sql(url, f"INSERT INTO \"{schema}\".meta VALUES ('application', 'someone-else')")
    s = PostgresStore(url, schema=schema)
    with pytest.raises(StoreError, match="not a tideflow store"):
        s.blocking().counts()
    with pytest.raises(StoreError, match="not a tideflow store"):
        s.drop()
    tables = _sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    assert [r[0] for r in tables] == (["instances"] if what == "table" else ["meta"])
    s.close()


def test_an_empty_existing_schema_is_taken_and_drop_of_nothing_is_fine(
    url: str, schema: str
) -> None:
    s = PostgresStore(url, schema=schema)
    s.drop()  # nothing there yet
    _sql(url, f'CREATE SCHEMA "{schema}"')
    assert s.blocking().counts() == []
    s.drop()
    assert not _sql(url, "SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
    assert s.blocking().counts() == []  # created again on next use
    s.close()


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_the_server_kills_the_connection_mid_run(url: str, schema: str, driver: str) -> None:
    app = unique_name("tfkill")
    store = PostgresStore(_with(url, schema=schema, application_name=app))
    engine = Engine(store=store)
    killed: list[int] = []
    HOOKS["two"] = lambda: killed.append(_kill(url, app))
    iid = f"k-{driver}"
    try:
        if driver == "sync":
            run = engine.run(CHAIN, 1, id=iid)
        else:
            run = asyncio.run(engine.run_async(CHAIN, 1, id=iid))
    except StoreError as e:  # allowed: the engine says which store; recovery completes it
        assert store.describe() in str(e)
        run = engine.resume(iid)
    assert killed and killed[0] >= 1
    assert run.status is Status.COMPLETED and run.output == 23
    assert _steps(engine, iid) == Counter(one=1, two=1, three=1)
    assert Counter(one=1, two=1, three=1) == RAN
    store.close()


@pytest.fixture(scope="module")
def private() -> Iterator[PrivatePostgres]:
    pytest.importorskip("asyncpg")
    with PrivatePostgres() as pg:
        yield pg


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_the_server_restarts_mid_run(private: PrivatePostgres, driver: str) -> None:
    store = PostgresStore(private.url, schema=unique_name("pgt"), timeout=20)
    engine = Engine(store=store)
    HOOKS["two"] = private.restart
    iid = f"r-{driver}"
    try:
        if driver == "sync":
            run = engine.run(CHAIN, 1, id=iid)
        else:
            run = asyncio.run(engine.run_async(CHAIN, 1, id=iid))
    except StoreError as e:
        assert store.describe() in str(e)
        run = engine.resume(iid)
    assert run.status is Status.COMPLETED and run.output == 23
    assert _steps(engine, iid) == Counter(one=1, two=1, three=1)
    assert Counter(one=1, two=1, three=1) == RAN
    store.drop()
    store.close()


def test_the_server_down_then_back_recover_completes(private: PrivatePostgres) -> None:
    store = PostgresStore(private.url, schema=unique_name("pgt"), timeout=1)
    engine = Engine(store=store)
    HOOKS["two"] = private.stop
    start = time.monotonic()
    with pytest.raises(StoreError) as err:
        engine.run(CHAIN, 1, id="down")
    assert time.monotonic() - start < 8
    assert store.describe() in str(err.value)
    private.start()
    runs = engine.recover()
    assert [r.output for r in runs] == [23]
    assert _steps(engine, "down") == Counter(one=1, two=1, three=1)
    store.drop()
    store.close()


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_lost_acknowledgement_is_decided_by_reading_back(
    url: str, schema: str, driver: str
) -> None:
    with Proxy(*_hp(url)) as proxy:
        store = PostgresStore(proxy.url(url), schema=schema)
        engine = Engine(store=store)
        marker = "marker-" + uuid.uuid4().hex

        @step(name="marked")
        def marked(ctx: Context, n: int) -> str:
            proxy.drop_reply_to(marker.encode())  # the commit carrying this output
            return marker

        wf = Workflow("pg-ack").then(one).then(marked).then(three_s)
        iid = f"ack-{driver}"
        if driver == "sync":
            run = engine.run(wf, 1, id=iid)
        else:
            run = asyncio.run(engine.run_async(wf, 1, id=iid))
        assert proxy.swallowed == 1
        assert run.status is Status.COMPLETED and run.output == marker + "!"
        assert _steps(engine, iid) == Counter(one=1, marked=1, bang=1)
        versions = _sql(
            url, f'SELECT version FROM "{schema}".log WHERE id = $1 ORDER BY version', iid
        )
        assert len(versions) == len({r[0] for r in versions})
        store.close()


@step(name="bang")
def three_s(ctx: Context, s: str) -> str:
    return s + "!"


@pytest.mark.parametrize("fault", ["refuse", "cut"])
def test_an_unreachable_server_is_a_store_error_within_the_timeout(
    url: str, schema: str, fault: str
) -> None:
    with Proxy(*_hp(url)) as proxy:
        store = PostgresStore(proxy.url(url), schema=schema, timeout=2)
        engine = Engine(store=store)
        engine.run(CHAIN, 1, id="before")  # connected once: a refusal now is retried until 2 s
        proxy.refuse(True)
        proxy.cut()
        for call in (lambda: engine.get("before"), lambda: asyncio.run(store.get("before"))):
            start = time.monotonic()
            with pytest.raises(StoreError) as err:
                call()
            assert time.monotonic() - start < 4.5
            assert f"127.0.0.1:{proxy.port}" in str(err.value)
            assert _pw(url) not in str(err.value)
        proxy.refuse(False)
        assert engine.get("before").output == 23  # and back
        store.close()


# -- leases on the server's clock -----------------------------------------------------------------


def test_leases_are_judged_by_the_server_clock(url: str, schema: str) -> None:
    store = PostgresStore(url, schema=schema)  # lease_clock="server" is the default
    s = store.blocking()
    try:
        meta = InstanceMeta("l1", "wf", "plan", "pending", 1, 0.0, 0.0, 0.0, None, None, None)
        assert s.create(meta, b"h", []) is None
        far_future = time.time() + 10_000  # the engine's clock is wrong: the server's decides
        got = s.claim(Claim("w1", 1, 0.5, far_future, ["plan"]))
        assert [m.id for m in got] == ["l1"]
        assert abs((got[0].lease_until or 0.0) - (time.time() + 0.5)) < 0.4
        assert s.claim(Claim("w2", 1, 0.5, far_future, ["plan"])) == []  # still live by the server
        until = s.extend("l1", "w1", 0.5, 0.0)  # "now" ignored
        assert until > time.time()
        with pytest.raises(LeaseLost):
            s.extend("l1", "w2", 0.5, far_future)
        time.sleep(0.7)
        with pytest.raises(LeaseLost):
            s.extend("l1", "w1", 0.5, 0.0)  # ran out on the server's clock
        assert [m.owner for m in s.claim(Claim("w2", 1, 0.5, 0.0, ["plan"]))] == ["w2"]
        assert s.due(far_future, None) == []  # leased (live on the server's clock)
        time.sleep(0.7)
        assert [m.id for m in s.due(far_future, None)] == ["l1"]
    finally:
        store.close()


# -- round trips, pool=, sync calls inside a running loop ----------------------------------------

_READY = b"Z\x00\x00\x00\x05"  # ReadyForQuery: the server ends every round trip with one


class CountingProxy(Proxy):
    """A proxy that counts the server's ReadyForQuery messages (the round trips)."""

    trips: int = 0

    def _down(self, link: Any) -> None:  # Proxy._down, counting
        try:
            while True:
                data = link.server.recv(65536)
                if not data:
                    break
                self.trips += data.count(_READY)
                link.client.sendall(data)
        except OSError:
            pass
        link.close()


def _meta(iid: str, now: float = 1.0) -> InstanceMeta:
    return InstanceMeta(iid, "wf", "plan", "pending", 1, now, now, now, None, None, None)


@pytest.mark.parametrize("face", ["sync", "async"])
def test_create_commit_and_load_are_one_round_trip_each(url: str, schema: str, face: str) -> None:
    from tideflow.stores.base import Commit

    proxy = CountingProxy(*_hp(url))
    with proxy:
        store = PostgresStore(proxy.url(url), schema=schema, lease_clock="engine")
        loop = asyncio.new_event_loop()

        def call(method: str, *args: Any) -> Any:
            if face == "sync":
                return getattr(store.blocking(), method)(*args)
            return loop.run_until_complete(getattr(store, method)(*args))

        def commit(iid: str, v: int) -> Commit:
            return Commit(iid, v, "running", 2.0, None, None, [b"r\x00", b""], 0, None, None)

        try:
            call("create", _meta("warm"), b"h", [b"a"])  # the schema, the prepared statements
            call("commit", commit("warm", 1))
            call("load", "warm")
            for op, args in [
                ("create", (_meta("one"), b"h", [b"x"])),
                ("commit", (commit("one", 1),)),
                ("commit", (commit("one", 2),)),
                ("load", ("one",)),
                ("get", ("one",)),
            ]:
                before = proxy.trips
                call(op, *args)
                time.sleep(0.05)  # the proxy's thread has counted by now
                assert proxy.trips - before == 1, op
            loaded = call("load", "one")
            assert loaded.records == [b"x", b"r\x00", b"", b"r\x00", b""]
        finally:
            loop.run_until_complete(store.aclose()) if face == "async" else store.close()
            loop.close()


def test_an_existing_pool_is_used_and_left_open(url: str, schema: str) -> None:
    async def main() -> None:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            store = PostgresStore(pool=pool, schema=schema)
            engine = Engine(store=store)
            assert (await engine.run_async(CHAIN, 1, id="p1")).output == 23
            assert engine.get("p1").output == 23  # the twin: its own connections, same data
            await store.aclose()
            assert await pool.fetchval("SELECT 1") == 1  # still open
        finally:
            await pool.close()

    asyncio.run(main())


def test_a_sync_call_inside_a_running_loop_works(url: str, schema: str) -> None:
    store = PostgresStore(url, schema=schema)
    engine = Engine(store=store)
    engine.run(CHAIN, 1, id="x")

    async def main() -> int:
        return int(engine.get("x").output)  # from a thread whose loop is running: a helper thread

    assert asyncio.run(main()) == 23
    store.close()


_CRASH_MODULE = """
import os, signal, sys
from tideflow import Context, Engine, Workflow, step

@step
def first(ctx: Context, n: int) -> int:
    with open(os.environ["EFFECTS"], "a") as f:
        f.write("first\\n")
    return n + 1

@step
def second(ctx: Context, n: int) -> int:
    if os.environ.get("KILL") == "1":
        os.kill(os.getpid(), signal.SIGKILL)  # the process dies mid-step
    with open(os.environ["EFFECTS"], "a") as f:
        f.write("second\\n")
    return n * 10

FLOW = Workflow("pg-crash").then(first).then(second)

if __name__ == "__main__":
    Engine(store=sys.argv[1]).run(FLOW, 1, id="crash")
"""


def test_a_process_killed_mid_run_is_recovered_by_another(
    url: str, schema: str, tmp_path: Any, monkeypatch: Any
) -> None:
    import importlib
    import os
    import subprocess
    import sys

    (tmp_path / "pg_crash_flow.py").write_text(_CRASH_MODULE)
    effects = tmp_path / "effects.log"
    env = {**os.environ, "EFFECTS": str(effects), "KILL": "1"}
    target = _with(url, schema=schema)
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "pg_crash_flow.py"), target], env=env, timeout=60
    )
    assert proc.returncode == -9
    assert effects.read_text() == "first\n"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("EFFECTS", str(effects))
    monkeypatch.delenv("KILL", raising=False)
    flow = importlib.import_module("pg_crash_flow").FLOW
    engine = Engine(store=target)
    engine.register(flow)
    runs = engine.recover()
    assert [(r.id, r.output) for r in runs] == [("crash", 20)]
    assert effects.read_text() == "first\nsecond\n"  # the finished step did not run again
    assert _steps(engine, "crash") == Counter(first=1, second=1)


def test_an_operation_blocked_on_the_server_times_out(url: str, schema: str) -> None:
    from tideflow.stores.base import Commit

    store = PostgresStore(url, schema=schema, timeout=1, lease_clock="engine")
    b = store.blocking()
    b.create(_meta("locked"), b"h", [])
    holder: dict[str, Any] = {}
    ready, done = threading.Event(), threading.Event()

    def hold() -> None:  # another client holds the row lock in an open transaction
        async def go() -> None:
            conn = await asyncpg.connect(url)
            tr = conn.transaction()
            await tr.start()
            await conn.execute(
                f'SELECT 1 FROM "{schema}".instances WHERE id = $1 FOR UPDATE', "locked"
            )
            ready.set()
            await asyncio.get_running_loop().run_in_executor(None, done.wait, 10)
            await tr.rollback()
            await conn.close()

        holder["t"] = asyncio.run(go())

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert ready.wait(10)
        start = time.monotonic()
        with pytest.raises(StoreError, match="timed out after 1 s") as err:
            b.commit(Commit("locked", 1, "running", 2.0, None, None, [], 0, None, None))
        assert time.monotonic() - start < 3
        assert store.describe() in str(err.value)
    finally:
        done.set()
        t.join()
    got = b.get("locked")
    assert got is not None and got.meta.version == 1  # the timed-out commit did not apply
    b.commit(Commit("locked", 1, "running", 2.0, None, None, [], 0, None, None))  # and it works
    store.close()


def test_a_missing_driver_names_the_extra(monkeypatch: Any) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(StoreError, match=r"tideflow\[postgres\]"):
        PostgresStore("postgresql://u:p@127.0.0.1:5432/db")
