"""Server-store figures: each server store beside one raw round trip of its own driver.

    eval "$(bash scripts/services.sh env | sed 's/^/export /')"
    .venv/bin/python benchmarks/servers.py [--n 1000] [--mongo-n 100] [--repeat 5] [--fan 1000]
        [--only postgres,redis,mongo] [--json]

(``make bench`` runs it from ``benchmarks/run.py``, which starts the servers itself.) For each of
``PostgresStore``, ``RedisStore`` and ``MongoStore`` whose test server URL is set
(``TIDEFLOW_TEST_POSTGRES_URL``, ``TIDEFLOW_TEST_REDIS_URL``, ``TIDEFLOW_TEST_MONGODB_URL``) and
whose module imports, in one run, the best of ``--repeat`` interleaved rounds of:

* a chain of ``--n`` steps (``Workflow.then(step)`` n times) and a loop of ``--n`` iterations
  (``Workflow.loop``), with ``engine.run`` (sync steps, the store's ``blocking()`` twin) and with
  ``await engine.run_async`` (async steps, the async store, one event loop for the whole run), as
  µs per step: the run's wall time divided by n, so it includes the run's start and finish.
  Connecting and creating the schema happen before any clock (a one-step run on each face);
* one raw round trip of the same driver, n times in a row, as µs per call: asyncpg ``INSERT`` of a
  100-byte ``bytea`` row (awaited on a running loop; and, for the sync comparison, the same INSERT
  through ``loop.run_until_complete`` per call, as the PostgresStore's sync face drives asyncpg;
  beside it, a commit-shaped statement: one row UPDATEd and a log row INSERTed, in one
  statement); redis-py ``EVALSHA`` of a one-``SET`` script (``redis.Redis`` sync,
  ``redis.asyncio`` async; a plain ``SET`` printed beside it); pymongo ``insert_one`` of a
  100-byte document (``MongoClient``, ``AsyncMongoClient``);
* the ratio of the two (target: at most 1.3x);
* on MongoDB the chain and loop have ``--mongo-n`` steps (default 100): the test server,
  SecantusDB, is written in Python and takes milliseconds per write (2 to 80 ms here, with the
  load), so 1,000 steps would take half a minute or more a run;
* round trips per step boundary, counted on separate runs on fresh store objects: the count
  over the n-step run minus the count over a 1-step chain, divided by n - 1 (so the run's fixed
  costs, connecting, the schema check and the monitor's own queries cancel). PostgreSQL: the
  bench database's ``pg_stat_database.xact_commit`` (the store is closed inside the count, which
  makes its backends publish their counters as they exit), the statements asyncpg sent from
  this process (``Connection.execute``/``_execute``/``_executemany`` wrapped for the run, each
  by its text in results.json; ``pg_stat_statements`` calls too when the server preloads it),
  and the server's time in the store's PL/pgSQL functions (``track_functions = 'pl'`` on the
  bench database, ``pg_stat_user_functions``). Redis: the ``EVALSHA``/``EVAL`` calls of ``INFO
  commandstats`` and their ``usec`` (server-wide: another client's commands during the run count
  too, so the smallest of 3 counts; commandstats also counts the commands a script calls, which
  are not round trips) and the requests redis-py wrote from this process (``send_packed_command``:
  a pipeline is one). MongoDB: the commands pymongo started (its command monitoring);
* a 1,000-way fan-out (``.parallel`` of 1,000 async steps that each sleep 1 ms, so they finish
  together, then a step that sums them) under ``run_async``: its wall time and its round trips
  beside those of a 2-step chain of the same shape without the fan-out: equal counts (those
  counted in this process) mean the 1,000 branches were one commit.

Every store runs on a fresh namespace: a new database ``tideflow_bench_<hex>`` created for the
run on PostgreSQL (so its counters see nothing else) with a fresh ``?schema=``, a fresh
``?prefix=`` on Redis, a fresh database on MongoDB; ``store.drop()`` afterwards (and the
PostgreSQL database is dropped). A store whose URL is unset is skipped with a line saying why;
one whose module does not import too, after its driver's raw round trips alone. ``--json``
merges the figures into benchmarks/results.json. Figures: docs/benchmarks.md.

The machine is noisy (2 shared cores): compare the ratios measured within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tideflow import Context, Engine, Workflow, step

N = 1_000
#: SecantusDB (the test MongoDB server, in Python) takes milliseconds per write: a shorter run
MONGO_N = 100
FAN = 1_000
REPEAT = 5
HERE = Path(__file__).resolve().parent
PAYLOAD = bytes(range(100))

#: server -> (the variable holding its URL, the store class in tideflow.stores)
SERVERS = {
    "postgres": ("TIDEFLOW_TEST_POSTGRES_URL", "PostgresStore"),
    "redis": ("TIDEFLOW_TEST_REDIS_URL", "RedisStore"),
    "mongo": ("TIDEFLOW_TEST_MONGODB_URL", "MongoStore"),
}


def hexname(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    extra = "&".join(f"{k}={v}" for k, v in params.items())
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


def with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + path))


# ---------------------------------------------------------------------------------------------
# workflows


def _inc(ctx: Context | None, x: int) -> int:
    return x + 1


async def _ainc(ctx: Context | None, x: int) -> int:
    return x + 1


async def _leaf(ctx: Context | None, x: int) -> int:
    await asyncio.sleep(0.001)
    return x + 1


def _total(ctx: Context | None, xs: Any) -> int:
    return sum(xs)


def chain(fn: Callable[..., Any], name: str, n: int) -> Workflow:
    s = step(name=name)(fn)
    wf = Workflow(name)
    for _ in range(n):
        wf = wf.then(s)
    wf.compile()
    return wf


def loop(fn: Callable[..., Any], name: str, n: int) -> Workflow:
    s = step(name=name)(fn)
    wf = Workflow(name).loop(s, until=lambda x: x >= n, max_iterations=n)
    wf.compile()
    return wf


def fan_out(fan: int) -> tuple[Workflow, Workflow]:
    """The fan-out (fan async branches, then a sum) and a 2-step chain of the same shape."""
    leaf = step(name="leaf")(_leaf)
    total = step(name="total")(_total)
    wf = Workflow("fan").parallel(*[leaf] * fan).then(total)
    wf.compile()
    two = Workflow("fan-shape").then(leaf).then(total)
    two.compile()
    return wf, two


# ---------------------------------------------------------------------------------------------
# one server: its store, its raw round trip, its counters


class Server:
    """What the harness needs of one server; ``open_store`` gives a new store object on the
    run's namespace (the same data each time)."""

    name = ""
    raw_note = ""

    def __init__(self, url: str, cls: type | None) -> None:
        self.url, self.cls = url, cls

    def store_url(self) -> str:
        raise NotImplementedError

    def open_store(self) -> Any:
        from tideflow.stores import parse_store

        store = parse_store(self.store_url())
        assert isinstance(store, self.cls), store
        return store

    def setup(self) -> None: ...

    def teardown(self) -> None: ...

    def raw_sync(self, n: int) -> dict[str, float]:
        """Seconds per call of the sync raw round trip(s); the first key is the baseline."""
        raise NotImplementedError

    async def raw_async(self, n: int) -> dict[str, float]:
        raise NotImplementedError

    @contextlib.contextmanager
    def counting(self) -> Iterator[dict[str, float]]:
        """Counts round trips during the block into the dict (after it ends)."""
        yield {}

    #: the counter that stands for "round trips" (a key of what counting() fills)
    main_counter = ""


