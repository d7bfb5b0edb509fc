"""RedisStore on a real Redis: the URL form end to end, URL options, bad input, the key layout's
versioning, faults (connections killed, the server restarted, a lost acknowledgement, the server
unreachable or frozen), leases on the server's clock, and one round trip per step boundary.

The shared test server (``tests.servers``) serves everything that disturbs no one; whatever kills
or restarts a server runs on a private one (``tests.servers.private_redis``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import server_url, unique_name
from tests.servers.private_redis import PASSWORD as PRIVATE_PASSWORD
from tests.servers.private_redis import PrivateRedis
from tests.servers.proxy import Proxy
from tideflow import Context, Engine, Status, StoreError, Workflow, step
from tideflow.errors import LeaseLost
from tideflow.stores.base import Claim, Commit, InstanceMeta

SHARED_PASSWORD = "tideflow-test-pw"


@pytest.fixture
def url() -> str:
    return server_url("redis")


@pytest.fixture
def prefix(url: str) -> Iterator[str]:
    from tideflow.stores import RedisStore

    name = unique_name("rt")
    yield name
    store = RedisStore(url, prefix=name)
    store.drop()
    store.close()


def with_prefix(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={name}"


# --- the workflows ---------------------------------------------------------------------------

ran: Counter[str] = Counter()
hook: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    ran.clear()
    hook.clear()


@step
def one(ctx: Context, n: int) -> int:
    ran["one"] += 1
    return n + 1


@step
def two(ctx: Context, n: int) -> int:
    ran["two"] += 1
    if "during_two" in hook:
        hook.pop("during_two")()
    return n * 10


@step
def three(ctx: Context, n: int) -> int:
    ran["three"] += 1
    return n + 3


CHAIN = Workflow("chain").then(one).then(two).then(three)  # 1 -> 2 -> 20 -> 23


@dataclass
class Decision:
    ok: bool


@step
def decide(ctx: Context, d: Decision) -> str:
    return "yes" if d.ok else "no"


ASK = Workflow("ask").then(one).wait_signal("decision", type=Decision).then(decide)


def steps_once(engine: Engine, iid: str) -> None:
    names = Counter(e.step for e in engine.steps(iid) if e.status == "completed")
    assert names == Counter({"one": 1, "two": 1, "three": 1}), names


# --- the URL form, end to end ----------------------------------------------------------------


def test_engine_from_the_url_runs_sync_and_async_and_a_new_store_reads_it(
    url: str, prefix: str
) -> None:
    engine = Engine(store=with_prefix(url, prefix))
    assert engine.store.describe().endswith(f"/0?prefix={prefix}")
    run = engine.run(CHAIN, 1, id="s1")
    assert (run.status, run.output) == (Status.COMPLETED, 23)
    run = asyncio.run(engine.run_async(CHAIN, 2, id="a1"))
    assert (run.status, run.output) == (Status.COMPLETED, 33)
    other = Engine(store=with_prefix(url, prefix))  # another process would do this
    other.register(CHAIN)
    assert other.get("s1").output == 23 and other.get("a1").output == 33
    steps_once(other, "s1")
    steps_once(other, "a1")
    engine.store.close()
    other.store.close()


def test_signals_through_the_url_store(url: str, prefix: str) -> None:
    engine = Engine(store=with_prefix(url, prefix))
    run = engine.run(ASK, 1, id="q1")
    assert run.status is Status.SUSPENDED
    peer = Engine(store=with_prefix(url, prefix))
    peer.register(ASK)
    peer.signal("q1", "decision", {"ok": True})
    assert [r.id for r in peer.run_due()] == ["q1"]
    assert peer.get("q1").output == "yes"
    engine.store.close()
    peer.store.close()


def test_two_prefixes_on_one_server_are_independent(url: str, prefix: str) -> None:
    from tideflow.stores import RedisStore

    other_name = unique_name("rt")
    a = Engine(store=RedisStore(url, prefix=prefix))
    b_store = RedisStore(url, prefix=other_name)
    try:
        b = Engine(store=b_store)
        a.run(CHAIN, 1, id="same")
        b.run(CHAIN, 5, id="same")
        assert a.get("same").output == 23 and b.get("same").output == 63
        assert [r.id for r in a.list()] == ["same"]
        b_store.blocking().delete("same")
        assert a.get("same").output == 23
    finally:
        b_store.drop()
        b_store.close()
        a.store.close()


def test_a_hash_tag_prefix_keeps_every_key_in_one_slot(url: str) -> None:
    import redis
    from redis.crc import key_slot

    from tideflow.stores import RedisStore

    name = "{" + unique_name("tag") + "}"
    store = RedisStore(url, prefix=name)
    try:
        Engine(store=store).run(ASK, 1, id="t1")
        raw = redis.Redis.from_url(url)
        keys = list(raw.scan_iter(match=name.replace("{", "\\{").replace("}", "\\}") + ":*"))
        assert len(keys) >= 5 and all(k.startswith(name.encode() + b":") for k in keys)
        assert len({key_slot(k) for k in keys}) == 1
        raw.close()
    finally:
        store.drop()
        store.close()


def test_importing_the_module_imports_no_driver() -> None:
    code = (
        "import sys, tideflow, tideflow.stores.redis\n"
        "assert 'redis' not in sys.modules, 'redis was imported'\n"
        "from tideflow.stores import RedisStore\n"
        "assert 'redis' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- URLs and options --------------------------------------------------------------------------


def test_url_options(url: str) -> None:
    from tideflow.stores import RedisStore

    s = RedisStore(url + "?prefix=abc&timeout=2.5&lease_clock=engine")
    assert (s.prefix, s.lease_clock, s._timeout) == ("abc", "engine", 2.5)
    assert s.describe() == f"redis://127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}/0?prefix=abc"
    d = RedisStore("redis://localhost")
    assert (d.prefix, d.lease_clock, d._timeout, d._db) == ("tideflow", "server", 10.0, 0)
    assert d.describe() == "redis://localhost:6379/0?prefix=tideflow"
    assert RedisStore("redis://h:1/3", prefix="x").describe() == "redis://h:1/3?prefix=x"
    assert RedisStore("redis://[::1]:7/0").describe() == "redis://[::1]:7/0?prefix=tideflow"
    assert RedisStore("redis://h/0?prefix=%7Btf%7D").prefix == "{tf}"
    t = RedisStore("rediss://:pw@h:6380/0?ssl_cert_reqs=none&ssl_ca_certs=/tmp/ca.pem")
    assert t._ssl == {"ssl": True, "ssl_cert_reqs": "none", "ssl_ca_certs": "/tmp/ca.pem"}
    assert t.describe() == "rediss://h:6380/0?prefix=tideflow"
    assert "pw" not in repr(t)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("redis://h:1/0?prefx=a", "unknown URL option 'prefx'"),
        ("redis://h:1/zero", "must be a number"),
        ("redis://h:99999999/0", "malformed URL"),
        ("redis:///0", "names no host"),
        ("redis://h:1/0#frag", "fragment"),
        ("http://h:1/0", "redis:// or rediss://"),
        ("redis://h:1/0?lease_clock=wall", "lease_clock must be"),
        ("redis://h:1/0?timeout=soon", "timeout must be a number"),
        ("redis://h:1/0?timeout=0", "timeout must be positive"),
        ("redis://h:1/0?ssl_cert_reqs=none", "need a rediss:// URL"),
        ("rediss://h:1/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be"),
    ],
)
def test_bad_urls(given: str, message: str) -> None:
    from tideflow.stores import RedisStore

    with pytest.raises(StoreError, match=message):
        RedisStore(given)
    if given.startswith("redis"):
        with pytest.raises(StoreError, match=message):
            Engine(store=given)


def test_an_option_given_twice_differently_is_refused() -> None:
    from tideflow.stores import RedisStore

    with pytest.raises(StoreError, match="given twice"):
        RedisStore("redis://h:1/0?prefix=a", prefix="b")
    assert RedisStore("redis://h:1/0?prefix=a", prefix="a").prefix == "a"


# --- bad input: a StoreError within seconds, naming host and port, never the password ---------


def _no_secret(err: BaseException, secret: str, caplog: pytest.LogCaptureFixture) -> None:
    chain: BaseException | None = err
    while chain is not None:
        assert secret not in str(chain) and secret not in repr(chain)
        chain = chain.__cause__ or chain.__context__
    for rec in caplog.records:
        assert secret not in rec.getMessage()


def _fails_fast(url: str, needle: str, caplog: pytest.LogCaptureFixture, secret: str) -> None:
    from tideflow.stores import RedisStore

    caplog.set_level(logging.DEBUG)
    store = RedisStore(url, prefix=unique_name("rt"), timeout=3)
    assert secret not in store.describe() and secret not in repr(store)
    for call in (
        lambda: store.blocking().get("x"),
        lambda: asyncio.run(store.get("x")),
        lambda: Engine(store=store).run(CHAIN, 1, id="x"),
    ):
        start = time.monotonic()
        with pytest.raises(StoreError) as info:
            call()
        assert time.monotonic() - start < 8
        text = str(info.value)
        assert needle in text, text
        _no_secret(info.value, secret, caplog)
    store.close()


def test_a_wrong_password(url: str, caplog: pytest.LogCaptureFixture) -> None:
    bad = url.replace(SHARED_PASSWORD, "not-the-password-123")
    assert bad != url
    hostport = bad.split("@")[1].split("/")[0]
    _fails_fast(bad, hostport, caplog, "not-the-password-123")


def test_a_database_that_does_not_exist(url: str, caplog: pytest.LogCaptureFixture) -> None:
    bad = url.rsplit("/", 1)[0] + "/99999"
    hostport = bad.split("@")[1].split("/")[0]
    _fails_fast(bad, hostport, caplog, SHARED_PASSWORD)


def test_an_unreachable_port(caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _fails_fast(
        f"redis://:sekrit-pw-9@127.0.0.1:{port}/0", f"127.0.0.1:{port}", caplog, "sekrit-pw-9"
    )


def test_a_malformed_url_never_shows_its_password() -> None:
    from tideflow.stores import RedisStore

    for bad in ("redis://:hunter2secret@h:port/0", "redis://:hunter2secret@h:1/0?x=1"):
        with pytest.raises(StoreError) as info:
            RedisStore(bad)
        assert "hunter2secret" not in str(info.value)


# --- the key layout's version and marker ---------------------------------------------------------


def test_a_newer_layout_is_refused_and_left_alone(url: str, prefix: str) -> None:
    import redis

    from tideflow.stores import RedisStore

    raw = redis.Redis.from_url(url)
    raw.hset(f"{prefix}:meta", mapping={"schema": "2", "marker": "tideflow"})
    store = RedisStore(url, prefix=prefix)
    with pytest.raises(StoreError, match="newer tideflow"):
        store.blocking().get("x")
    with pytest.raises(StoreError, match="newer tideflow"):
        asyncio.run(store.get("x"))
    assert raw.hgetall(f"{prefix}:meta") == {b"schema": b"2", b"marker": b"tideflow"}
    assert raw.keys(f"{prefix}:*") == [f"{prefix}:meta".encode()]
    store.close()
    raw.close()


@pytest.mark.parametrize("foreign", ["meta-string", "meta-hash", "instance"])
def test_foreign_keys_are_refused_and_left_alone(url: str, prefix: str, foreign: str) -> None:
    import redis

    from tideflow.stores import RedisStore

    raw = redis.Redis.from_url(url)
    if foreign == "meta-string":
        raw.set(f"{prefix}:meta", "someone else's")
    elif foreign == "meta-hash":
        raw.hset(f"{prefix}:meta", "owner", "another app")
    else:
        raw.set(f"{prefix}:i:order-1", "not an instance")
    before = sorted(raw.keys(f"{prefix}:*"))
    store = RedisStore(url, prefix=prefix)
    with pytest.raises(StoreError, match="not tideflow's"):
        Engine(store=store).run(CHAIN, 1, id="x")
    assert sorted(raw.keys(f"{prefix}:*")) == before
    store.close()
    raw.delete(*before)
    raw.close()


def test_drop_works_on_an_empty_prefix_and_spares_other_keys(url: str, prefix: str) -> None:
    import redis

    from tideflow.stores import RedisStore

    store = RedisStore(url, prefix=prefix)
    store.drop()  # nothing there yet
    Engine(store=store).run(CHAIN, 1, id="x")
    raw = redis.Redis.from_url(url)
    raw.set(f"{prefix}:other:thing", "kept")
    store.drop()
    assert raw.keys(f"{prefix}:*") == [f"{prefix}:other:thing".encode()]
    raw.delete(f"{prefix}:other:thing")
    raw.close()
    store.close()


# --- faults --------------------------------------------------------------------------------------


@pytest.fixture
def private(tmp_path: Path) -> Iterator[PrivateRedis]:
    server_url("redis")  # skips without the driver, like the rest
    with PrivateRedis(tmp_path / "redis") as server:
        yield server


def _kill_store_connections(server: PrivateRedis) -> None:
    c = server.client()
    c.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    c.close()


def _finish(store: Any, iid: str, run: Any) -> Engine:
    """After a fault: the run completed, or a new engine recovers it; every step once."""
    fresh = Engine(store=store)
    fresh.register(CHAIN)
    if run is None or run.status is not Status.COMPLETED:
        fresh.resume(iid)
    got = fresh.get(iid)
    assert (got.status, got.output) == (Status.COMPLETED, 23)
    steps_once(fresh, iid)
    return fresh


@pytest.mark.parametrize("face", ["sync", "async"])
def test_connections_killed_by_the_server_mid_run(private: PrivateRedis, face: str) -> None:
    from tideflow.stores import RedisStore

    store = RedisStore(private.url, timeout=3)
    hook["during_two"] = lambda: _kill_store_connections(private)
    engine = Engine(store=store)
    run = None
    try:
        if face == "sync":
            run = engine.run(CHAIN, 1, id="k1")
        else:
            run = asyncio.run(engine.run_async(CHAIN, 1, id="k1"))
    except StoreError as err:
        assert store.describe() in str(err)
    _finish(store, "k1", run)
    assert ran["two"] == 1 and ran["three"] == 1
    store.close()


@pytest.mark.parametrize("kill", [False, True], ids=["shutdown", "sigkill"])
def test_the_server_restarted_mid_run(private: PrivateRedis, kill: bool) -> None:
    from tideflow.stores import RedisStore

    store = RedisStore(private.url, timeout=3)
    hook["during_two"] = lambda: private.restart(kill=kill)
    engine = Engine(store=store)
    run = None
    try:
        run = engine.run(CHAIN, 1, id="r1")
    except StoreError as err:
        assert store.describe() in str(err)
    _finish(store, "r1", run)
    assert ran["one"] == 1  # committed before the restart: never again
    store.close()


def test_the_server_down_then_back(private: PrivateRedis) -> None:
    from tideflow.stores import RedisStore

    store = RedisStore(private.url, timeout=2)
    hook["during_two"] = lambda: private.stop()
    engine = Engine(store=store)
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        engine.run(CHAIN, 1, id="d1")
    assert time.monotonic() - start < 10
    assert f"127.0.0.1:{private.port}" in str(info.value)
    assert PRIVATE_PASSWORD not in str(info.value)
    private.start()
    fresh = Engine(store=store)
    fresh.register(CHAIN)
    (again,) = fresh.recover()
    assert (again.status, again.output) == (Status.COMPLETED, 23)
    steps_once(fresh, "d1")
    assert ran["one"] == 1
    store.close()


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_lost_acknowledgement_is_decided_by_reading_back(
    private: PrivateRedis, face: str
) -> None:
    from tideflow.stores import RedisStore
    from tideflow.stores.redis import _SHA

    with Proxy("127.0.0.1", private.port) as proxy:
        store = RedisStore(proxy.url(private.url), timeout=3)
        # the commit after step two applies, and its reply never arrives
        hook["during_two"] = lambda: proxy.drop_reply_to(_SHA["commit"].encode())
        engine = Engine(store=store)
        if face == "sync":
            run = engine.run(CHAIN, 1, id="l1")
        else:
            run = asyncio.run(engine.run_async(CHAIN, 1, id="l1"))
        assert proxy.swallowed == 1
        assert (run.status, run.output) == (Status.COMPLETED, 23)
        steps_once(engine, "l1")
        assert ran == Counter({"one": 1, "two": 1, "three": 1})
        store.close()


def test_a_lost_acknowledgement_of_a_signal_appends_it_once(private: PrivateRedis) -> None:
    from tideflow.stores import RedisStore
    from tideflow.stores.redis import _SHA

    with Proxy("127.0.0.1", private.port) as proxy:
        store = RedisStore(proxy.url(private.url), timeout=3)
        twin = store.blocking()
        twin.create(_meta("g1"), b"h", [])
        proxy.drop_reply_to(_SHA["signal"].encode())
        assert twin.send_signal("g1", b"sig", 5.0) == 1
        assert proxy.swallowed == 1
        assert twin.signals("g1", 0) == [(1, b"sig")]
        store.close()


def test_a_lost_acknowledgement_of_a_create_returns_none(private: PrivateRedis) -> None:
    from tideflow.stores import RedisStore
    from tideflow.stores.redis import _SHA

    with Proxy("127.0.0.1", private.port) as proxy:
        store = RedisStore(proxy.url(private.url), timeout=3)
        twin = store.blocking()
        twin.get("warm")  # the key space check, before arming
        proxy.drop_reply_to(_SHA["create"].encode())
        assert twin.create(_meta("c1"), b"h", [b"r"]) is None
        assert proxy.swallowed == 1
        assert twin.records("c1", 0) == [b"r"]
        store.close()


def test_a_lost_acknowledgement_of_a_claim_still_hands_the_instance_over(
    private: PrivateRedis,
) -> None:
    from tideflow.stores import RedisStore
    from tideflow.stores.redis import _SHA

    with Proxy("127.0.0.1", private.port) as proxy:
        store = RedisStore(proxy.url(private.url), timeout=3, lease_clock="engine")
        twin = store.blocking()
        twin.create(_meta("m1"), b"h", [])
        proxy.drop_reply_to(_SHA["claim"].encode())
        (got,) = twin.claim(Claim("w", 5, 30.0, time.time(), ["p"]))
        assert proxy.swallowed == 1
        assert got.id == "m1" and got.owner == "w"
        assert twin.claim(Claim("w", 5, 30.0, time.time(), ["p"])) == []  # a new claim: nothing
        store.close()


@pytest.mark.parametrize("how", ["refuse", "cut"])
def test_an_unreachable_server_is_a_store_error_within_the_timeout(
    private: PrivateRedis, how: str
) -> None:
    from tideflow.stores import RedisStore

    with Proxy("127.0.0.1", private.port) as proxy:
        store = RedisStore(proxy.url(private.url), timeout=2)
        twin = store.blocking()
        twin.create(_meta("u1"), b"h", [])
        proxy.refuse(True)
        proxy.cut()
        for call in (lambda: twin.get("u1"), lambda: asyncio.run(store.get("u1"))):
            start = time.monotonic()
            with pytest.raises(StoreError, match=f"127.0.0.1:{proxy.port}"):
                call()
            assert time.monotonic() - start < 5
        proxy.refuse(False)
        assert twin.get("u1") is not None  # a new connection once it is back
        store.close()


def test_a_frozen_server_times_out(private: PrivateRedis) -> None:
    from tideflow.stores import RedisStore

    store = RedisStore(private.url, timeout=1)
    twin = store.blocking()
    twin.create(_meta("f1"), b"h", [])
    assert private.proc is not None
    os.kill(private.proc.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(StoreError, match="timed out after 1 s"):
            twin.get("f1")
        assert time.monotonic() - start < 4
        start = time.monotonic()
        with pytest.raises(StoreError, match="timed out"):
            asyncio.run(store.get("f1"))
        assert time.monotonic() - start < 4
    finally:
        os.kill(private.proc.pid, signal.SIGCONT)
    assert twin.get("f1") is not None
    store.close()


# --- leases on the server's clock ----------------------------------------------------------------


def _meta(iid: str, status: str = "pending", plan: str = "p") -> InstanceMeta:
    now = time.time()
    return InstanceMeta(iid, "wf", plan, status, 1, now, now, now, None, None, None)


def test_leases_on_the_server_clock(url: str, prefix: str) -> None:
    from tideflow.stores import RedisStore

    store = RedisStore(url, prefix=prefix)  # lease_clock="server", the default
    twin = store.blocking()
    twin.create(_meta("w1"), b"h", [])
    # the engine's clocks are far off (0 and 1e12): the server's decides
    (got,) = twin.claim(Claim("a", 1, 0.5, 0.0, ["p"]))
    assert got.owner == "a" and abs(got.lease_until - (time.time() + 0.5)) < 5
    assert twin.claim(Claim("b", 1, 0.5, 1e12, ["p"])) == []
    assert twin.due(1e12, None) == []  # hidden while the lease is live
    until = twin.extend("w1", "a", 0.5, 0.0)
    assert until >= got.lease_until
    twin.commit(Commit("w1", 1, "running", 0.0, None, None, [b"r"], 0, "a", None))
    time.sleep(0.7)
    with pytest.raises(LeaseLost):
        twin.extend("w1", "a", 0.5, 0.0)
    with pytest.raises(LeaseLost):
        twin.commit(Commit("w1", 2, "running", 0.0, None, None, [], 0, "a", None))
    (taken,) = asyncio.run(store.claim(Claim("b", 1, 30, 0.0, ["p"])))  # the holder is gone
    assert taken.owner == "b"
    with pytest.raises(LeaseLost) as info:
        twin.commit(Commit("w1", 2, "running", 1e12, None, None, [], 0, None, None))
    assert info.value.holder == "b"
    assert twin.release("w1", "b") is True
    store.close()


# --- one round trip per step boundary --------------------------------------------------------------


#: What the scripts call inside (Redis counts those in commandstats too).
_INSIDE = {
    "del",
    "exists",
    "hdel",
    "hget",
    "hincrby",
    "hmget",
    "hset",
    "incr",
    "llen",
    "lrange",
    "publish",
    "rpush",
    "time",
    "type",
    "zadd",
    "zrem",
    "zrange",
    "zrangebyscore",
}


def test_commit_create_load_signal_are_one_evalsha_each(private: PrivateRedis) -> None:
    from tideflow.stores import RedisStore

    store = RedisStore(private.url)
    twin = store.blocking()
    raw = private.client()
    c = Commit("o1", 1, "running", time.time(), None, None, [b"b", b"c"], 0, None, None)
    # once through each (the scripts get loaded), then counted on a second instance
    twin.create(_meta("o0"), b"h", [b"a"])
    twin.commit(c._replace(id="o0"))
    twin.load("o0")
    twin.send_signal("o0", b"s", time.time())

    def calls(fn: Any) -> int:
        raw.execute_command("CONFIG", "RESETSTAT")
        fn()
        stats = {
            k.removeprefix("cmdstat_"): v["calls"] for k, v in raw.info("commandstats").items()
        }
        stats.pop("info", None)
        stats.pop("config|resetstat", None)
        assert set(stats) - {"evalsha"} <= _INSIDE, stats
        return int(stats.get("evalsha", 0))

    assert calls(lambda: twin.create(_meta("o1"), b"h", [b"a"])) == 1
    assert calls(lambda: twin.commit(c)) == 1
    assert calls(lambda: twin.load("o1")) == 1
    assert calls(lambda: twin.send_signal("o1", b"s", time.time())) == 1

    async def counted() -> None:
        await store.get("o1")
        raw.execute_command("CONFIG", "RESETSTAT")
        await store.commit(c._replace(expected_version=2))

    asyncio.run(counted())
    stats = {k.removeprefix("cmdstat_"): v["calls"] for k, v in raw.info("commandstats").items()}
    stats.pop("info", None)
    stats.pop("config|resetstat", None)
    assert stats.pop("evalsha") == 1 and set(stats) <= _INSIDE, stats
    raw.close()
    store.close()


def test_a_user_client_is_used_and_not_closed(url: str, prefix: str) -> None:
    import redis
    import redis.asyncio

    from tideflow.stores import RedisStore

    sync = redis.Redis.from_url(url)

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(url)
        store = RedisStore(client=client, sync_client=sync, prefix=prefix)
        assert store.describe().startswith("redis://127.0.0.1:")
        await store.create(_meta("u1"), b"h", [])
        assert store.blocking().get("u1") is not None
        await store.aclose()
        assert await client.ping()
        await client.aclose()

    asyncio.run(main())
    assert sync.ping()
    sync.close()

    async def derived() -> (
        None
    ):  # no sync_client: the twin opens its own from the client's settings
        client = redis.asyncio.Redis.from_url(url)
        store = RedisStore(client=client, prefix=prefix)
        assert store.blocking().get("u1") is not None
        store.close()
        await client.aclose()

    asyncio.run(derived())
    with pytest.raises(StoreError, match="decode"):
        RedisStore(client=redis.asyncio.Redis(decode_responses=True))


# --- the indexes agree with the instances -----------------------------------------------------------


def _slot(h: dict[bytes, bytes]) -> tuple[str, float] | None:
    st = h[b"st"].decode()
    if st in ("completed", "failed", "cancelled"):
        return "fin", float(h[b"uat"])
    if b"own" in h:
        return "lease", float(h.get(b"until", b"-inf"))
    if st == "pending":
        return "pend", float(h.get(b"due", h[b"uat"]))
    if st == "suspended" and b"due" in h:
        return "susp", float(h[b"due"])
    return None


@pytest.mark.parametrize("seed", [7, 11, 23])
def test_the_indexes_and_counts_agree_with_the_instances(url: str, prefix: str, seed: int) -> None:
    import random

    import redis

    from tideflow.stores import RedisStore

    store = RedisStore(url, prefix=prefix, lease_clock="engine")
    twin = store.blocking()
    rnd = random.Random(seed)
    t0 = 1_000.0
    versions: dict[str, int] = {}
    for i in range(40):
        iid = f"x{i}"
        twin.create(
            _meta(iid, rnd.choice(["pending", "running", "suspended"]))._replace(
                created_at=t0, updated_at=t0, due_at=rnd.choice([None, t0 + rnd.random() * 10])
            ),
            b"h",
            [],
        )
        versions[iid] = 1
    for n in range(300):
        iid = f"x{rnd.randrange(40)}"
        what = rnd.choice(["commit", "claim", "signal", "release", "extend", "delete"])
        now = t0 + n * 0.1
        try:
            if what == "commit":
                st = rnd.choice(["running", "suspended", "pending", "completed", "failed"])
                due = rnd.choice([None, now + rnd.random() * 5])
                owner = rnd.choice([None, "w1", "w2"])
                twin.commit(Commit(iid, versions[iid], st, now, due, None, [b"r"], 0, owner, None))
                versions[iid] += 1
            elif what == "claim":
                twin.claim(Claim(rnd.choice(["w1", "w2"]), 3, rnd.choice([0.5, 5.0]), now, ["p"]))
            elif what == "signal":
                twin.send_signal(iid, b"s", now)
            elif what == "release":
                twin.release(iid, rnd.choice(["w1", "w2"]))
            elif what == "extend":
                twin.extend(iid, rnd.choice(["w1", "w2"]), 2.0, now)
            else:
                twin.delete(iid)
        except Exception as exc:  # a rejected call (LeaseLost, SignalError, ...) changes nothing
            assert type(exc).__name__ in (
                "LeaseLost",
                "StoreConflict",
                "SignalError",
                "UnknownInstance",
            ), exc
    twin.purge(t0 + 15, ["failed"])
    raw = redis.Redis.from_url(url)
    want: dict[str, dict[bytes, float]] = {"pend": {}, "susp": {}, "lease": {}, "fin": {}}
    counts: Counter[bytes] = Counter()
    for key in raw.scan_iter(match=f"{prefix}:i:*"):
        h = raw.hgetall(key)
        iid = key.split(b":i:", 1)[1]
        slot = _slot(h)
        if slot is not None:
            want[slot[0]][iid] = slot[1]
        counts[h[b"wf"] + b"\0" + h[b"st"]] += 1
    for name, members in want.items():
        got = dict(raw.zrange(f"{prefix}:ix:{name}", 0, -1, withscores=True))
        assert got == members, name
    assert {k: int(v) for k, v in raw.hgetall(f"{prefix}:counts").items()} == dict(counts)
    assert raw.zcard(f"{prefix}:created") == sum(counts.values())
    raw.close()
    store.close()


# --- several processes on one prefix -----------------------------------------------------------------

_CHILD = """
import asyncio, sys
from tideflow import Engine
from tests.stores.test_redis import ASK
url, mode = sys.argv[1], sys.argv[2]
engine = Engine(store=url)
engine.register(ASK)
if mode == "sync":
    for i in range(5):
        assert engine.run(ASK, i, id=f"s{i}").status.value == "suspended"
