"""The stores' notifications (``Watchable.watch``) on PostgreSQL (LISTEN/NOTIFY), Redis
(pub/sub) and MongoDB (a change stream): each kind of news reaches every watcher with the right
id, nothing else does, news coalesces between calls, a watcher survives its listener connection
being killed server-side (PostgreSQL, Redis), and an idle watch does not spin.

Everything runs on the shared test servers: the killed connections are the watcher's own (found
by a unique ``application_name`` on PostgreSQL, by the client name on Redis), so no other test
is disturbed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.servers import server_url
from tideflow.errors import SignalError
from tideflow.stores import parse_store
from tideflow.stores.base import Claim, Commit, InstanceMeta, StoreConflict, Watchable

#: The stores with ``watch``, and those whose listener connection a test kills server-side
#: (pymongo resumes a change stream by itself: see ``docs/stores.md``).
KINDS = ["postgres", "redis", "mongo"]
PUSHED = ["postgres", "redis"]
#: How long a test waits for news that must come (it comes in milliseconds; this bounds a
#: broken implementation, it is not a timed assertion).
SOON = 5.0
#: How long a test listens for news that must NOT come.
QUIET = 0.3

every_store = pytest.mark.parametrize("server", KINDS, indirect=True)
pushed_stores = pytest.mark.parametrize("server", PUSHED, indirect=True)


def _meta(iid: str, status: str = "pending", due: float | None = None) -> InstanceMeta:
    now = time.time()
    return InstanceMeta(iid, "wf", "plan", status, 1, now, now, due, None, None, None)


def _commit(
    iid: str, version: int, status: str, due: float | None = None, owner: str | None = None
) -> Commit:
    return Commit(iid, version, status, time.time(), due, None, [b"r"], 0, owner, None)


def _run(server: str, body: Callable[..., Awaitable[None]], n: int = 2) -> None:
    """Runs ``body(writer, watcher, ...)`` on ``n`` fresh store objects over the test's
    namespace, closing them afterwards."""

    async def go() -> None:
        stores: list[Any] = [parse_store(server) for _ in range(n)]
        try:
            for s in stores[1:]:
                assert isinstance(s, Watchable)
            await body(*stores)
        finally:
            for s in stores:
                await s.aclose()

    asyncio.run(go())


async def _hear(store: Any, want: set[str]) -> set[str]:
    """What ``store.watch`` reports until ``want`` was all heard (or ``SOON`` passes)."""
    heard: set[str] = set()
    deadline = time.monotonic() + SOON
    while not want <= heard and time.monotonic() < deadline:
        heard.update(await store.watch(deadline - time.monotonic()))
    return heard


@every_store
def test_each_kind_of_news_is_reported_with_its_id(server: str) -> None:
    async def body(w: Any, watcher: Any) -> None:
        await watcher.watch(0)
        # create (a new instance)
        assert await w.create(_meta("c1"), b"h", []) is None
        assert await watcher.watch(SOON) == ["c1"]
        # a signal
        await w.create(_meta("s1", "suspended"), b"h", [])
        await _hear(watcher, {"s1"})
        await w.send_signal("s1", b"sig", time.time())
        assert await watcher.watch(SOON) == ["s1"]
        # a release
        await w.create(_meta("r1"), b"h", [])
        await _hear(watcher, {"r1"})
        got = await w.claim(Claim("me", 10, 30.0, time.time(), ["plan"]))
        assert {m.id for m in got} == {"c1", "r1", "s1"}  # s1: due since its signal
        assert await watcher.watch(QUIET) == []  # a claim is no news
        assert await w.release("r1", "me") is True
        assert await watcher.watch(SOON) == ["r1"]
        # a commit that finishes the instance
        await w.commit(Commit("c1", 1, "completed", time.time(), None, b"out", [], 0, "me", None))
        assert await watcher.watch(SOON) == ["c1"]
        # a commit that leaves it suspended and due at once (due <= updated_at)
        await w.commit(_commit("s1", 1, "suspended", due=time.time() - 1, owner="me"))
        assert await watcher.watch(SOON) == ["s1"]

    _run(server, body)


@every_store
def test_commits_that_neither_finish_nor_leave_due_report_nothing(server: str) -> None:
    async def body(w: Any, watcher: Any) -> None:
        await w.create(_meta("a"), b"h", [])
        await watcher.watch(0)
        await w.commit(_commit("a", 1, "running"))
        await w.commit(_commit("a", 2, "suspended", due=time.time() + 3600))
        await w.commit(_commit("a", 3, "suspended", due=None))
        assert await watcher.watch(QUIET) == []
        # and the same instance's finishing commit is news again
        await w.commit(_commit("a", 4, "failed"))
        assert await watcher.watch(SOON) == ["a"]

    _run(server, body)


@every_store
def test_failed_writes_report_nothing(server: str) -> None:
    async def body(w: Any, watcher: Any) -> None:
        await w.create(_meta("a"), b"h", [])
        await w.commit(_commit("a", 1, "completed"))
        await watcher.watch(0)
        assert await w.create(_meta("a"), b"h", []) is not None  # it exists: no new instance
        assert await w.release("a", "nobody") is False
        with pytest.raises(SignalError):
            await w.send_signal("a", b"s", time.time())
        with pytest.raises(StoreConflict):  # a stale version: nothing written
            await w.commit(_commit("a", 1, "completed"))
        assert await watcher.watch(QUIET) == []

    _run(server, body)


@every_store
def test_news_before_the_first_call_is_not_reported(server: str) -> None:
    async def body(w: Any, watcher: Any) -> None:
        await w.create(_meta("before"), b"h", [])
        assert await watcher.watch(QUIET) == []  # this call subscribed after the news
        await w.create(_meta("after"), b"h", [])
        assert await watcher.watch(SOON) == ["after"]

    _run(server, body)


@every_store
def test_news_between_calls_coalesces(server: str) -> None:
    async def body(w: Any, watcher: Any) -> None:
        await watcher.watch(0)
        await w.create(_meta("x"), b"h", [])
        await w.create(_meta("y", "suspended"), b"h", [])
        await w.send_signal("x", b"1", time.time())
        await w.send_signal("x", b"2", time.time())
        await w.send_signal("y", b"1", time.time())
        await asyncio.sleep(1.0)  # everything reaches the watcher's connection meanwhile
        got = await watcher.watch(SOON)
        assert sorted(got) == ["x", "y"]  # one call, each id once
        assert await watcher.watch(QUIET) == []  # nothing is left over

    _run(server, body)


@every_store
def test_every_watcher_hears_every_piece_of_news(server: str) -> None:
    async def body(w: Any, one: Any, two: Any) -> None:
        await one.watch(0)
        await two.watch(0)
        await w.create(_meta("both"), b"h", [])
        assert await one.watch(SOON) == ["both"]
        assert await two.watch(SOON) == ["both"]

    _run(server, body, n=3)


@every_store
def test_a_timeout_returns_an_empty_list(server: str) -> None:
    async def body(w: Any, watcher: Any) -> None:
        await watcher.watch(0)
        assert await watcher.watch(0.2) == []
        assert await watcher.watch(0) == []

    _run(server, body)


@every_store
def test_a_bad_timeout_is_refused(server: str) -> None:
    async def body(w: Any, watcher: Any) -> None:
        for bad in (-1, float("nan"), float("inf"), "soon"):
            with pytest.raises(Exception, match="timeout"):
                await watcher.watch(bad)

    _run(server, body)


@every_store
def test_an_idle_watch_costs_no_cpu(server: str) -> None:
    async def body(w: Any, watcher: Any) -> None:
        await watcher.watch(0)
        cpu = time.process_time()
        assert await watcher.watch(2.0) == []
        # a correctness bound ("it does not spin"), not a speed figure
        assert time.process_time() - cpu < 0.2

    _run(server, body)


# --- a listener connection killed server-side ---------------------------------------------------


def _with_option(url: str, key: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


async def _kill_postgres_listener(app: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(server_url("postgres"))
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = $1 AND query LIKE 'LISTEN %'",
            app,
        )
        return sum(1 for r in rows if r[0])
    finally:
        await conn.close()


async def _kill_redis_listener(prefix: str) -> int:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(server_url("redis"))
    try:
        name = f"tideflow-{prefix}"
        mine = [c["id"] for c in await client.client_list(_type="pubsub") if c["name"] == name]
        # CLIENT KILL TYPE pubsub, narrowed to this test's own subscriber (the server is shared)
        return sum([int(await client.client_kill_filter(_id=i, _type="pubsub")) for i in mine])
    finally:
        await client.aclose()


@pushed_stores
def test_a_killed_listener_connection_is_reopened(server: str) -> None:
    query = dict(parse_qsl(urlsplit(server).query))
    if "schema" in query:  # PostgreSQL: this watcher's connections get a name of their own
        app = f"tfwatch_{uuid.uuid4().hex[:8]}"
        watched = _with_option(server, "application_name", app)

        async def kill() -> int:
            return await _kill_postgres_listener(app)
    else:
        watched = server

        async def kill() -> int:
            return await _kill_redis_listener(query["prefix"])

    async def go() -> None:
        w: Any = parse_store(server)
        watcher: Any = parse_store(watched)
        try:
            await watcher.watch(0)
            await w.create(_meta("one"), b"h", [])
            assert await watcher.watch(SOON) == ["one"]
            for round in range(2):  # killed while waiting, then killed between calls
                if round == 0:
                    waiting = asyncio.ensure_future(watcher.watch(SOON))
                    await asyncio.sleep(0.2)
                    assert await kill() == 1
                    assert await waiting == []  # reconnected: news may have been lost
                else:
                    assert await kill() == 1
                    await asyncio.sleep(0.2)
                    assert await watcher.watch(SOON) == []
                await w.create(_meta(f"next{round}"), b"h", [])
                assert await watcher.watch(SOON) == [f"next{round}"]
        finally:
            await watcher.aclose()
            await w.aclose()

    asyncio.run(go())


@every_store
def test_close_ends_a_waiting_watch_and_a_later_call_subscribes_again(server: str) -> None:
    async def body(w: Any, watcher: Any) -> None:
        await watcher.watch(0)
        waiting = asyncio.ensure_future(watcher.watch(3600))
        await asyncio.sleep(0.1)
        # aclose, not close: MongoStore.close() cannot close the running loop's client (a
        # synchronous call), which would then leak when the store reconnects below
        await watcher.aclose()
        # woken by aclose (SOON only bounds a broken implementation that waits the hour)
        assert await asyncio.wait_for(waiting, SOON) == []
        await watcher.watch(0)  # subscribes again
        await w.create(_meta("later"), b"h", [])
        assert await watcher.watch(SOON) == ["later"]

    _run(server, body)


@pushed_stores
def test_errors_name_no_password(server: str) -> None:
    parts = urlsplit(server)
    assert parts.password, "the test servers have passwords"
    # nothing listens on port 1; a short timeout bounds the retries
    dead = _with_option(server.replace(f":{parts.port}", ":1", 1), "timeout", "1")

    async def go() -> None:
        store: Any = parse_store(dead)
        try:
            with pytest.raises(Exception) as err:
                await store.watch(0)
            assert parts.password not in str(err.value)
            assert "watch" in str(err.value)
        finally:
            await store.aclose()

    asyncio.run(go())


async def _connections(server: str, app: str) -> int:
    """How many server connections the watcher named ``app`` (PostgreSQL) or the store of the
    test's prefix (Redis) holds open."""
    query = dict(parse_qsl(urlsplit(server).query))
    if "schema" in query:
        import asyncpg

        conn = await asyncpg.connect(server_url("postgres"))
        try:
            n = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app
            )
            return int(n)
        finally:
            await conn.close()
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(server_url("redis"))
    try:
        name = f"tideflow-{query['prefix']}"
        return sum(1 for c in await client.client_list() if c["name"] == name)
    finally:
        await client.aclose()


@pushed_stores
def test_aclose_leaves_no_task_and_no_connection(server: str) -> None:
    app = f"tfwatch_{uuid.uuid4().hex[:8]}"
    watched = _with_option(server, "application_name", app) if "schema=" in server else server

    async def go() -> None:
        watcher: Any = parse_store(watched)
        before = asyncio.all_tasks()
        await watcher.watch(0)
        assert await watcher.watch(0.1) == []
        assert await _connections(server, app) >= 1
        await watcher.aclose()
        await asyncio.sleep(0.1)  # the server notices the closed sockets
        assert asyncio.all_tasks() == before
        assert await _connections(server, app) == 0

    asyncio.run(go())


@every_store
def test_aclose_leaves_no_task(server: str) -> None:
    async def go() -> None:
        watcher: Any = parse_store(server)
        before = asyncio.all_tasks()
        await watcher.watch(0)
        assert await watcher.watch(0.1) == []
        await watcher.aclose()
        assert asyncio.all_tasks() == before

    asyncio.run(go())