def close_store(store: Any, loop: asyncio.AbstractEventLoop | None) -> None:
    aclose = getattr(store, "aclose", None)
    if loop is not None and aclose is not None:
        loop.run_until_complete(aclose())
    close = getattr(store, "close", None)
    if close is not None:
        close()


class Postgres(Server):
    name = "postgres"

    def setup(self) -> None:
        import asyncpg

        self.asyncpg = asyncpg
        self.database = hexname("tideflow_bench")
        self.schema = hexname("tf")
        self.admin_loop = asyncio.new_event_loop()
        self._admin(f'CREATE DATABASE "{self.database}"')
        # the store's statements call PL/pgSQL functions: time them on the server
        self._admin(f"ALTER DATABASE \"{self.database}\" SET track_functions = 'pl'")
        self.db_url = with_path(self.url, self.database)
        self.preloaded = "pg_stat_statements" in str(
            self._admin("SHOW shared_preload_libraries", fetch=True)
        )
        if self.preloaded:
            self._run(self._on_db("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        self.client_counts: Counter[str] = Counter()
        self._patch_asyncpg()

    def _run(self, coro: Any) -> Any:
        return self.admin_loop.run_until_complete(coro)

    def _admin(self, sql: str, fetch: bool = False) -> Any:
        async def go() -> Any:
            conn = await self.asyncpg.connect(self.url)
            try:
                return await (conn.fetchval(sql) if fetch else conn.execute(sql))
            finally:
                await conn.close()

        return self._run(go())

    async def _on_db(self, sql: str, fetch: bool = False) -> Any:
        conn = await self.asyncpg.connect(self.db_url)
        try:
            return await (conn.fetchval(sql) if fetch else conn.execute(sql))
        finally:
            await conn.close()

    def _patch_asyncpg(self) -> None:
        """Counts the statements every asyncpg connection of this process sends (while
        ``self.client_on``): ``execute`` without arguments is one simple query, the rest go
        through ``_execute``/``_executemany``."""
        conn_cls = self.asyncpg.connection.Connection
        counts, owner = self.client_counts, self
        self.client_on = False
        self._saved = {m: getattr(conn_cls, m) for m in ("execute", "_execute", "_executemany")}
        execute, _execute, _executemany = (self._saved[m] for m in self._saved)

        def note(query: object) -> None:
            counts["statements"] += 1
            counts["  " + " ".join(str(query).split())[:60]] += 1

        async def counted_execute(self: Any, query: str, *args: Any, **kw: Any) -> Any:
            if owner.client_on and not args:
                note(query)
            return await execute(self, query, *args, **kw)

        async def counted__execute(self: Any, *args: Any, **kw: Any) -> Any:
            if owner.client_on:
                note(args[0] if args else kw.get("query"))
            return await _execute(self, *args, **kw)

        async def counted__executemany(self: Any, *args: Any, **kw: Any) -> Any:
            if owner.client_on:
                note(args[0] if args else kw.get("query"))
            return await _executemany(self, *args, **kw)

        conn_cls.execute = counted_execute
        conn_cls._execute = counted__execute
        conn_cls._executemany = counted__executemany

    def teardown(self) -> None:
        conn_cls = self.asyncpg.connection.Connection
        for m, fn in self._saved.items():
            setattr(conn_cls, m, fn)
        self._admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        self.admin_loop.close()

    def store_url(self) -> str:
        return with_query(self.db_url, schema=self.schema)

    def _server_counters(self) -> dict[str, float]:
        async def go() -> dict[str, float]:
            conn = await self.asyncpg.connect(self.db_url)
            try:
                row = await conn.fetchrow(
                    "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated "
                    "FROM pg_stat_database WHERE datname = current_database()"
                )
                out = {k: float(v) for k, v in dict(row).items()}
                fn = await conn.fetchrow(
                    "SELECT coalesce(sum(calls), 0) AS calls, coalesce(sum(total_time), 0) AS ms "
                    "FROM pg_stat_user_functions"
                )
                out["function calls"] = float(fn["calls"])
                out["µs in functions"] = float(fn["ms"]) * 1e3
                if self.preloaded:
                    out["pg_stat_statements_calls"] = float(
                        await conn.fetchval(
                            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
                            "JOIN pg_database d ON d.oid = s.dbid "
                            "WHERE d.datname = current_database()"
                        )
                    )
                return out
            finally:
                await conn.close()

        return self._run(go())

    main_counter = "xact_commit"

    @contextlib.contextmanager
    def counting(self) -> Iterator[dict[str, float]]:
        out: dict[str, float] = {}
        before = self._server_counters()
        self.client_counts.clear()
        self.client_on = True
        try:
            yield out
        finally:
            self.client_on = False
        # the store was closed in the block: its backends publish their counters as they exit
        time.sleep(1.0)
        after = self._server_counters()
        out.update({k: after[k] - before[k] for k in after})
        out["client statements"] = float(self.client_counts["statements"])
        for what, calls in self.client_counts.most_common():
            if what.startswith(" "):
                out[what] = float(calls)

    def _raw_table(self, what: str = "raw") -> str:
        return f'"{self.schema}_{what}"'

    async def _raw_conn(self) -> Any:
        conn = await self.asyncpg.connect(self.db_url)
        head, log = self._raw_table("head"), self._raw_table("log")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self._raw_table()} (id bigserial PRIMARY KEY, data bytea);"
            f"CREATE TABLE IF NOT EXISTS {head} (id int PRIMARY KEY, version bigint, data bytea);"
            f"CREATE TABLE IF NOT EXISTS {log} (id int, version bigint, data bytea, "
            "PRIMARY KEY (id, version));"
            f"INSERT INTO {head} VALUES (1, 0, NULL) ON CONFLICT DO NOTHING"
        )
        return conn

    def _raw_sql(self) -> dict[str, str]:
        """The raw statements: the INSERT (the baseline), and one shaped like a commit (the
        instance's row updated and a log row appended, in one statement)."""
        head, log = self._raw_table("head"), self._raw_table("log")
        return {
            "INSERT": f"INSERT INTO {self._raw_table()} (data) VALUES ($1)",
            "UPDATE+INSERT, one statement": (
                f"WITH u AS (UPDATE {head} SET version = version + 1, data = $1 WHERE id = 1 "
                f"RETURNING version) INSERT INTO {log} SELECT 1, version, $1 FROM u"
            ),
        }

    def raw_sync(self, n: int) -> dict[str, float]:
        out: dict[str, float] = {}
        lp = asyncio.new_event_loop()
        try:
            conn = lp.run_until_complete(self._raw_conn())
            for what, sql in self._raw_sql().items():
                lp.run_until_complete(conn.execute(sql, PAYLOAD))  # prepared before the clock
                t = time.perf_counter()
                for _ in range(n):
                    lp.run_until_complete(conn.execute(sql, PAYLOAD))
                out[f"asyncpg {what} via run_until_complete"] = (time.perf_counter() - t) / n
            lp.run_until_complete(conn.close())
        finally:
            lp.close()
        return out

    async def raw_async(self, n: int) -> dict[str, float]:
        out: dict[str, float] = {}
        conn = await self._raw_conn()
        for what, sql in self._raw_sql().items():
            await conn.execute(sql, PAYLOAD)
            t = time.perf_counter()
            for _ in range(n):
                await conn.execute(sql, PAYLOAD)
            out[f"asyncpg {what}, awaited"] = (time.perf_counter() - t) / n
        await conn.close()
        return out


