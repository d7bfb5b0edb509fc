"""``RedisStore``: the store contract (version 2) on Redis, through redis-py.

``Engine(store="redis://[:password@]host:port/0?prefix=tideflow")`` (or ``rediss://`` for TLS).
Every key lives under the prefix (``{tf}``, a hash tag, keeps them all in one Redis Cluster
slot); every transition that touches several keys is one Lua script (``redis_lua``) with its keys
passed as KEYS, so each operation is atomic, and a commit, a create, a load, a signal, an extend
and a release are each one EVALSHA: one round trip.

The operations are written once, as generators that yield what they want the server to do
(``_Script``, ``_Cmd``, ``_Pipe``); the async face (``redis.asyncio.Redis``, one per running
event loop) and the synchronous twin (``blocking()``, on ``redis.Redis``: no event loop) each run
them with their own client. redis-py's own retries are turned off: a call that lost its
connection is sent again once, on a new connection, by this module, and every script is safe to
send twice (a commit carries a token and is recognised when it already applied; a signal too).

Nothing here imports redis-py at module import: the driver is imported when a store is built.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import importlib
import os
import re
import struct
import threading
import time
import uuid
from collections.abc import Generator, Sequence
from hashlib import sha1
from typing import Any, NamedTuple, TypeVar

from tideflow.errors import InvalidArgument, SignalError, StoreError, UnknownInstance
from tideflow.stores._server import DEFAULT_TIMEOUT, import_driver, parse_url, redact
from tideflow.stores.base import (
    Claim,
    Commit,
    Count,
    InstanceMeta,
    LeaseLost,
    ListPage,
    ListQuery,
    Loaded,
    StoreConflict,
    StoredInstance,
)
from tideflow.stores.redis_lua import SCRIPTS

__all__ = ["SCHEMA_VERSION", "RedisStore"]

#: The version of the key layout this module writes (kept in the meta key).
SCHEMA_VERSION = 1
#: The meta key's marker: the namespace is tideflow's.
MARKER = b"tideflow"
_FINISHED = frozenset({"completed", "failed", "cancelled"})
_STATUS_ORDER = ("pending", "running", "suspended", "completed", "failed", "cancelled")
_FIELDS = (b"st", b"wf", b"plan", b"ver", b"cat", b"uat", b"due", b"own", b"until", b"err")
_URL_OPTIONS = ("prefix", "timeout", "lease_clock", "ssl_cert_reqs", "ssl_ca_certs")
#: The fixed keys under the prefix, and the per-instance ones (prefix:i:<id> and so on).
_FIXED = (b"meta", b"seq", b"created", b"counts", b"ix:pend", b"ix:susp", b"ix:lease", b"ix:fin")
_PER_INSTANCE = (b"i:", b"l:", b"s:")
_SHA = {name: sha1(src.encode()).hexdigest() for name, src in SCRIPTS.items()}


class _Script(NamedTuple):
    name: str
    keys: list[bytes]
    args: list[bytes | str]
    #: The arguments of a second attempt after a lost connection (None: the same).
    again: list[bytes | str] | None = None


class _Cmd(NamedTuple):
    args: tuple[Any, ...]


class _Pipe(NamedTuple):
    cmds: list[tuple[Any, ...]]


T = TypeVar("T")
_Op = Generator[Any, Any, T]


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _s(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "surrogatepass")


def _f(raw: bytes | None) -> float | None:
    return None if raw is None else float(raw)


def _num(x: float) -> bytes:
    return repr(float(x)).encode()


def _opt(x: bytes | str | float | None) -> bytes:
    if x is None:
        return b""
    if isinstance(x, str):
        return b"=" + _b(x)
    if isinstance(x, (bytes, bytearray, memoryview)):
        return b"=" + bytes(x)
    return b"=" + _num(x)


def _meta(iid: str, m: Sequence[bytes | None]) -> InstanceMeta:
    st, wf, plan, ver, cat, uat, due, own, until, err = m[:10]
    assert st is not None and wf is not None and plan is not None and ver is not None
    assert cat is not None and uat is not None
    return InstanceMeta(
        iid,
        _s(wf) or "",
        _s(plan) or "",
        _s(st) or "",
        int(ver),
        float(cat),
        float(uat),
        _f(due),
        _s(own),
        _f(until),
        _s(err),
    )


def _pack(version: int, records: Sequence[bytes]) -> bytes:
    """One log entry (every commit has one, records or not): the commit's version, then each
    record behind its 4-byte length."""
    parts = [struct.pack(">Q", version)]
    for r in records:
        r = bytes(r)
        parts.append(struct.pack(">I", len(r)))
        parts.append(r)
    return b"".join(parts)


def _unpack(entry: bytes) -> tuple[int, list[bytes]]:
    (version,) = struct.unpack_from(">Q", entry, 0)
    out, at, end = [], 8, len(entry)
    while at < end:
        (n,) = struct.unpack_from(">I", entry, at)
        at += 4
        out.append(entry[at : at + n])
        at += n
    return version, out


def _glob(raw: bytes) -> bytes:
    return re.sub(rb"([*?\[\]\\])", rb"\\\1", raw)


def _unknown(iid: str) -> UnknownInstance:
    return UnknownInstance(f"no workflow instance with id {iid!r}")


def _order(m: InstanceMeta) -> float:
    return m.updated_at if m.due_at is None else m.due_at


class RedisStore:
    """The store contract on Redis (redis-py), under one key prefix.

    ``RedisStore(url, *, client=None, sync_client=None, prefix="tideflow", timeout=10.0,
    lease_clock="server")``: ``url`` is ``redis://[user:password@]host:port/db`` or
    ``rediss://`` (TLS), with the options ``prefix``, ``timeout``, ``lease_clock``,
    ``ssl_cert_reqs`` (none, optional, required) and ``ssl_ca_certs`` in its query. Or pass an
    existing ``redis.asyncio.Redis`` as ``client`` (and a ``redis.Redis`` as ``sync_client`` for
    the synchronous twin): they are used as they are (their retry settings included; they must
    not decode responses) and never closed by the store.

    ``lease_clock="server"`` judges leases by the Redis server's clock (``TIME`` inside the
    scripts); ``"engine"`` by the times the engine passes (``Claim.now``, ...).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        sync_client: Any = None,
        prefix: str | None = None,
        timeout: float | None = None,
        lease_clock: str | None = None,
    ) -> None:
        self._redis = import_driver("redis", "redis", "RedisStore")
        import_driver("redis.asyncio", "redis", "RedisStore")
        opts: dict[str, str] = {}
        self._host, self._port, self._db = "localhost", 6379, 0
        self._scheme = "redis"
        self._user: str | None = None
        self._password: str | None = None
        if url is not None:
            if not isinstance(url, str):
                raise StoreError(f"RedisStore: the URL must be a str, got {type(url).__name__}")
            u = parse_url(url, ("redis", "rediss"), "RedisStore")
            self._scheme, self._host = u.scheme, u.host
            self._port = u.port if u.port is not None else 6379
            self._user, self._password = u.user, u.password
            if u.path:
                if not u.path.isdigit():
                    raise StoreError(
                        f"RedisStore: the database in {u.redacted!r} must be a number (0, 1, ...)"
                    )
                self._db = int(u.path)
            for key, value in u.query:
                if key not in _URL_OPTIONS:
                    raise StoreError(
                        f"RedisStore: unknown URL option {key!r} in {u.redacted!r} "
                        f"(known: {', '.join(_URL_OPTIONS)})"
                    )
                opts[key] = value
        elif client is None:
            raise StoreError("RedisStore needs a URL or a client=")
        elif client is not None:
            kw = client.connection_pool.connection_kwargs
            self._host = str(kw.get("host", "localhost"))
            self._port = int(kw.get("port", 6379))
            self._db = int(kw.get("db", 0))
        self._prefix = self._pick("prefix", prefix, opts, "tideflow")
        if not self._prefix or not isinstance(self._prefix, str):
            raise StoreError("RedisStore: the prefix must be a non-empty str")
        raw_timeout = self._pick("timeout", timeout, opts, DEFAULT_TIMEOUT)
        try:
            self._timeout = float(raw_timeout)
        except (TypeError, ValueError):
            raise StoreError(
                f"RedisStore: timeout must be a number of seconds, got {raw_timeout!r}"
            ) from None
        if not self._timeout > 0:
            raise StoreError(f"RedisStore: timeout must be positive, got {raw_timeout!r}")
        self._clock = self._pick("lease_clock", lease_clock, opts, "server")
        if self._clock not in ("server", "engine"):
            raise StoreError(
                f"RedisStore: lease_clock must be 'server' or 'engine', got {self._clock!r}"
            )
        self._ssl: dict[str, Any] = {}
        if self._scheme == "rediss":
            self._ssl["ssl"] = True
            if "ssl_cert_reqs" in opts:
                if opts["ssl_cert_reqs"] not in ("none", "optional", "required"):
                    raise StoreError(
                        "RedisStore: ssl_cert_reqs must be none, optional or required, got "
                        f"{opts['ssl_cert_reqs']!r}"
                    )
                self._ssl["ssl_cert_reqs"] = opts["ssl_cert_reqs"]
            if "ssl_ca_certs" in opts:
                self._ssl["ssl_ca_certs"] = opts["ssl_ca_certs"]
        elif "ssl_cert_reqs" in opts or "ssl_ca_certs" in opts:
            raise StoreError("RedisStore: the ssl_* options need a rediss:// URL")
        for c, what in ((client, "client"), (sync_client, "sync_client")):
            if c is not None and c.connection_pool.connection_kwargs.get("decode_responses"):
                raise StoreError(
                    f"RedisStore: the {what} must not decode responses (decode_responses=False)"
                )
        self._user_client = client
        self._user_sync = sync_client
        p = _b(self._prefix) + b":"
        self._p = p
        #: The pub/sub channel of the store's news (``watch``): not a key.
        self._news = p + b"news"
        self._k = {name.decode(): p + name for name in _FIXED}
        self._ix = [self._k["ix:pend"], self._k["ix:susp"], self._k["ix:lease"], self._k["ix:fin"]]
        self._sync: Any = None
        self._aclients: dict[asyncio.AbstractEventLoop, Any] = {}
        self._closers: dict[asyncio.AbstractEventLoop, Any] = {}
        #: Per event loop, its pub/sub subscription and news (``watch``).
        self._subs: dict[asyncio.AbstractEventLoop, _Sub] = {}
        self._lock = threading.Lock()
        self._checked = False
        self._twin: _Blocking | None = None
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._where = f"{host}:{self._port}"
        self._describe = f"{self._scheme}://{self._where}/{self._db}?prefix={self._prefix}"

    @staticmethod
    def _pick(name: str, given: Any, opts: dict[str, str], default: Any) -> Any:
        if name in opts:
            if given is not None and str(given) != opts[name]:
                raise StoreError(
                    f"RedisStore: {name} is given twice, differently: {given!r} and {opts[name]!r} in the URL"
                )
            return opts[name]
        return default if given is None else given

    # --- naming -------------------------------------------------------------------------------

    def describe(self) -> str:
        """``redis://host:port/db?prefix=NAME`` (never the password)."""
        return self._describe

    def __repr__(self) -> str:
        return f"RedisStore({self._describe!r}, lease_clock={self._clock!r})"

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return str(self._prefix)

    @property
    def lease_clock(self) -> str:
        """``"server"`` or ``"engine"``."""
        return str(self._clock)

    def _inst(self, iid: str) -> list[bytes]:
        e = _b(iid)
        return [self._p + b"i:" + e, self._p + b"l:" + e, self._p + b"s:" + e]

    # --- clients ------------------------------------------------------------------------------

    def _kwargs(self) -> dict[str, Any]:
        name = "tideflow-" + re.sub(r"[^A-Za-z0-9_.:{}-]", "_", self._prefix)[:64]
        return dict(
            host=self._host,
            port=self._port,
            db=self._db,
            username=self._user,
            password=self._password,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            decode_responses=False,
            client_name=name,
            health_check_interval=0,
            **self._ssl,
        )

    def _sync_client(self) -> Any:
        if self._user_sync is not None:
            return self._user_sync
        with self._lock:
            if self._sync is None:
                if self._user_client is not None:
                    kw = dict(self._user_client.connection_pool.connection_kwargs)
                    keep = (
                        "host",
                        "port",
                        "db",
                        "username",
                        "password",
                        "socket_timeout",
                        "socket_connect_timeout",
                        "client_name",
                    )
                    args = {k: kw[k] for k in keep if k in kw}
                else:
                    args = self._kwargs()
                retry = importlib.import_module("redis.retry").Retry
                backoff = importlib.import_module("redis.backoff").NoBackoff
                self._sync = self._redis.Redis(retry=retry(backoff(), 0), **args)
            return self._sync

    async def _async_client(self) -> Any:
        if self._user_client is not None:
            return self._user_client
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is not None:
            return client
        with self._lock:
            for old in [lp for lp in self._aclients if lp.is_closed()]:
                _abandon(self._aclients.pop(old))
                self._closers.pop(old, None)
            aio = importlib.import_module("redis.asyncio")
            retry = importlib.import_module("redis.asyncio.retry").Retry
            backoff = importlib.import_module("redis.backoff").NoBackoff
            client = aio.Redis(retry=retry(backoff(), 0), **self._kwargs())
            self._aclients[loop] = client
        # closed by the loop's shutdown_asyncgens (asyncio.run does it) before the loop closes
        closer = _closer(self, loop, client)
        self._closers[loop] = closer
        await closer.__anext__()
        return client

    def close(self) -> None:
        """Closes the connections this store opened (never a client that was passed in) and
        every subscription of ``watch``."""
        with self._lock:
            sync, self._sync = self._sync, None
            clients = list(self._aclients.items())
            self._aclients.clear()
            self._closers.clear()
            subs = list(self._subs.values())
            self._subs.clear()
        for sub in subs:
            sub.shut()
        if sync is not None:
            sync.close()
        for loop, client in clients:
            if not loop.is_closed() and not loop.is_running():
                try:
                    loop.run_until_complete(client.aclose())
                    continue
                except Exception:
                    pass
            _abandon(client)

    async def aclose(self) -> None:
        """Closes the connections this store opened (never a client that was passed in)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._aclients.pop(loop, None)
            client_closer = self._closers.pop(loop, None)
            sub = self._subs.pop(loop, None)
        if sub is not None:
            closer, sub.closer = sub.closer, None
            if closer is not None:  # closed here, not by a finalizer task later
                await closer.aclose()
            await sub.aclose()
        if client_closer is not None:  # closes the client now, not in a finalizer task later
            await client_closer.aclose()
        elif client is not None:
            await client.aclose()
        self.close()

    def blocking(self) -> _Blocking:
        """The synchronous twin (``redis.Redis``), over the same data and settings."""
        with self._lock:
            if self._twin is None:
                self._twin = _Blocking(self)
            return self._twin

    # --- news (Watchable) ----------------------------------------------------------------------

    async def watch(self, timeout: float) -> builtins.list[str]:
        """See ``Watchable.watch``: a pub/sub subscription per event loop (its own connection)
        to the prefix's news channel, which the scripts ``PUBLISH`` to; the ids that came in
        between calls are returned (each once) by the next call."""
        wait = _check_wait(timeout)
        loop = asyncio.get_running_loop()
        sub = self._subs.get(loop)
        first = sub is None or sub.closed
        if sub is None or sub.closed:
            with self._lock:
                for old in [lp for lp in self._subs if lp.is_closed()]:
                    self._subs.pop(old).shut()
                sub = _Sub(loop)
                self._subs[loop] = sub
            sub.closer = _sub_closer(self, loop, sub)
            await sub.closer.__anext__()  # the loop's shutdown_asyncgens closes the subscription
        deadline = time.monotonic() + wait
        async with sub.lock:
            if sub.closed:
                return []
            if sub.pubsub is None:
                await self._subscribe(sub)
                if not first:
                    return []  # reconnected: news may have been lost meanwhile
            try:
                await sub.drain(0.0)
                while not sub.news and not sub.closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    await sub.drain(left)
            except (self._redis.exceptions.RedisError, OSError) as exc:
                if sub.closed:
                    await sub.drop()
                    return []
                if not isinstance(exc, OSError) and not self._retryable(exc):
                    raise self._fail("watch", exc) from exc
                await self._subscribe(sub)  # the connection was lost: reopen it, report []
                return []
            if sub.closed:
                await sub.drop()
                return []
            news = [_s(raw) or "" for raw in sub.news]
            sub.news.clear()
            return news

    async def _subscribe(self, sub: _Sub) -> None:
        """(Re)subscribes ``sub`` on a new connection and waits for the server's confirmation,
        retrying connection failures until the store's timeout; then a ``StoreError``."""
        deadline = time.monotonic() + self._timeout
        delay = 0.02
        await sub.drop()
        while True:
            ps = None
            try:
                client = await self._async_client()
                ps = client.pubsub()
                await ps.subscribe(self._news)
                while True:  # the subscription holds once the server confirmed it
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise self._redis.exceptions.TimeoutError("no SUBSCRIBE confirmation")
                    msg = await ps.get_message(timeout=left)
                    if msg is not None and msg.get("type") in ("subscribe", b"subscribe"):
                        break
            except (self._redis.exceptions.RedisError, OSError) as exc:
                if ps is not None:
                    await _Sub.close_pubsub(ps)
                retry = (isinstance(exc, OSError) or self._retryable(exc)) and (
                    time.monotonic() + delay < deadline
                )
                if not retry:
                    raise self._fail("watch (SUBSCRIBE)", exc) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)
                continue
            if sub.closed:
                await _Sub.close_pubsub(ps)
                return
            sub.pubsub = ps
            sub.news.clear()
            return

    # --- running an operation -----------------------------------------------------------------

    def _fail(self, what: str, exc: BaseException) -> StoreError:
        r = self._redis
        where = self._where
        if isinstance(exc, r.exceptions.TimeoutError):
            msg = f"{self._describe}: {what} timed out after {self._timeout:g} s (Redis at {where})"
        elif isinstance(exc, r.exceptions.AuthenticationError):
            msg = f"{self._describe}: {what}: Redis at {where} refused the credentials ({exc})"
        elif isinstance(exc, r.exceptions.ConnectionError):
            msg = f"{self._describe}: {what}: cannot reach Redis at {where} ({exc})"
        else:
            msg = f"{self._describe}: {what} failed: {type(exc).__name__}: {exc}"
        msg = redact(msg)
        if self._password:
            msg = msg.replace(self._password, "***")
        return StoreError(msg)

    def _retryable(self, exc: BaseException) -> bool:
        e = self._redis.exceptions
        return isinstance(exc, e.ConnectionError) and not isinstance(exc, e.AuthenticationError)

    def _call_sync(self, client: Any, req: Any, again: bool) -> Any:
        if isinstance(req, _Script):
            args = req.again if (again and req.again is not None) else req.args
            try:
                return client.execute_command(
                    "EVALSHA", _SHA[req.name], len(req.keys), *req.keys, *args
                )
            except self._redis.exceptions.NoScriptError:
                return client.execute_command(
                    "EVAL", SCRIPTS[req.name], len(req.keys), *req.keys, *args
                )
        if isinstance(req, _Cmd):
            return client.execute_command(*req.args)
        pipe = client.pipeline(transaction=False)
        for c in req.cmds:
            pipe.execute_command(*c)
        return pipe.execute()

    async def _call_async(self, client: Any, req: Any, again: bool) -> Any:
        if isinstance(req, _Script):
            args = req.again if (again and req.again is not None) else req.args
            try:
                return await client.execute_command(
                    "EVALSHA", _SHA[req.name], len(req.keys), *req.keys, *args
                )
            except self._redis.exceptions.NoScriptError:
                return await client.execute_command(
                    "EVAL", SCRIPTS[req.name], len(req.keys), *req.keys, *args
                )
        if isinstance(req, _Cmd):
            return await client.execute_command(*req.args)
        pipe = client.pipeline(transaction=False)
        for c in req.cmds:
            pipe.execute_command(*c)
        return await pipe.execute()

    def _step_sync(self, req: Any, what: str) -> Any:
        start = time.monotonic()
        try:
            client = self._sync_client()
        except self._redis.exceptions.RedisError as exc:
            raise self._fail(what, exc) from exc
        try:
            return self._call_sync(client, req, False)
        except self._redis.exceptions.RedisError as exc:
            if not self._retryable(exc) or time.monotonic() - start >= self._timeout:
                raise self._fail(what, exc) from exc
        try:  # the connection was lost: once more, on a new one (every request is safe to resend)
            return self._call_sync(client, req, True)
        except self._redis.exceptions.RedisError as exc:
            raise self._fail(what, exc) from exc

    async def _step_async(self, req: Any, what: str) -> Any:
        start = time.monotonic()
        client = await self._async_client()
        try:
            return await self._call_async(client, req, False)
        except self._redis.exceptions.RedisError as exc:
            if not self._retryable(exc) or time.monotonic() - start >= self._timeout:
                raise self._fail(what, exc) from exc
        try:
            return await self._call_async(client, req, True)
        except self._redis.exceptions.RedisError as exc:
            raise self._fail(what, exc) from exc

    def _run_sync(self, op: _Op[T], what: str) -> T:
        if not self._checked:
            self._drive_sync(self._op_check(), "opening the key space")
            self._checked = True
        return self._drive_sync(op, what)

    def _drive_sync(self, op: _Op[T], what: str) -> T:
        try:
            req = next(op)
            while True:
                req = op.send(self._step_sync(req, what))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _run_async(self, op: _Op[T], what: str) -> T:
        if not self._checked:
            await self._drive_async(self._op_check(), "opening the key space")
            self._checked = True
        return await self._drive_async(op, what)

    async def _drive_async(self, op: _Op[T], what: str) -> T:
        try:
            req = next(op)
            while True:
                req = op.send(await self._step_async(req, what))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    # --- the operations, once for both faces ----------------------------------------------------

    def _op_check(self) -> _Op[None]:
        meta = self._k["meta"]
        if not (yield _Cmd(("EXISTS", meta))):
            cursor: Any = 0
            pattern = _glob(self._p) + b"*"
            scanning = True
            while scanning:
                cursor, keys = yield _Cmd(("SCAN", cursor, "MATCH", pattern, "COUNT", 1000))
                for key in keys:
                    rest = key[len(self._p) :]
                    if rest in _FIXED or rest.startswith(_PER_INSTANCE):
                        # Another store object (another process, or this store's other face)
                        # may have initialised the prefix since the EXISTS: then the meta key
                        # is there now, and the check script below judges it.
                        if (yield _Cmd(("EXISTS", meta))):
                            scanning = False
                            break
                        raise StoreError(
                            f"{self._describe}: the prefix holds keys that are not tideflow's "
                            f"(e.g. {key!r}, and no {meta!r} marking them as tideflow's); "
                            "nothing was changed: use another prefix"
                        )
                if int(cursor) == 0:
                    break
        state, found = yield _Script("check", [meta], [str(SCHEMA_VERSION), MARKER])
        if state == b"foreign":
            raise StoreError(
                f"{self._describe}: the key {meta!r} is not tideflow's (a {found.decode()} "
                "without tideflow's marker); nothing was changed: use another prefix"
            )
        if int(found) > SCHEMA_VERSION:
            raise StoreError(
                f"{self._describe}: the data was written by a newer tideflow (key layout version "
                f"{int(found)}, this one knows {SCHEMA_VERSION}); nothing was changed"
            )

    def _op_create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> _Op[StoredInstance | None]:
        k = self._k
        inst, log, _ = self._inst(meta.id)
        entry = _pack(1, records)
        res = yield _Script(
            "create",
            [inst, log, k["created"], k["seq"], *self._ix, k["counts"]],
            [
                uuid.uuid4().hex,
                _b(meta.status),
                _b(meta.workflow),
                _b(meta.plan_hash),
                _num(meta.created_at),
                _num(meta.updated_at),
                _opt(meta.due_at),
                _opt(meta.owner),
                _opt(meta.lease_until),
                _opt(meta.error),
                bytes(header),
                entry,
                _b(meta.id),
                self._news,
            ],
        )
        if res[0] == b"exists":
            return StoredInstance(_meta(meta.id, res[1]), res[2])
        return None

    def _op_commit(self, c: Commit) -> _Op[None]:
        inst, log, inbox = self._inst(c.id)
        entry = _pack(c.expected_version + 1, c.records)
        res = yield _Script(
            "commit",
            [inst, log, inbox, *self._ix, self._k["counts"]],
            [
                uuid.uuid4().hex,
                str(int(c.expected_version)),
                _b(c.status),
                _num(c.updated_at),
                _opt(c.due_at),
                _opt(None if c.header is None else bytes(c.header)),
                entry,
                str(int(c.signals_seen)),
                _opt(c.owner),
                _opt(c.error),
                self._clock,
                _b(c.id),
                self._news,
            ],
        )
        kind = res[0]
        if kind == b"ok":
            return None
        if kind == b"unknown":
            raise _unknown(c.id)
        if kind == b"lease":
            raise LeaseLost(c.id, c.owner, _s(res[1]))
        raise StoreConflict(c.id, c.expected_version, int(res[1]))

    def _op_get(self, iid: str) -> _Op[StoredInstance | None]:
        res = yield _Script("load", self._inst(iid), ["get"])
        return None if res is None else StoredInstance(_meta(iid, res[0]), res[1])

    def _op_load(self, iid: str) -> _Op[Loaded | None]:
        res = yield _Script("load", self._inst(iid), ["load"])
        if res is None:
            return None
        records = [r for e in res[2] for r in _unpack(e)[1]]
        signals = [(n, e[16:]) for n, e in enumerate(res[3], start=1)]
        return Loaded(_meta(iid, res[0]), res[1], records, signals)

    def _op_records(self, iid: str, after: int) -> _Op[list[bytes]]:
        # one entry per version (the create's is the first): those after `after` are at its index
        entries = yield _Cmd(("LRANGE", self._inst(iid)[1], max(int(after), 0), -1))
        out: list[bytes] = []
        for e in entries:
            v, recs = _unpack(e)
            if v > after:
                out.extend(recs)
        return out

    def _op_signals(self, iid: str, after: int) -> _Op[list[tuple[int, bytes]]]:
        after = max(int(after), 0)
        entries = yield _Cmd(("LRANGE", self._inst(iid)[2], after, -1))
        return [(after + n, e[16:]) for n, e in enumerate(entries, start=1)]

    def _op_list(self, q: ListQuery) -> _Op[ListPage]:
        hi: bytes = b"+inf"
        if q.cursor is not None:
            cur = q.cursor
            if not (isinstance(cur, str) and cur.isascii() and cur.isdigit() and int(cur) >= 1):
                raise InvalidArgument(f"invalid list cursor {cur!r}")
            hi = b"(" + cur.encode()
        limit = q.limit
        batch = 200 if limit is None else min(max(limit + 1, 50), 1000)
        statuses = set(q.statuses)
        hits: list[tuple[int, InstanceMeta]] = []
        while True:
            ids = yield _Cmd(
                ("ZREVRANGEBYSCORE", self._k["created"], hi, b"-inf", "LIMIT", 0, batch)
            )
            if not ids:
                break
            rows = yield from self._fetch(ids)  # an instance deleted meanwhile is left out
            for meta, seq in rows:
                if (
                    (not statuses or meta.status in statuses)
                    and (q.workflow is None or meta.workflow == q.workflow)
                    and (q.plan_hash is None or meta.plan_hash == q.plan_hash)
                ):
                    hits.append((seq, meta))
            if limit is not None and len(hits) > limit:
                break
            if len(ids) < batch or not rows:
                break
            hi = b"(" + str(rows[-1][1]).encode()
        cursor = None
        if limit is not None and len(hits) > limit:
            hits = hits[: max(limit, 0)]
            cursor = str(hits[-1][0]) if hits else None
        return ListPage([m for _, m in hits], cursor)

    def _op_counts(self) -> _Op[list[Count]]:
        raw = yield _Cmd(("HGETALL", self._k["counts"]))
        items = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=False)
        out = []
        for field, n in items:
            wf, _, st = field.partition(b"\0")
            if int(n) > 0:
                out.append(Count(_s(wf) or "", _s(st) or "", int(n)))
        rank = {s: i for i, s in enumerate(_STATUS_ORDER)}
        out.sort(key=lambda c: (c.workflow, rank.get(c.status, 99), c.status))
        return out

    def _op_delete(self, iid: str) -> _Op[bool]:
        k = self._k
        n = yield _Script(
            "delete", [*self._inst(iid), k["created"], *self._ix, k["counts"]], [_b(iid)]
        )
        return bool(n)

    def _op_purge(self, before: float, statuses: Sequence[str]) -> _Op[int]:
        k = self._k
        ids = yield _Cmd(("ZRANGEBYSCORE", k["ix:fin"], b"-inf", b"(" + _num(before)))
        want = [_b(s) for s in statuses]
        total = 0
        for at in range(0, len(ids), 100):
            chunk = ids[at : at + 100]
            keys = [k["created"], *self._ix, k["counts"]]
            for raw in chunk:
                keys.extend(self._inst(_s(raw) or ""))
            total += yield _Script("purge", keys, [_num(before), str(len(want)), *want, *chunk])
        return int(total)

    def _op_signal(self, iid: str, record: bytes, now: float) -> _Op[int]:
        inst, _, inbox = self._inst(iid)
        entry = os.urandom(16) + bytes(record)
        args: list[bytes | str] = [entry, _num(now), "0", _b(iid), self._news]
        res = yield _Script(
            "signal", [inst, inbox, *self._ix], args, [entry, _num(now), "1", _b(iid), self._news]
        )
        if res[0] == b"unknown":
            raise _unknown(iid)
        if res[0] == b"finished":
            raise SignalError(f"instance {iid!r} is {_s(res[1])} and takes no more signals")
        return int(res[1])

    def _lease_now(self, now: float) -> bytes:
        return b"" if self._clock == "server" else _num(now)

    def _fetch(self, ids: Sequence[bytes]) -> _Op[list[tuple[InstanceMeta, int]]]:
        rows = yield _Pipe([("HMGET", self._inst(_s(i) or "")[0], *_FIELDS, b"seq") for i in ids])
        out = []
        for raw, m in zip(ids, rows, strict=False):
            if m[0] is not None:
                out.append((_meta(_s(raw) or "", m), int(m[10] or 0)))
        return out

    def _op_due(self, now: float, limit: int | None) -> _Op[list[InstanceMeta]]:
        k = self._k
        window = None if limit is None else max(2 * limit, 32)
        while True:
            res = yield _Script(
                "candidates",
                [k["ix:pend"], k["ix:susp"], k["ix:lease"]],
                [_num(now), self._lease_now(now), "" if window is None else str(window), "-"],
            )
            lnow = float(res[0])
            ids = list(dict.fromkeys([*res[1], *res[2], *res[3]]))
            rows = yield from self._fetch(ids)
            hits = [
                (m, seq)
                for m, seq in rows
                if m.status in ("pending", "suspended")
                and m.due_at is not None
                and m.due_at <= now
                and not (m.owner is not None and m.lease_until is not None and m.lease_until > lnow)
            ]
            hits.sort(key=lambda h: (_order(h[0]), h[1]))
            full = window is not None and any(len(res[i]) >= window for i in (1, 2, 3))
            if limit is None or len(hits) >= limit or not full:
                out = [m for m, _ in hits]
                return out if limit is None else out[: max(limit, 0)]
            assert window is not None
            window *= 4

    def _op_claim(self, c: Claim) -> _Op[list[InstanceMeta]]:
        if c.limit <= 0 or not c.plan_hashes:
            return []
        k = self._k
        plans = [_b(p) for p in c.plan_hashes]
        taken: list[InstanceMeta] = []
        tried: set[bytes] = set()
        window = min(max(c.limit, 16), 1000)
        for _ in range(8):
            res = yield _Script(
                "candidates",
                [k["ix:pend"], k["ix:susp"], k["ix:lease"]],
                [b"", self._lease_now(c.now), str(window), str(window)],
            )
            ids = [i for i in dict.fromkeys([*res[1], *res[2], *res[3]]) if i not in tried]
            if ids:
                keys = [*self._ix]
                for raw in ids:
                    keys.append(self._inst(_s(raw) or "")[0])
                got = yield _Script(
                    "claim",
                    keys,
                    [
                        _b(c.owner),
                        _num(c.lease),
                        self._lease_now(c.now),
                        str(c.limit - len(taken)),
                        str(len(plans)),
                        *plans,
                        *ids,
                        uuid.uuid4().hex,
                    ],
                )
                taken.extend(_meta(_s(raw) or "", m) for raw, m in got)
                tried.update(ids)
            if len(taken) >= c.limit:
                break
            if not any(len(res[i]) >= window for i in (1, 2, 3)):
                break
            window = min(window * 4, 5000)
        return taken

    def _op_extend(self, iid: str, owner: str, lease: float, now: float) -> _Op[float]:
        inst = self._inst(iid)[0]
        res = yield _Script(
            "extend",
            [inst, self._k["ix:lease"]],
            [_b(owner), _num(lease), self._lease_now(now), _b(iid)],
        )
        if res[0] == b"unknown":
            raise _unknown(iid)
        if res[0] == b"lease":
            raise LeaseLost(iid, owner, _s(res[1]))
        return float(res[1])

    def _op_release(self, iid: str, owner: str) -> _Op[bool]:
        res = yield _Script(
            "release", [self._inst(iid)[0], *self._ix], [_b(owner), _b(iid), self._news]
        )
        if res[0] == b"unknown":
            raise _unknown(iid)
        return bool(res[0] == b"yes")

    def _op_drop(self) -> _Op[None]:
        pattern = _glob(self._p) + b"*"
        cursor: Any = 0
        while True:
            cursor, keys = yield _Cmd(("SCAN", cursor, "MATCH", pattern, "COUNT", 1000))
            mine = [
                key
                for key in keys
                if key[len(self._p) :] in _FIXED or key[len(self._p) :].startswith(_PER_INSTANCE)
            ]
            if mine:
                yield _Cmd(("UNLINK", *mine))
            if int(cursor) == 0:
                break

    def drop(self) -> None:
        """Deletes every key of this prefix (destructive: for tests and teardown). Works on an
        empty prefix too. Keys under the prefix that do not look like tideflow's are kept."""
        self._drive_sync(self._op_drop(), "dropping the key space")
        self._checked = False

    # --- the async face -----------------------------------------------------------------------

    async def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None:
        """See ``Store.create``: one EVALSHA."""
        return await self._run_async(
            self._op_create(meta, header, records), f"create of {meta.id!r}"
        )

    async def commit(self, commit: Commit) -> None:
        """See ``Store.commit``: one EVALSHA."""
        await self._run_async(self._op_commit(commit), f"commit of {commit.id!r}")

    async def get(self, id: str) -> StoredInstance | None:
        """See ``Store.get``."""
        return await self._run_async(self._op_get(id), f"get of {id!r}")

    async def load(self, id: str) -> Loaded | None:
        """See ``Store.load``: one EVALSHA."""
        return await self._run_async(self._op_load(id), f"load of {id!r}")

    async def records(self, id: str, after: int) -> builtins.list[bytes]:
        """See ``Store.records``."""
        return await self._run_async(self._op_records(id, after), f"records of {id!r}")

    async def signals(self, id: str, after: int) -> builtins.list[tuple[int, bytes]]:
        """See ``Store.signals``."""
        return await self._run_async(self._op_signals(id, after), f"signals of {id!r}")

    async def list(self, query: ListQuery) -> ListPage:
        """See ``Store.list``."""
        return await self._run_async(self._op_list(query), "list")

    async def counts(self) -> builtins.list[Count]:
        """See ``Store.counts``."""
        return await self._run_async(self._op_counts(), "counts")

    async def delete(self, id: str) -> bool:
        """See ``Store.delete``."""
        return await self._run_async(self._op_delete(id), f"delete of {id!r}")

    async def purge(self, before: float, statuses: Sequence[str]) -> int:
        """See ``Store.purge``."""
        return await self._run_async(self._op_purge(before, statuses), "purge")

    async def send_signal(self, id: str, record: bytes, now: float) -> int:
        """See ``Store.send_signal``: one EVALSHA."""
        return await self._run_async(self._op_signal(id, record, now), f"signal to {id!r}")

    async def due(self, now: float, limit: int | None) -> builtins.list[InstanceMeta]:
        """See ``Store.due``."""
        return await self._run_async(self._op_due(now, limit), "due")

    async def claim(self, claim: Claim) -> builtins.list[InstanceMeta]:
        """See ``Store.claim``."""
        return await self._run_async(self._op_claim(claim), "claim")

    async def extend(self, id: str, owner: str, lease: float, now: float) -> float:
        """See ``Store.extend``: one EVALSHA."""
        return await self._run_async(self._op_extend(id, owner, lease, now), f"extend of {id!r}")

    async def release(self, id: str, owner: str) -> bool:
        """See ``Store.release``: one EVALSHA."""
        return await self._run_async(self._op_release(id, owner), f"release of {id!r}")