elif mode == "async":  # waits for the signals, beside the other process's drivers
    async def main():
        runs = [engine.run_async(ASK, i, id=f"a{i}") for i in range(5)]
        return await asyncio.gather(*runs, return_exceptions=True)
    for got in asyncio.run(main()):
        print(type(got).__name__, getattr(got, "status", got))
else:
    print(len(engine.run_due()))
"""


def test_two_processes_and_signals_from_a_third(url: str, prefix: str) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'python'}"}
    where = with_prefix(url, prefix)

    def child(mode: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", _CHILD, where, mode],
            env=env,
            cwd=root,
            text=True,
            stdout=subprocess.PIPE,
        )

    waiting = child("async")
    sync = child("sync")
    assert sync.communicate(timeout=120)[1] is None and sync.returncode == 0
    engine = Engine(store=where)
    engine.register(ASK)
    ids = [f"{k}{i}" for k in "sa" for i in range(5)]
    deadline = time.monotonic() + 60
    while len({r.id for r in engine.list()} & set(ids)) < 10:
        assert time.monotonic() < deadline, "the async process did not create its instances"
        time.sleep(0.05)
    for iid in ids:  # the third process
        engine.signal(iid, "decision", {"ok": iid.endswith(("0", "2", "4"))})
    drivers = [child("due"), child("due")]
    for p in drivers:
        p.communicate(timeout=120)
        assert p.returncode == 0
    out, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, out
    # each of its runs ended completed, or as a stale writer rejected by the store
    assert all(
        line.split()[0] in ("Run", "StoreConflict", "LeaseLost") for line in out.splitlines()
    )
    for iid in ids:
        run = engine.get(iid)
        assert run.status is Status.COMPLETED, (iid, run.status)
        assert run.output == ("yes" if iid.endswith(("0", "2", "4")) else "no")
        done = Counter(e.step for e in engine.steps(iid) if e.status == "completed")
        assert done == Counter({"one": 1, "decide": 1}), (iid, done)
    engine.store.close()


def test_store_objects_opening_one_new_prefix_at_once_all_succeed() -> None:
    """Regression: the key-space check of one store saw the meta key another store had just
    written (between its EXISTS and its SCAN) and refused the prefix as not tideflow's. Both
    faces of one store, and several stores, open a new prefix together."""
    import threading

    from tideflow.stores import RedisStore

    url = server_url("redis")
    for _ in range(15):
        prefix = unique_name()
        stores = [RedisStore(url, prefix=prefix) for _ in range(3)]
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(stores) + 1)

        def sync_open(store: Any, barrier: threading.Barrier, errors: list[BaseException]) -> None:
            barrier.wait()
            try:
                store.blocking().counts()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=sync_open, args=(s, barrier, errors)) for s in stores]
        for t in threads:
            t.start()

        async def async_open(store: Any, barrier: threading.Barrier) -> None:
            barrier.wait()
            await store.counts()  # the async face of a store whose twin opens meanwhile

        try:
            asyncio.run(async_open(stores[0], barrier))
        except BaseException as exc:
            errors.append(exc)
        for t in threads:
            t.join()
        try:
            assert errors == []
        finally:
            stores[0].drop()
            for s in stores:
                s.close()