SCRIPT = "return redis.call('SET', KEYS[1], ARGV[1])"


class Redis(Server):
    name = "redis"
    main_counter = "scripts run"

    def setup(self) -> None:
        import redis
        import redis.asyncio

        self.redis = redis
        self.prefix = hexname("tfbench")
        self.client = redis.Redis.from_url(self.url)
        self.client.ping()
        self.client_counts: Counter[str] = Counter()
        self.client_on = False
        self._patch()

    def _patch(self) -> None:
        """Counts what every redis-py connection of this process sends (one
        ``send_packed_command`` is one write: a command, or a whole pipeline)."""
        owner, counts = self, self.client_counts
        sync_cls = self.redis.connection.AbstractConnection
        async_cls = self.redis.asyncio.connection.AbstractConnection
        self._saved = [
            (sync_cls, sync_cls.send_packed_command),
            (async_cls, async_cls.send_packed_command),
        ]
        sync_send, async_send = (fn for _, fn in self._saved)

        def send(self: Any, *args: Any, **kw: Any) -> Any:
            if owner.client_on:
                counts["sent"] += 1
            return sync_send(self, *args, **kw)

        async def asend(self: Any, *args: Any, **kw: Any) -> Any:
            if owner.client_on:
                counts["sent"] += 1
            return await async_send(self, *args, **kw)

        sync_cls.send_packed_command = send  # type: ignore[method-assign]
        async_cls.send_packed_command = asend  # type: ignore[method-assign]

    def teardown(self) -> None:
        for cls, fn in self._saved:
            cls.send_packed_command = fn
        keys = list(self.client.scan_iter(match=f"{self.prefix}_raw*"))
        if keys:
            self.client.delete(*keys)
        self.client.close()

    def store_url(self) -> str:
        return with_query(self.url, prefix=self.prefix)

    SCRIPTS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall")

    def _commandstats(self) -> tuple[Counter[str], float]:
        """Calls per command, and the server's µs in scripts (their usec, server-wide)."""
        stats = self.client.info("commandstats")
        calls = Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})
        usec = sum(
            float(v["usec"]) for k, v in stats.items() if k.removeprefix("cmdstat_") in self.SCRIPTS
        )
        return calls, usec

    @contextlib.contextmanager
    def counting(self) -> Iterator[dict[str, float]]:
        out: dict[str, float] = {}
        before, usec_before = self._commandstats()
        self.client_counts.clear()
        self.client_on = True
        try:
            yield out
        finally:
            self.client_on = False
        after, usec_after = self._commandstats()
        delta = after - before
        delta["info"] -= 1  # the INFO that read `before` (counted by the time `after` is read)
        # a script's own redis.call()s are counted too: the scripts run are the requests
        scripts = sum(delta[c] for c in self.SCRIPTS)
        out["scripts run"] = float(scripts)
        out["µs in scripts"] = usec_after - usec_before
        out["commands incl. in scripts"] = float(sum(v for v in delta.values() if v > 0))
        for cmd, calls in delta.most_common():
            if calls > 0:
                out[f"  {cmd}"] = float(calls)
        out["client sends"] = float(self.client_counts["sent"])

    def raw_sync(self, n: int) -> dict[str, float]:
        client = self.redis.Redis.from_url(self.url)
        key = f"{self.prefix}_raw"
        sha = client.script_load(SCRIPT)
        client.evalsha(sha, 1, key, PAYLOAD)
        t = time.perf_counter()
        for _ in range(n):
            client.evalsha(sha, 1, key, PAYLOAD)
        took = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(n):
            client.set(key, PAYLOAD)
        took_set = time.perf_counter() - t
        client.close()
        return {"redis.Redis EVALSHA": took / n, "redis.Redis SET": took_set / n}

    async def raw_async(self, n: int) -> dict[str, float]:
        client = self.redis.asyncio.Redis.from_url(self.url)
        key = f"{self.prefix}_raw"
        sha = await client.script_load(SCRIPT)
        await client.evalsha(sha, 1, key, PAYLOAD)
        t = time.perf_counter()
        for _ in range(n):
            await client.evalsha(sha, 1, key, PAYLOAD)
        took = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(n):
            await client.set(key, PAYLOAD)
        took_set = time.perf_counter() - t
        await client.aclose()
        return {"redis.asyncio EVALSHA": took / n, "redis.asyncio SET": took_set / n}