class _Blocking:
    """The synchronous twin of a ``RedisStore`` (``redis.Redis``, no event loop)."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"{self._store!r}.blocking()"

    def describe(self) -> str:
        """See ``RedisStore.describe``."""
        return self._store.describe()

    def _run(self, op: _Op[T], what: str) -> T:
        return self._store._run_sync(op, what)

    def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None:
        """See ``Store.create``."""
        return self._run(self._store._op_create(meta, header, records), f"create of {meta.id!r}")

    def commit(self, commit: Commit) -> None:
        """See ``Store.commit``."""
        self._run(self._store._op_commit(commit), f"commit of {commit.id!r}")

    def get(self, id: str) -> StoredInstance | None:
        """See ``Store.get``."""
        return self._run(self._store._op_get(id), f"get of {id!r}")

    def load(self, id: str) -> Loaded | None:
        """See ``Store.load``."""
        return self._run(self._store._op_load(id), f"load of {id!r}")

    def records(self, id: str, after: int) -> builtins.list[bytes]:
        """See ``Store.records``."""
        return self._run(self._store._op_records(id, after), f"records of {id!r}")

    def signals(self, id: str, after: int) -> builtins.list[tuple[int, bytes]]:
        """See ``Store.signals``."""
        return self._run(self._store._op_signals(id, after), f"signals of {id!r}")

    def list(self, query: ListQuery) -> ListPage:
        """See ``Store.list``."""
        return self._run(self._store._op_list(query), "list")

    def counts(self) -> builtins.list[Count]:
        """See ``Store.counts``."""
        return self._run(self._store._op_counts(), "counts")

    def delete(self, id: str) -> bool:
        """See ``Store.delete``."""
        return self._run(self._store._op_delete(id), f"delete of {id!r}")

    def purge(self, before: float, statuses: Sequence[str]) -> int:
        """See ``Store.purge``."""
        return self._run(self._store._op_purge(before, statuses), "purge")

    def send_signal(self, id: str, record: bytes, now: float) -> int:
        """See ``Store.send_signal``."""
        return self._run(self._store._op_signal(id, record, now), f"signal to {id!r}")

    def due(self, now: float, limit: int | None) -> builtins.list[InstanceMeta]:
        """See ``Store.due``."""
        return self._run(self._store._op_due(now, limit), "due")

    def claim(self, claim: Claim) -> builtins.list[InstanceMeta]:
        """See ``Store.claim``."""
        return self._run(self._store._op_claim(claim), "claim")

    def extend(self, id: str, owner: str, lease: float, now: float) -> float:
        """See ``Store.extend``."""
        return self._run(self._store._op_extend(id, owner, lease, now), f"extend of {id!r}")

    def release(self, id: str, owner: str) -> bool:
        """See ``Store.release``."""
        return self._run(self._store._op_release(id, owner), f"release of {id!r}")

    def close(self) -> None:
        """Closes the store's connections (see ``RedisStore.close``)."""
        self._store.close()