class Mongo(Server):
    name = "mongo"
    main_counter = "commands"

    def setup(self) -> None:
        import pymongo
        from pymongo import monitoring

        self.pymongo = pymongo
        self.database = hexname("tfbench")
        self.raw_db = hexname("tfbench_raw")
        self.counts: Counter[str] = Counter()
        owner = self
        self.client_on = False

        class Listener(monitoring.CommandListener):
            def started(self, event: Any) -> None:
                if owner.client_on:
                    owner.counts[event.command_name] += 1

            def succeeded(self, event: Any) -> None: ...

            def failed(self, event: Any) -> None: ...

        # global: applies to every client created from now on, the store's included
        monitoring.register(Listener())

    def teardown(self) -> None:
        client = self.pymongo.MongoClient(self.url)
        client.drop_database(self.raw_db)
        client.close()

    def store_url(self) -> str:
        return with_path(self.url, self.database)

    @contextlib.contextmanager
    def counting(self) -> Iterator[dict[str, float]]:
        out: dict[str, float] = {}
        self.counts.clear()
        self.client_on = True
        try:
            yield out
        finally:
            self.client_on = False
        out["commands"] = float(sum(self.counts.values()))
        for cmd, calls in self.counts.most_common():
            out[f"  {cmd}"] = float(calls)

    def raw_sync(self, n: int) -> dict[str, float]:
        client = self.pymongo.MongoClient(self.url)
        coll = client[self.raw_db]["raw"]
        coll.insert_one({"data": PAYLOAD})
        t = time.perf_counter()
        for _ in range(n):
            coll.insert_one({"data": PAYLOAD})
        took = time.perf_counter() - t
        client.close()
        return {"MongoClient insert_one": took / n}

    async def raw_async(self, n: int) -> dict[str, float]:
        client = self.pymongo.AsyncMongoClient(self.url)
        coll = client[self.raw_db]["raw"]
        await coll.insert_one({"data": PAYLOAD})
        t = time.perf_counter()
        for _ in range(n):
            await coll.insert_one({"data": PAYLOAD})
        took = time.perf_counter() - t
        await client.close()
        return {"AsyncMongoClient insert_one": took / n}


KINDS: dict[str, type[Server]] = {"postgres": Postgres, "redis": Redis, "mongo": Mongo}


def available(name: str) -> tuple[Server | None, str]:
    """The server's harness and "" (or, when its store does not import, a harness with no
    store class: raw round trips only), or None; and why the store is skipped."""
    var, cls_name = SERVERS[name]
    url = os.environ.get(var)
    if not url:
        return None, f"skipped: no server ({var} is unset)"
    try:
        import tideflow.stores

        cls = getattr(tideflow.stores, cls_name)
    except Exception as exc:  # not merged yet, or its module is broken
        why = f"skipped: tideflow.stores.{cls_name} cannot be imported ({exc!r})"
        return KINDS[name](url, None), why
    return KINDS[name](url, cls), ""


def measure_raw(server: Server, n: int, repeat: int) -> dict[str, Any]:
    """Only the driver's raw round trips (for a server whose store is not there)."""
    raws: dict[str, list[float]] = {}
    lp = asyncio.new_event_loop()
    try:
        for _ in range(repeat):
            for k, v in server.raw_sync(n).items():
                raws.setdefault(k, []).append(v)
            for k, v in lp.run_until_complete(server.raw_async(n)).items():
                raws.setdefault(k, []).append(v)
    finally:
        lp.close()
    return {f"{server.name}_raw": {k: min(v) * 1e6 for k, v in raws.items()}}