async def _closer(store: RedisStore, loop: asyncio.AbstractEventLoop, client: Any) -> Any:
    """An async generator the loop tracks: its ``shutdown_asyncgens`` closes the client."""
    try:
        yield
    finally:
        with store._lock:
            if store._aclients.get(loop) is client:
                del store._aclients[loop]
            store._closers.pop(loop, None)
        try:
            await client.aclose()
        except Exception:
            _abandon(client)


def _check_wait(timeout: object) -> float:
    """``watch``'s ``timeout``, checked: a number of seconds, at least 0."""
    try:
        t = float(timeout)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgument(
            f"watch: timeout must be a number of seconds, got {timeout!r}"
        ) from None
    if not t >= 0 or t == float("inf"):
        raise InvalidArgument(f"watch: timeout must be a finite number >= 0, got {timeout!r}")
    return t


class _Sub:
    """One event loop's subscription to the news channel (``watch``) and the ids it heard."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        #: The redis-py PubSub, or None while there is none (never opened, or lost).
        self.pubsub: Any = None
        #: The ids heard and not yet returned (a set: news coalesces).
        self.news: set[bytes] = set()
        #: One reader at a time (a PubSub connection cannot be read by two).
        self.lock = asyncio.Lock()
        #: Closed by ``close``/``aclose``: a waiting ``watch`` returns [] at once.
        self.closed = False
        #: The async generator that closes the subscription when the loop shuts down (kept
        #: here: a generator nobody holds would be finalized, closing it, at once).
        self.closer: Any = None

    async def drain(self, wait: float) -> None:
        """Reads what the connection holds, waiting up to ``wait`` seconds for the first."""
        ps = self.pubsub
        while ps is not None:
            msg = await ps.get_message(timeout=wait)
            if msg is None:
                return
            if msg.get("type") in ("message", b"message"):
                self.news.add(bytes(msg["data"]))
            wait = 0.0

    async def drop(self) -> None:
        """Closes the current PubSub, if any."""
        ps, self.pubsub = self.pubsub, None
        if ps is not None:
            await self.close_pubsub(ps)

    @staticmethod
    async def close_pubsub(ps: Any) -> None:
        """Closes a PubSub (its connection goes back to the pool, disconnected)."""
        try:
            await ps.aclose()
        except Exception:
            _abort_pubsub(ps)

    async def aclose(self) -> None:
        """Closes the subscription on its own running loop; a waiting ``watch`` is woken first
        (its socket aborted) and returns [], then the PubSub is closed once no one reads it."""
        self.closed = True
        if self.lock.locked() and self.pubsub is not None:
            _abort_pubsub(self.pubsub)
        async with self.lock:
            await self.drop()

    def shut(self) -> None:
        """Closes the subscription from anywhere: a waiting ``watch`` then returns []."""
        self.closed = True
        ps = self.pubsub
        if ps is None:
            return
        loop = self.loop
        if loop.is_closed():
            self.pubsub = None
            _abort_pubsub(ps)
            return
        if loop.is_running():
            try:
                here = asyncio.get_running_loop() is loop
            except RuntimeError:
                here = False
            if here:
                _abort_pubsub(ps)  # wakes the reader, which then sees ``closed``
            else:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_abort_pubsub, ps)
            return
        self.pubsub = None
        try:
            loop.run_until_complete(self.close_pubsub(ps))
        except Exception:
            _abort_pubsub(ps)


def _abort_pubsub(ps: Any) -> None:
    """Closes a PubSub's socket at once (no await: its loop may be gone or busy elsewhere)."""
    conn = getattr(ps, "connection", None)
    writer = getattr(conn, "_writer", None)
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.transport.abort()


async def _sub_closer(store: RedisStore, loop: asyncio.AbstractEventLoop, sub: _Sub) -> Any:
    """An async generator the loop tracks: its ``shutdown_asyncgens`` closes the subscription."""
    try:
        yield
    finally:
        with store._lock:
            if store._subs.get(loop) is sub:
                del store._subs[loop]
        await sub.aclose()


def _abandon(client: Any) -> None:
    """Closes the sockets of an asyncio client whose event loop is gone (or cannot be entered)."""
    pool = getattr(client, "connection_pool", None)
    conns = [
        *getattr(pool, "_available_connections", ()),
        *getattr(pool, "_in_use_connections", ()),
    ]
    for conn in conns:
        writer = getattr(conn, "_writer", None)
        if writer is not None:
            tr = writer.transport
            with contextlib.suppress(Exception):
                tr.abort()
            if getattr(tr, "_sock", None) is not None:
                try:
                    tr._call_connection_lost(None)
                except Exception:
                    sock = getattr(tr, "_sock", None)
                    if sock is not None:
                        sock.close()
                        tr._sock = None
        conn._reader = None
        conn._writer = None