# ---------------------------------------------------------------------------------------------
# measuring


def measure_server(server: Server, n: int, repeat: int, fan: int) -> dict[str, Any]:
    """Every figure of one server, as a flat dict of ``<server>_...`` keys."""
    p = server.name
    res: dict[str, Any] = {}
    shapes = {
        ("chain", "sync"): chain(_inc, f"{p}-chain-sync", n),
        ("chain", "async"): chain(_ainc, f"{p}-chain-async", n),
        ("loop", "sync"): loop(_inc, f"{p}-loop-sync", n),
        ("loop", "async"): loop(_ainc, f"{p}-loop-async", n),
    }
    one_sync, one_async = chain(_inc, f"{p}-one-sync", 1), chain(_ainc, f"{p}-one-async", 1)
    fan_wf, fan_shape = fan_out(fan)
    aloop = asyncio.new_event_loop()
    store = server.open_store()
    res[f"{p}_store"] = store.describe()
    try:
        engine = Engine(store=store)
        # connect, create the schema, warm both faces before any clock starts
        assert engine.run(one_sync, 0).output == 1
        assert aloop.run_until_complete(engine.run_async(one_async, 0)).output == 1

        times: dict[str, list[float]] = {}
        raws: dict[str, list[float]] = {}

        def keep(key: str, secs: float) -> None:
            times.setdefault(key, []).append(secs)

        for r in range(repeat):
            for k, v in server.raw_sync(n).items():
                raws.setdefault(k, []).append(v)
            for shape in ("chain", "loop"):
                wf = shapes[(shape, "sync")]
                t = time.perf_counter()
                out = engine.run(wf, 0)
                keep(f"{shape}_sync", (time.perf_counter() - t) / n)
                assert out.output == n, (out.status, out.output)
            for k, v in aloop.run_until_complete(server.raw_async(n)).items():
                raws.setdefault(k, []).append(v)
            for shape in ("chain", "loop"):
                wf = shapes[(shape, "async")]
                t = time.perf_counter()
                out = aloop.run_until_complete(engine.run_async(wf, 0))
                keep(f"{shape}_async", (time.perf_counter() - t) / n)
                assert out.output == n, (out.status, out.output)
            gc.collect()
            print(f"  {p}: round {r + 1}/{repeat} done", file=sys.stderr, flush=True)
        raw = {k: min(v) for k, v in raws.items()}
        raw_sync_key = next(
            k for k in raw if not ("awaited" in k or "asyncio" in k or "Async" in k)
        )
        raw_async_key = next(k for k in raw if ("awaited" in k or "asyncio" in k or "Async" in k))
        res[f"{p}_raw"] = {k: v * 1e6 for k, v in raw.items()}
        res[f"{p}_raw_sync_us"] = raw[raw_sync_key] * 1e6
        res[f"{p}_raw_async_us"] = raw[raw_async_key] * 1e6
        res[f"{p}_raw_sync_what"] = raw_sync_key
        res[f"{p}_raw_async_what"] = raw_async_key
        for key, secs in times.items():
            face = key.split("_")[1]
            best = min(secs)
            res[f"{p}_{key}_us_per_step"] = best * 1e6
            res[f"{p}_{key}_ratio"] = best / raw[raw_sync_key if face == "sync" else raw_async_key]
        # fan-out wall time (the same engine, warm)
        fan_times = []
        for _ in range(repeat):
            t = time.perf_counter()
            out = aloop.run_until_complete(engine.run_async(fan_wf, 0))
            fan_times.append(time.perf_counter() - t)
            assert out.output == fan, (out.status, out.output)
        res[f"{p}_fanout_{fan}_async_ms"] = min(fan_times) * 1e3
    finally:
        close_store(store, aloop)

    # round trips: a fresh store object per counted run, closed inside the count
    def count(run: Callable[[Engine, asyncio.AbstractEventLoop], Any]) -> dict[str, float]:
        lp = asyncio.new_event_loop()
        try:
            with server.counting() as out:
                st = server.open_store()
                try:
                    run(Engine(store=st), lp)
                finally:
                    close_store(st, lp)
            return out
        finally:
            lp.close()

    def smallest(run: Callable[[Engine, asyncio.AbstractEventLoop], Any]) -> dict[str, float]:
        # server-wide counters see other clients: the smallest of a few counts is the closest
        tries = [count(run) for _ in range(3 if server.name == "redis" else 1)]
        return min(tries, key=lambda c: c.get(server.main_counter, 0.0))

    ones = {"sync": one_sync, "async": one_async}
    for (shape, face), big in shapes.items():
        small = ones[face]
        if face == "sync":
            c_big = smallest(lambda e, lp, wf=big: e.run(wf, 0))
            c_small = smallest(lambda e, lp, wf=small: e.run(wf, 0))
        else:
            c_big = smallest(lambda e, lp, wf=big: lp.run_until_complete(e.run_async(wf, 0)))
            c_small = smallest(lambda e, lp, wf=small: lp.run_until_complete(e.run_async(wf, 0)))
        per = {
            k.strip(): (c_big[k] - c_small.get(k, 0.0)) / (n - 1)
            for k in c_big
            if not k.startswith(" ")
        }
        res[f"{p}_{shape}_{face}_round_trips_per_step"] = per
        res[f"{p}_{shape}_{face}_counts_{n}"] = c_big
        res[f"{p}_{shape}_{face}_counts_1_step_chain"] = c_small
    c_fan = smallest(lambda e, lp: lp.run_until_complete(e.run_async(fan_wf, 0)))
    c_shape = smallest(lambda e, lp: lp.run_until_complete(e.run_async(fan_shape, 0)))
    res[f"{p}_fanout_{fan}_async_counts"] = c_fan
    res[f"{p}_fanout_shape_2_steps_counts"] = c_shape
    aloop.close()
    return res


#: the round trips counted in this process, per server
CLIENT_COUNTER = {"postgres": "client statements", "redis": "client sends", "mongo": "commands"}

#: the counters printed per step (every counter goes to results.json)
SHOWN = (
    "µs in scripts",
    "scripts run",
    "xact_commit",
    "pg_stat_statements_calls",
    "client statements",
    "client sends",
    "commands",
)


def report(name: str, res: dict[str, Any], n: int, fan: int) -> None:
    p = name
    print(f"\n{name}: {res[f'{p}_store']}")
    for what, us in res[f"{p}_raw"].items():
        print(f"  raw round trip  {what:<58} {us:8.1f} µs")
    print(f"  {'':<8} {'':<6} {'µs/step':>8} {'raw µs':>8} {'ratio':>6}   round trips per step")
    for shape in ("chain", "loop"):
        for face in ("sync", "async"):
            us = res[f"{p}_{shape}_{face}_us_per_step"]
            raw = res[f"{p}_raw_{face}_us"]
            per = res[f"{p}_{shape}_{face}_round_trips_per_step"]
            rt = ", ".join(
                f"{k} {v:.1f}" if k.startswith("µs") else f"{k} {v:.3f}"
                for k, v in per.items()
                if k in SHOWN
            )
            print(f"  {shape:<8} {face:<6} {us:8.1f} {raw:8.1f} {us / raw:5.2f}x   {rt}")
    if name == "postgres":
        shaped = {
            face: next(
                us
                for what, us in res[f"{p}_raw"].items()
                if "UPDATE+INSERT" in what and (("awaited" in what) == (face == "async"))
            )
            for face in ("sync", "async")
        }
        print(
            "  ratio to the commit-shaped UPDATE+INSERT instead: "
            + ", ".join(
                f"{shape} {face} {res[f'{p}_{shape}_{face}_us_per_step'] / shaped[face]:.2f}x"
                for shape in ("chain", "loop")
                for face in ("sync", "async")
            )
        )
    c_fan, c_shape = res[f"{p}_fanout_{fan}_async_counts"], res[f"{p}_fanout_shape_2_steps_counts"]
    key = CLIENT_COUNTER[name]  # counted in this process: no other client's requests in it
    extra = {
        k.strip(): v - c_shape.get(k, 0.0)
        for k, v in c_fan.items()
        if k.startswith(" ") and v != c_shape.get(k, 0.0)
    }
    shown = [k for k in c_fan if k in SHOWN]
    print(
        f"  {fan}-way fan-out, run_async: {res[f'{p}_fanout_{fan}_async_ms']:.1f} ms; "
        + ", ".join(f"{k} {c_fan[k]:.0f}" for k in shown)
        + "; a 2-step chain: "
        + ", ".join(f"{k} {c_shape.get(k, 0):.0f}" for k in shown)
        + f"; extra for the wave ({key}): {c_fan[key] - c_shape.get(key, 0):.0f}"
        + (
            " (" + ", ".join(f"{k} {v:+.0f}" for k, v in list(extra.items())[:6]) + ")"
            if extra
            else ""
        )
    )
    if name == "postgres":
        print(
            "  (xact_commit: the bench database's committed transactions; client statements: "
            "what asyncpg sent from this process; the commit is one plain SQL statement, so the "
            "server's time in PL/pgSQL functions, kept in results.json, is ~0 per step)"
        )
    elif name == "redis":
        print(
            "  (scripts run: EVALSHA/EVAL calls in INFO commandstats, server-wide, the smallest "
            "of 3 counts; µs in scripts: their usec there, per step; the commands of the fan-out line include those the scripts called; "
            "client sends: requests redis-py wrote from this process, a pipeline being one)"
        )


def measure(
    n: int = N,
    repeat: int = REPEAT,
    only: list[str] | None = None,
    fan: int = FAN,
    mongo_n: int = MONGO_N,
) -> dict[str, Any]:
    """Measures and prints every available server; returns the figures (skips included)."""
    results: dict[str, Any] = {"servers_repeat": repeat}
    print(
        f"\nserver stores: {n}-step chain and {n}-iteration loop ({mongo_n} on MongoDB), best "
        f"of {repeat}, beside one raw round trip (noisy machine: compare ratios within this run)",
        flush=True,
    )
    full_n = n
    for name in only or list(SERVERS):
        n = mongo_n if name == "mongo" else full_n
        results[f"{name}_steps"] = n
        server, why = available(name)
        if server is None:
            print(f"\n{name}: {why}")
            results[f"{name}_skipped"] = why
            continue
        try:
            server.setup()
        except Exception as exc:
            why = f"skipped: cannot reach the server or set up ({exc!r})"
            print(f"\n{name}: {why}")
            results[f"{name}_skipped"] = why
            continue
        try:
            if server.cls is None:  # the store is not there: the driver's raw cost alone
                print(f"\n{name}: {why}")
                results[f"{name}_skipped"] = why
                raw = measure_raw(server, n, repeat)
                results.update(raw)
                for what, us in raw[f"{name}_raw"].items():
                    print(f"  raw round trip  {what:<58} {us:8.1f} µs")
                continue
            res = measure_server(server, n, repeat, fan)
            results.update(res)
            report(name, res, n, fan)
        except Exception as exc:
            import traceback

            traceback.print_exc()
            why = f"failed: {exc!r}"
            print(f"\n{name}: {why}")
            results[f"{name}_failed"] = why
        finally:
            if server.cls is not None:
                try:
                    store = server.open_store()
                    store.drop()
                    close_store(store, None)
                except Exception as exc:
                    print(f"  {name}: drop failed: {exc!r}")
            server.teardown()
    return results


def merge_json(figures: dict[str, Any]) -> Path:
    path = HERE / "results.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(figures)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=N, help="steps/iterations (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=REPEAT, help="rounds (default %(default)s)")
    ap.add_argument(
        "--mongo-n",
        type=int,
        default=MONGO_N,
        help="steps/iterations on MongoDB (default %(default)s: SecantusDB writes take ms)",
    )
    ap.add_argument("--fan", type=int, default=FAN, help="fan-out width (default %(default)s)")
    ap.add_argument("--only", default="", help="comma-separated: postgres,redis,mongo")
    ap.add_argument("--json", action="store_true", help="merge into benchmarks/results.json")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or None
    for s in only or []:
        if s not in SERVERS:
            ap.error(f"unknown server {s!r}: use {','.join(SERVERS)}")
    figures = measure(args.n, args.repeat, only, args.fan, args.mongo_n)
    if args.json:
        print(f"\nmerged into {merge_json(figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
