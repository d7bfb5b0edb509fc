"""The PostgreSQL store, on asyncpg (extra ``tideflow[postgres]``).

``Engine(store="postgresql://user:password@host:port/db?schema=NAME")`` or
``PostgresStore(url, schema=..., pool=..., timeout=..., lease_clock=...)``. Tideflow's tables live
in their own schema (``tideflow`` by default), created on first use and versioned; several
schemas in one database are independent stores. Every operation is one statement (a few are a
call of a PL/pgSQL function the store installs in its schema), so one server round trip.

``PostgresStore`` is an ``AsyncStore``: ``await engine.run_async`` awaits it on the running loop,
with one asyncpg pool per event loop. Its ``blocking()`` twin, which ``engine.run`` uses, runs the
same coroutines on a private event loop per thread with a connection per thread (asyncpg has no
synchronous API); called from a thread whose own loop is running, it hands the call to a helper
thread. See ``docs/stores.md`` (PostgreSQL).
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import hashlib
import re
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from tideflow.errors import InvalidArgument, SignalError, StoreError, TideflowError, UnknownInstance
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
from tideflow.stores.postgres_sql import (
    MARKER,
    OLDEST_UPGRADABLE,
    SCHEMA_VERSION,
    Statements,
    channel_name,
    schema_ddl,
    upgrade_ddl,
)

__all__ = ["PostgresStore"]

T = TypeVar("T")

_SCHEMES = ("postgresql", "postgres")
#: URL options tideflow reads itself.
_OWN_OPTIONS = ("schema", "timeout", "lease_clock", "application_name")
#: URL options handed to asyncpg unchanged (the ones its DSN parser understands).
_PASSTHROUGH = (
    "sslmode",
    "sslcert",
    "sslkey",
    "sslrootcert",
    "sslcrl",
    "sslpassword",
    "sslnegotiation",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "target_session_attrs",
    "passfile",
    "krbsrvname",
    "gsslib",
)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STATUS_ORDER = ("pending", "running", "suspended", "completed", "failed", "cancelled")
#: Default ``application_name`` of the store's connections (what pg_stat_activity shows).
APPLICATION_NAME = "tideflow"


def _check_schema(name: object) -> str:
    if not isinstance(name, str) or not _IDENT.match(name) or len(name.encode()) > 63:
        raise StoreError(
            f"PostgresStore: the schema name must be an identifier (letters, digits, _; at most "
            f"63 bytes; not starting with a digit), got {name!r}"
        )
    if name.lower().startswith("pg_"):
        raise StoreError(
            f"PostgresStore: schema names starting with pg_ are reserved, got {name!r}"
        )
    return name


def _check_timeout(value: object, shown: str) -> float:
    try:
        t = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StoreError(
            f"PostgresStore: timeout must be a number of seconds, got {shown}"
        ) from None
    if not t > 0 or t != t or t == float("inf"):
        raise StoreError(
            f"PostgresStore: timeout must be a positive number of seconds, got {shown}"
        )
    return t


class _Setting:
    """Everything both faces share: the connection settings, the statements, the schema state."""

    def __init__(
        self,
        url: str | None,
        pool: Any,
        schema: str | None,
        timeout: float | None,
        lease_clock: str | None,
    ) -> None:
        self.asyncpg = import_driver("asyncpg", "postgres", "PostgresStore")
        self.user_pool = pool
        self.password: str | None = None
        url_schema = url_timeout = url_clock = None
        app = APPLICATION_NAME
        passthrough: list[tuple[str, str]] = []
        connect: dict[str, Any] = {}
        if url is None:
            if pool is None:
                raise StoreError("PostgresStore needs a URL (postgresql://...) or pool=")
            # The twin opens connections of its own with the pool's connection arguments
            # (asyncpg keeps them on the pool).
            self.host, self.port, self.database = "pool", None, ""
            args = getattr(pool, "_connect_args", None) or []
            kwargs = getattr(pool, "_connect_kwargs", None)
            if isinstance(kwargs, dict):
                connect = dict(kwargs)
                if args:
                    connect["dsn"] = args[0]
                if isinstance(kwargs.get("password"), str):
                    self.password = kwargs["password"]
            dsn = connect.get("dsn")
            if isinstance(dsn, str) and "://" in dsn:
                try:
                    u = parse_url(dsn, _SCHEMES, "PostgresStore")
                    self.host, self.port, self.database = u.host, u.port or 5432, u.path
                    self.password = self.password or u.password
                except StoreError:
                    pass
            host = connect.get("host")
            if isinstance(host, str):
                self.host = host
                self.port = connect.get("port") or self.port or 5432
            if isinstance(connect.get("database"), str):
                self.database = connect["database"]
            self.scheme = "postgresql"
        else:
            if not isinstance(url, str):
                raise StoreError(f"PostgresStore: the URL must be a str, got {type(url).__name__}")
            u = parse_url(url, _SCHEMES, "PostgresStore")
            self.scheme, self.host, self.port, self.database = (
                u.scheme,
                u.host,
                u.port or 5432,
                u.path,
            )
            self.password = u.password
            seen: set[str] = set()
            for key, value in u.query:
                if key in seen:
                    raise StoreError(
                        f"PostgresStore: the URL option {key!r} is given twice in {u.redacted!r}"
                    )
                seen.add(key)
                if key == "schema":
                    url_schema = value
                elif key == "timeout":
                    url_timeout = _check_timeout(value, repr(value))
                elif key == "lease_clock":
                    url_clock = value
                elif key == "application_name":
                    app = value
                elif key in _PASSTHROUGH:
                    passthrough.append((key, value))
                else:
                    known = ", ".join((*_OWN_OPTIONS, *_PASSTHROUGH))
                    raise StoreError(
                        f"PostgresStore: unknown URL option {key!r} in {u.redacted!r} (known: {known})"
                    )
            if "/" in self.database:
                raise StoreError(
                    f"PostgresStore: the URL {u.redacted!r} has a path that is not a database name"
                )
            host = f"[{self.host}]" if ":" in self.host else self.host
            dsn = f"postgresql://{host}:{self.port}/{quote(self.database, safe='')}"
            if passthrough:
                dsn += "?" + urlencode(passthrough)
            connect = {"dsn": dsn, "user": u.user, "password": u.password}
            if not u.user:
                del connect["user"]
            if u.password is None:
                del connect["password"]
        if schema is not None and url_schema is not None and schema != url_schema:
            raise StoreError(
                f"PostgresStore: the URL names schema {url_schema!r} and schema= says {schema!r}: "
                "give one, or the same in both"
            )
        self.schema = _check_schema(schema if schema is not None else url_schema or "tideflow")
        if timeout is not None and url_timeout is not None and float(timeout) != url_timeout:
            raise StoreError(
                f"PostgresStore: the URL says timeout={url_timeout} and timeout= says {timeout}"
            )
        self.timeout = _check_timeout(
            timeout if timeout is not None else url_timeout or DEFAULT_TIMEOUT, repr(timeout)
        )
        if lease_clock is not None and url_clock is not None and lease_clock != url_clock:
            raise StoreError(
                f"PostgresStore: the URL says lease_clock={url_clock!r} and lease_clock= says "
                f"{lease_clock!r}"
            )
        self.lease_clock = lease_clock if lease_clock is not None else url_clock or "server"
        if self.lease_clock not in ("server", "engine"):
            raise StoreError(
                f"PostgresStore: lease_clock must be 'server' or 'engine', got {self.lease_clock!r}"
            )
        self.engine_clock = self.lease_clock == "engine"
        connect.setdefault("timeout", self.timeout)
        # The server cancels a statement that runs past the timeout (then it certainly did not
        # apply); the client gives up a little later (a server that stopped answering).
        connect["command_timeout"] = self.timeout + min(self.timeout, 1.0)
        settings = dict(connect.get("server_settings") or {})
        settings.setdefault("application_name", app)
        settings.setdefault("statement_timeout", str(max(int(self.timeout * 1000), 1)))
        connect["server_settings"] = settings
        self.connect = connect
        self.quoted = f'"{self.schema}"'
        #: The LISTEN/NOTIFY channel of the store's news (``watch``).
        self.channel = channel_name(self.schema)
        self.sql = Statements(self.quoted, self.channel)
        addr = self.host if self.port is None else f"{self.host}:{self.port}"
        self.addr = f"[{self.host}]:{self.port}" if ":" in str(self.host) else addr
        self.described = f"{self.scheme}://{self.addr}/{self.database}?schema={self.schema}"
        #: Whether the schema was checked (or created) by this store.
        self.ready = False
        #: Whether a connection ever succeeded (after that, a refused connection is retried
        #: until the timeout: the server is restarting).
        self.connected_once = False
        lock_key = hashlib.sha1(f"tideflow:{self.schema}".encode()).digest()[:8]
        self.lock_key = int.from_bytes(lock_key, "big", signed=True)

    # -- messages -------------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        text = redact(text)
        if self.password and len(self.password) >= 3:
            text = text.replace(self.password, "***")
        return text

    def error(self, what: str, exc: BaseException) -> StoreError:
        """The ``StoreError`` for a driver failure while doing ``what``."""
        a = self.asyncpg
        detail = self.scrub(f"{type(exc).__name__}: {exc}")
        where = f"{self.described}: {what}"
        if isinstance(exc, (a.InvalidPasswordError, a.InvalidAuthorizationSpecificationError)):
            msg = f"{where}: the server at {self.addr} refused the credentials ({detail})"
        elif isinstance(exc, a.InvalidCatalogNameError):
            msg = f"{where}: database {self.database!r} does not exist on {self.addr} ({detail})"
        elif isinstance(exc, a.QueryCanceledError):
            msg = (
                f"{where}: timed out after {self.timeout:g} s on {self.addr} (the server "
                f"cancelled the statement; nothing was changed) ({detail})"
            )
        elif isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            msg = (
                f"{where}: timed out after {self.timeout:g} s waiting for {self.addr} (no answer: "
                "whether a write applied is unknown until the instance is read again)"
            )
        elif isinstance(exc, (ConnectionRefusedError,)):
            msg = f"{where}: cannot connect to {self.addr}: connection refused"
        elif self.is_connection_error(exc):
            msg = f"{where}: the connection to {self.addr} failed ({detail})"
        else:
            msg = f"{where} failed on {self.addr}: {detail}"
        return StoreError(msg)

    def is_connection_error(self, exc: BaseException) -> bool:
        a = self.asyncpg
        return isinstance(
            exc,
            (
                OSError,
                ConnectionError,
                a.PostgresConnectionError,
                a.InterfaceError,
                a.AdminShutdownError,
                a.CrashShutdownError,
                a.CannotConnectNowError,
            ),
        ) and not isinstance(exc, (asyncio.TimeoutError, TimeoutError))

    # -- the schema -----------------------------------------------------------------------------

    async def setup(self, conn: Any) -> None:
        """Checks the schema, creating it when it does not exist; refuses a foreign or newer one."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self.lock_key)
            await self._check(conn, create=True)
        self.ready = True

    async def _check(self, conn: Any, create: bool) -> bool:
        """Whether the schema exists as tideflow's (raises for foreign or newer data); with
        ``create``, creates a missing one."""
        nsp = await conn.fetchval("SELECT oid FROM pg_namespace WHERE nspname = $1", self.schema)
        if nsp is not None:
            meta = await conn.fetchval(
                "SELECT c.oid FROM pg_class c WHERE c.relnamespace = $1 AND c.relname = 'meta'", nsp
            )
            if meta is not None:
                try:
                    rows = await conn.fetch(f"SELECT key, value FROM {self.quoted}.meta")
                    values = {r[0]: r[1] for r in rows}
                except self.asyncpg.PostgresError:
                    values = {}
                if values.get("application") != MARKER:
                    raise self.foreign("its table meta has no tideflow marker")
                try:
                    version = int(values.get("schema_version", ""))
                except ValueError:
                    raise self.foreign("its schema_version is not a number") from None
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.described}: schema {self.schema!r} was written by a newer tideflow "
                        f"(schema version {version}; this one knows up to {SCHEMA_VERSION}); "
                        "left unchanged: upgrade tideflow"
                    )
                if version < SCHEMA_VERSION and create:
                    await self._upgrade(conn, version)
                return True
            objects = await conn.fetchval(
                "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = $1)"
                " + (SELECT count(*) FROM pg_proc WHERE pronamespace = $1)"
                " + (SELECT count(*) FROM pg_type WHERE typnamespace = $1 AND typtype <> 'b')",
                nsp,
            )
            if objects:
                raise self.foreign(f"it holds {objects} object(s) that are not tideflow's")
        if not create:
            return False
        for stmt in schema_ddl(self.quoted, self.channel):
            await conn.execute(stmt)
        await conn.execute(
            f"INSERT INTO {self.quoted}.meta (key, value) VALUES ('application', $1), "
            "('schema_version', $2)",
            MARKER,
            str(SCHEMA_VERSION),
        )
        return True

    async def _upgrade(self, conn: Any, version: int) -> None:
        """Brings an older schema to ``SCHEMA_VERSION`` (inside ``setup``'s transaction and
        lock), or refuses one too old to upgrade in place."""
        if version < OLDEST_UPGRADABLE:
            raise StoreError(
                f"{self.described}: schema {self.schema!r} has schema version {version}, older "
                f"than this tideflow upgrades in place (from {OLDEST_UPGRADABLE} to "
                f"{SCHEMA_VERSION}); left unchanged"
            )
        for stmt in upgrade_ddl(self.quoted, self.channel, version):
            await conn.execute(stmt)
        await conn.execute(
            f"UPDATE {self.quoted}.meta SET value = $1 WHERE key = 'schema_version'",
            str(SCHEMA_VERSION),
        )

    def foreign(self, why: str) -> StoreError:
        return StoreError(
            f"{self.described}: schema {self.schema!r} is not a tideflow store ({why}); "
            "left unchanged: choose another schema (?schema=NAME)"
        )

    async def drop(self, conn: Any) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self.lock_key)
            if await self._check(conn, create=False):
                await conn.execute(f"DROP SCHEMA {self.quoted} CASCADE")
        self.ready = False


def _meta(row: Any) -> InstanceMeta:
    return InstanceMeta(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10]
    )


def _unknown(iid: str) -> UnknownInstance:
    return UnknownInstance(f"no workflow instance with id {iid!r}")


def _seq(records: Sequence[bytes]) -> Sequence[bytes]:
    return records if isinstance(records, (list, tuple)) else list(records)


class _Ops:
    """The operations, each one statement on a connection (shared by both faces)."""

    def __init__(self, s: _Setting) -> None:
        self.s = s
        self.sql = s.sql

    async def create(
        self, conn: Any, meta: InstanceMeta, header: bytes, records: Sequence[bytes], token: str
    ) -> StoredInstance | None:
        m = meta
        row = await conn.fetchrow(
            self.sql.create, m.id, m.workflow, m.plan_hash, m.status, m.created_at, m.updated_at,
            m.due_at, m.owner, m.lease_until, m.error, header, _seq(records), token,
        )  # fmt: skip
        return None if row is None else StoredInstance(_meta(row), row[11])

    async def commit(self, conn: Any, c: Commit, token: str) -> None:
        engine_now = c.updated_at if self.s.engine_clock else None
        row = await conn.fetchrow(
            self.sql.commit, c.id, c.expected_version, c.status, c.updated_at, c.due_at,
            c.header, _seq(c.records), c.signals_seen, c.owner, c.error, token, engine_now,
        )  # fmt: skip
        if row[0]:
            return
        for fresh in (False, True):
            if row is None or row[3] is None:
                raise _unknown(c.id)
            _, owner, until, version, stored_token, now = row
            if stored_token == token:
                return  # a resend of a commit of ours that applied
            live = owner is not None and until is not None and until > now
            if (c.owner is not None and not (live and owner == c.owner)) or (
                c.owner is None and live
            ):
                raise LeaseLost(c.id, c.owner, owner if live else None)
            if version != c.expected_version:
                raise StoreConflict(c.id, c.expected_version, version)
            if fresh:
                break
            # the statement's snapshot predates a concurrent commit it waited for: read again
            row = await conn.fetchrow(self.sql.commit_state, c.id, engine_now)
        raise StoreError(
            f"{self.s.described}: the commit of {c.id!r} at version {c.expected_version} did not "
            "apply, and the stored instance gives no reason (a concurrent change): retry"
        )

    async def get(self, conn: Any, id: str) -> StoredInstance | None:
        row = await conn.fetchrow(self.sql.get, id)
        return None if row is None else StoredInstance(_meta(row), row[11])

    async def load(self, conn: Any, id: str) -> Loaded | None:
        row = await conn.fetchrow(self.sql.load, id)
        if row is None:
            return None
        return Loaded(_meta(row), row[11], list(row[12]), list(zip(row[13], row[14], strict=False)))

    async def records(self, conn: Any, id: str, after: int) -> builtins.list[bytes]:
        return list(await conn.fetchval(self.sql.records, id, after))

    async def signals(self, conn: Any, id: str, after: int) -> builtins.list[tuple[int, bytes]]:
        return [(r[0], r[1]) for r in await conn.fetch(self.sql.signals, id, after)]

    async def list(self, conn: Any, q: ListQuery, before: int | None) -> ListPage:
        limit = None if q.limit is None else max(int(q.limit), 0) + 1
        rows = await conn.fetch(
            self.sql.list, before, list(q.statuses) if q.statuses else None, q.workflow,
            q.plan_hash, limit,
        )  # fmt: skip
        cursor = None
        if q.limit is not None and len(rows) > q.limit:
            rows = rows[: q.limit]
            cursor = str(rows[-1][11]) if rows else None
        return ListPage([_meta(r) for r in rows], cursor)

    async def counts(self, conn: Any) -> builtins.list[Count]:
        rows = await conn.fetch(self.sql.counts)

        def order(r: Any) -> tuple[str, int]:
            st = r[1]
            return (r[0], _STATUS_ORDER.index(st) if st in _STATUS_ORDER else len(_STATUS_ORDER))

        return [Count(r[0], r[1], r[2]) for r in sorted(rows, key=order)]

    async def delete(self, conn: Any, id: str) -> bool:
        return bool(await conn.fetchval(self.sql.delete, id))

    async def purge(self, conn: Any, before: float, statuses: Sequence[str]) -> int:
        return int(
            await conn.fetchval(self.sql.purge, before, list(statuses) if statuses else None)
        )

    async def send_signal(
        self, conn: Any, id: str, record: bytes, now: float, token: str, attempt: builtins.list[int]
    ) -> int:
        attempt[0] += 1
        row = await conn.fetchrow(self.sql.signal, id, record, now, token, attempt[0] > 1)
        code = row[0]
        if code == 0:
            return int(row[1])
        if code == 1:
            raise _unknown(id)
        raise SignalError(f"instance {id!r} is {row[2]} and takes no more signals")

    async def due(self, conn: Any, now: float, limit: int | None) -> builtins.list[InstanceMeta]:
        lim = None if limit is None else max(int(limit), 0)
        rows = await conn.fetch(self.sql.due, now, now if self.s.engine_clock else None, lim)
        return [_meta(r) for r in rows]

    async def claim(self, conn: Any, c: Claim) -> builtins.list[InstanceMeta]:
        plans = list(c.plan_hashes)
        if not plans or c.limit <= 0:
            return []
        rows = await conn.fetch(
            self.sql.claim, c.owner, int(c.limit), c.now, c.now if self.s.engine_clock else None,
            plans, c.lease,
        )  # fmt: skip
        rows = sorted(rows, key=lambda r: (r[6] if r[7] is None else r[7], r[11]))
        return [_meta(r) for r in rows]

    async def extend(self, conn: Any, id: str, owner: str, lease: float, now: float) -> float:
        row = await conn.fetchrow(
            self.sql.extend, id, owner, lease, now if self.s.engine_clock else None
        )
        code = row[0]
        if code == 0:
            return float(row[2])
        if code == 1:
            raise _unknown(id)
        raise LeaseLost(id, owner, row[1])

    async def release(self, conn: Any, id: str, owner: str) -> bool:
        row = await conn.fetchrow(self.sql.release, id, owner)
        if not row[1]:
            raise _unknown(id)
        return bool(row[0])


def _parse_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not isinstance(cursor, str) or not cursor.isascii() or not cursor.isdigit():
        raise InvalidArgument(f"invalid list cursor {cursor!r}")
    before = int(cursor)
    if before < 1 or before >= 2**63:
        raise InvalidArgument(f"invalid list cursor {cursor!r}")
    return before


#: Whether an operation may be sent again after its connection failed mid-call: reads, and the
#: writes made idempotent by a token (create, commit, send_signal) or by nature (extend). Claim,
#: release, delete and purge are not (a resend could answer differently): they are retried only
#: when nothing was sent yet (the connection could not be opened).
_RESEND = {
    "create": True, "commit": True, "get": True, "load": True, "records": True,
    "signals": True, "list": True, "counts": True, "delete": False, "purge": False,
    "send_signal": True, "due": True, "claim": False, "extend": True, "release": False,
    "drop": True,
}  # fmt: skip


class _Runner:
    """Runs an operation with its retries: connection failures are retried (with a short
    back-off) until the store's timeout has passed, resending the call only when ``_RESEND``
    allows it."""

    def __init__(self, s: _Setting) -> None:
        self.s = s

    async def run(
        self,
        what: str,
        acquire: Callable[[float], Awaitable[Any]],
        release: Callable[[Any, bool], Awaitable[None]],
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        setup: bool = True,
    ) -> T:
        s = self.s
        deadline = time.monotonic() + s.timeout
        delay = 0.02
        while True:
            sent = False
            broken = False
            conn = None
            try:
                conn = await acquire(max(deadline - time.monotonic(), 0.05))
                s.connected_once = True
                try:
                    if setup and not s.ready:
                        await s.setup(conn)
                    sent = True
                    return await fn(conn, *args)
                except BaseException as exc:
                    broken = s.is_connection_error(exc) or isinstance(
                        exc, (asyncio.TimeoutError, TimeoutError, asyncio.CancelledError)
                    )
                    raise
                finally:
                    await release(conn, broken)
            except TideflowError:
                raise
            except Exception as exc:
                retry = (
                    s.is_connection_error(exc)
                    and s.connected_once
                    and (not sent or _RESEND[what])
                    and time.monotonic() + delay < deadline
                )
                if not retry:
                    raise s.error(what, exc) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)


class PostgresStore:
    """A tideflow store in a PostgreSQL schema (see the module docstring and
    ``docs/stores.md`` (PostgreSQL)).

    ``url``: ``postgresql://user:password@host:port/db`` (or ``postgres://``), with options
    ``schema``, ``timeout``, ``lease_clock``, ``application_name`` and asyncpg's TLS options
    (``sslmode``, ``sslrootcert``, ...). ``pool``: an existing asyncpg pool, used as is by the
    asynchronous face and never closed by the store (the synchronous twin opens connections of
    its own with the pool's connection arguments). ``schema`` (default ``tideflow``; the URL's
    ``?schema=`` may say it instead, but not differently). ``timeout``: seconds that bound
    connecting and every operation. ``lease_clock``: ``"server"`` (PostgreSQL's clock judges
    leases) or ``"engine"`` (the ``now`` the engine passes).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        pool: Any = None,
        schema: str | None = None,
        timeout: float | None = None,
        lease_clock: str | None = None,
    ) -> None:
        self._s = _Setting(url, pool, schema, timeout, lease_clock)
        self._ops = _Ops(self._s)
        self._runner = _Runner(self._s)
        self._res = _Resources()
        self._pools = self._res.pools
        self._pools_lock = self._res.lock
        self._twin: _BlockingPostgresStore | None = None
        self._twin_lock = threading.Lock()
        # A store the engine built from a URL is never closed by anyone: close its connections
        # and loops when it is collected.
        weakref.finalize(self, self._res.close, False)

    # -- settings -------------------------------------------------------------------------------

    @property
    def schema(self) -> str:
        """The schema holding the store's tables."""
        return self._s.schema

    @property
    def timeout(self) -> float:
        """Seconds that bound connecting and every operation."""
        return self._s.timeout

    @property
    def lease_clock(self) -> str:
        """``"server"`` or ``"engine"``."""
        return self._s.lease_clock

    def describe(self) -> str:
        """``postgresql://host:port/db?schema=NAME`` (never the password)."""
        return self._s.described

    def __repr__(self) -> str:
        return f"PostgresStore({self._s.described!r}, lease_clock={self._s.lease_clock!r})"

    # -- connections ----------------------------------------------------------------------------

    async def _pool(self) -> Any:
        if self._s.user_pool is not None:
            return self._s.user_pool
        loop = asyncio.get_running_loop()
        entry = self._pools.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        with self._pools_lock:
            for key, (other, pool) in list(self._pools.items()):
                if other.is_closed() or other is loop:
                    del self._pools[key]
                    _terminate_pool(pool)
        pool = self._s.asyncpg.create_pool(
            min_size=0, max_size=10, reset=_no_reset, **self._s.connect
        )
        await pool  # min_size=0: opens nothing yet
        with self._pools_lock:
            self._pools[id(loop)] = (loop, pool)
        return pool

    async def _acquire(self, budget: float) -> Any:
        # Each event loop keeps one connection of its own outside the pool (its "hot" one), used
        # whenever it is free: a pool's acquire and release cost about 50 µs per operation, a
        # third of a round trip. The pool serves the calls that overlap.
        loop = asyncio.get_running_loop()
        hot = self._res.hot.get(id(loop))
        if hot is not None and hot[0] is loop:
            if not hot[2] and not hot[1].is_closed():
                hot[2] = True
                return hot[1]
        elif self._s.user_pool is None:
            with self._pools_lock:
                for key, (other, conn, _) in list(self._res.hot.items()):
                    if other.is_closed():
                        del self._res.hot[key]
                        _terminate(conn, force=True)
            conn = await asyncio.wait_for(self._s.asyncpg.connect(**self._s.connect), budget)
            with self._pools_lock:
                self._res.hot[id(loop)] = [loop, conn, True]
            return conn
        pool = await self._pool()
        return await pool.acquire(timeout=budget)

    async def _release(self, conn: Any, broken: bool) -> None:
        loop = asyncio.get_running_loop()
        hot = self._res.hot.get(id(loop))
        if hot is not None and hot[1] is conn:
            hot[2] = False
            if broken or conn.is_closed():
                with self._pools_lock:
                    self._res.hot.pop(id(loop), None)
                with contextlib.suppress(Exception):
                    conn.terminate()
                entry = self._pools.get(id(loop))
                if entry is not None and entry[0] is loop:
                    with contextlib.suppress(Exception):
                        await entry[1].expire_connections()  # a server restart: the others too
            return
        pool = await self._pool()
        if broken:
            with contextlib.suppress(Exception):
                conn.terminate()
            with contextlib.suppress(Exception):
                await pool.expire_connections()  # the others may be dead too (a server restart)
            hot = self._res.hot.get(id(loop))
            if hot is not None and hot[0] is loop and not hot[2]:
                with self._pools_lock:
                    self._res.hot.pop(id(loop), None)
                with contextlib.suppress(Exception):
                    hot[1].terminate()
        with contextlib.suppress(Exception):
            await pool.release(conn, timeout=self._s.timeout)

    async def _run(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await self._runner.run(what, self._acquire, self._release, fn, args)

    # -- the operations -------------------------------------------------------------------------

    async def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None:
        """See ``Store.create``."""
        return await self._run("create", self._ops.create, meta, header, records, uuid.uuid4().hex)

    async def commit(self, commit: Commit) -> None:
        """See ``Store.commit``."""
        await self._run("commit", self._ops.commit, commit, uuid.uuid4().hex)

    async def get(self, id: str) -> StoredInstance | None:
        """See ``Store.get``."""
        return await self._run("get", self._ops.get, id)

    async def load(self, id: str) -> Loaded | None:
        """See ``Store.load``."""
        return await self._run("load", self._ops.load, id)

    async def records(self, id: str, after: int) -> builtins.list[bytes]:
        """See ``Store.records``."""
        return await self._run("records", self._ops.records, id, after)

    async def signals(self, id: str, after: int) -> builtins.list[tuple[int, bytes]]:
        """See ``Store.signals``."""
        return await self._run("signals", self._ops.signals, id, after)

    async def list(self, query: ListQuery) -> ListPage:
        """See ``Store.list``."""
        before = _parse_cursor(query.cursor)
        return await self._run("list", self._ops.list, query, before)

    async def counts(self) -> builtins.list[Count]:
        """See ``Store.counts``."""
        return await self._run("counts", self._ops.counts)

    async def delete(self, id: str) -> bool:
        """See ``Store.delete``."""
        return await self._run("delete", self._ops.delete, id)

    async def purge(self, before: float, statuses: Sequence[str]) -> int:
        """See ``Store.purge``."""
        return await self._run("purge", self._ops.purge, before, statuses)

    async def send_signal(self, id: str, record: bytes, now: float) -> int:
        """See ``Store.send_signal``."""
        return await self._run(
            "send_signal", self._ops.send_signal, id, record, now, uuid.uuid4().hex, [0]
        )

    async def due(self, now: float, limit: int | None) -> builtins.list[InstanceMeta]:
        """See ``Store.due``."""
        return await self._run("due", self._ops.due, now, limit)

    async def claim(self, claim: Claim) -> builtins.list[InstanceMeta]:
        """See ``Store.claim``."""
        return await self._run("claim", self._ops.claim, claim)

    async def extend(self, id: str, owner: str, lease: float, now: float) -> float:
        """See ``Store.extend``."""
        return await self._run("extend", self._ops.extend, id, owner, lease, now)

    async def release(self, id: str, owner: str) -> bool:
        """See ``Store.release``."""
        return await self._run("release", self._ops.release, id, owner)

    # -- news (Watchable) -----------------------------------------------------------------------

    async def watch(self, timeout: float) -> builtins.list[str]:
        """See ``Watchable.watch``: LISTEN on a connection of this event loop's own (not the
        pool's), on the schema's channel; the ids heard between calls are kept (a set) and
        returned by the next call."""
        wait = _check_wait(timeout)
        loop = asyncio.get_running_loop()
        lst = self._res.listeners.get(id(loop))
        if lst is None or lst.loop is not loop or lst.closed:
            with self._pools_lock:
                for key, old in list(self._res.listeners.items()):
                    if old.loop.is_closed() or old.loop is loop:
                        del self._res.listeners[key]
                        _close_listener(old.loop, old.shut(), False)
                lst = _Listener(loop, self._s.channel)
                self._res.listeners[id(loop)] = lst
            await self._listen(lst)  # the first call subscribes, then waits as any other
        elif lst.lost:
            await self._listen(lst)
            return []
        if not lst.news and wait > 0:
            lst.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(lst.wake.wait(), wait)
        if lst.closed:
            return []
        if lst.lost:
            await self._listen(lst)
            return []
        news = list(lst.news)
        lst.news.clear()
        return news

    async def _listen(self, lst: _Listener) -> None:
        """(Re)opens ``lst``'s connection and LISTENs on it, retrying connection failures until
        the store's timeout has passed; raises a ``StoreError`` (no password in it) after that."""
        s = self._s
        deadline = time.monotonic() + s.timeout
        delay = 0.02
        old, lst.conn = lst.conn, None
        if old is not None:
            _terminate(old)
        while True:
            conn = None
            try:
                budget = max(deadline - time.monotonic(), 0.05)
                conn = await asyncio.wait_for(s.asyncpg.connect(**s.connect), budget)
                conn.add_termination_listener(lst.on_lost)
                await conn.add_listener(lst.channel, lst.on_news)
            except Exception as exc:
                if conn is not None:
                    _terminate(conn)
                retry = s.is_connection_error(exc) and time.monotonic() + delay < deadline
                if not retry:
                    lst.lost = True  # the next call tries again
                    raise s.error("watch (LISTEN)", exc) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)
                continue
            if lst.closed:  # closed while connecting
                _terminate(conn)
                return
            lst.conn, lst.lost = conn, False
            lst.news.clear()  # what came before a reconnect is not trusted: the caller reads
            return

    # -- the synchronous twin, closing, dropping ------------------------------------------------

    def blocking(self) -> _BlockingPostgresStore:
        """The synchronous twin (``tideflow.stores.base.Store``) over the same data and settings;
        the same object every call."""
        twin = self._twin
        if twin is None:
            with self._twin_lock:
                if self._twin is None:
                    self._twin = _BlockingPostgresStore(self)
                twin = self._twin
        return twin

    def drop(self) -> None:
        """DESTRUCTIVE: drops the store's schema with everything in it (every instance). A schema
        that is not tideflow's is refused and left alone; a missing one is fine."""
        self.blocking().drop()

    def close(self) -> None:
        """Closes every connection the store opened (its pools and the twin's connections). A
        pool given as ``pool=`` is left open. The store opens new connections if used again."""
        self._res.close(True)

    async def aclose(self) -> None:
        """Closes the current event loop's pool gracefully, and everything else as ``close``."""
        loop = asyncio.get_running_loop()
        with self._pools_lock:
            entry = self._pools.pop(id(loop), None)
            hot = self._res.hot.pop(id(loop), None)
            lst = self._res.listeners.pop(id(loop), None)
        if lst is not None and lst.loop is loop:
            conn = lst.shut()
            if conn is not None and not conn.is_closed():
                try:
                    await asyncio.wait_for(conn.close(), self._s.timeout)
                except Exception:
                    _terminate(conn)
        if hot is not None and hot[0] is loop:
            try:
                await asyncio.wait_for(hot[1].close(), self._s.timeout)
            except Exception:
                _terminate(hot[1])
        if entry is not None and entry[0] is loop:
            try:
                await asyncio.wait_for(entry[1].close(), self._s.timeout)
            except Exception:
                _terminate_pool(entry[1])
        self.close()


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


class _Listener:
    """One event loop's LISTEN connection (``watch``) and the ids heard since the last call."""

    def __init__(self, loop: asyncio.AbstractEventLoop, channel: str) -> None:
        self.loop = loop
        self.channel = channel
        self.conn: Any = None
        #: The ids heard since the last ``watch`` returned (a set: news coalesces).
        self.news: set[str] = set()
        #: Set on news, on a lost connection and on closing: wakes a waiting ``watch``.
        self.wake = asyncio.Event()
        #: The connection was lost (or never opened): the next ``watch`` reopens it.
        self.lost = True
        #: Closed by ``close``/``aclose``: a waiting ``watch`` returns [] at once.
        self.closed = False

    def on_news(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if conn is self.conn:
            self.news.add(payload)
            self.wake.set()

    def on_lost(self, conn: Any) -> None:
        if conn is self.conn:
            self.lost = True
            self.wake.set()

    def shut(self) -> Any:
        """Marks the listener closed and wakes a waiting ``watch`` (from any thread); returns
        the connection, for the caller to close."""
        self.closed = True
        conn, self.conn = self.conn, None
        if not self.loop.is_closed() and self.loop.is_running():
            try:
                same = asyncio.get_running_loop() is self.loop
            except RuntimeError:
                same = False
            if same:
                self.wake.set()
            else:
                with contextlib.suppress(RuntimeError):
                    self.loop.call_soon_threadsafe(self.wake.set)
        return conn


def _close_listener(loop: asyncio.AbstractEventLoop, conn: Any, graceful: bool) -> None:
    """Closes a LISTEN connection from any thread: on its loop when that loop is running (its
    transport must be closed by the loop that polls it), else at once."""
    if conn is None or conn.is_closed():
        return
    if loop.is_closed():
        _terminate(conn, force=True)
    elif loop.is_running():
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here:
            conn.terminate()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(conn.terminate)
    elif graceful:
        try:
            loop.run_until_complete(asyncio.wait_for(conn.close(), 2))
        except Exception:
            _terminate(conn)
    else:
        _terminate(conn)


async def _no_reset(conn: Any) -> None:
    """The pool's reset on release: nothing to do (the store leaves no session state: no
    cursors, listeners, settings or session locks), and asyncpg's default reset is a round trip
    per operation."""


def _close_pool(loop: asyncio.AbstractEventLoop, pool: Any) -> None:
    if not loop.is_closed() and not loop.is_running():
        try:
            loop.run_until_complete(asyncio.wait_for(pool.close(), 2))
            loop.run_until_complete(asyncio.sleep(0))  # lets the transports finish closing
            return
        except Exception:
            pass
    _terminate_pool(pool)


def _terminate_pool(pool: Any, force: bool = False) -> None:
    """Closes a pool's connections at once, also when its event loop is already closed."""
    loop = getattr(pool, "_loop", None)
    if not force and (loop is None or not loop.is_closed()):
        try:
            pool.terminate()
            return
        except RuntimeError:
            pass
    for holder in getattr(pool, "_holders", ()):
        conn = getattr(holder, "_con", None)
        if conn is not None:
            _terminate(conn, force)


def _terminate(conn: Any, force: bool = False) -> None:
    """Closes a connection at once, also when its event loop is already closed or will not run
    again (``force``): then asyncio can no longer close its transport, so the socket is closed
    by hand."""
    loop = getattr(conn, "_loop", None)
    if not force and (loop is None or not loop.is_closed()):
        try:
            conn.terminate()
            return
        except RuntimeError:
            pass
    transport: Any = getattr(conn, "_transport", None)
    conn._aborted = True  # what asyncpg's own terminate() marks first (no "unclosed" warning)
    sock = getattr(transport, "_sock", None)
    if transport is not None and sock is not None:
        transport._sock = None  # nothing left for the transport's __del__ to warn about
        sock.close()


class _Slot:
    """One thread's private event loop and connection. When the thread ends, its
    ``threading.local`` lets go of the slot, and a finalizer closes both."""

    __slots__ = ("__weakref__", "cell", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        #: The connection, in a cell that the finalizer shares (it must not hold the slot).
        self.cell: builtins.list[Any] = [None]
        weakref.finalize(self, _close_slot, loop, self.cell)

    @property
    def conn(self) -> Any:
        return self.cell[0]

    @conn.setter
    def conn(self, value: Any) -> None:
        self.cell[0] = value


def _close_slot(loop: asyncio.AbstractEventLoop, cell: builtins.list[Any]) -> None:
    conn, cell[0] = cell[0], None
    if conn is not None and not conn.is_closed():
        _terminate(conn, force=True)
    if not loop.is_closed() and not loop.is_running():
        loop.close()


class _BlockingPostgresStore:
    """The synchronous twin of a ``PostgresStore`` (what its ``blocking()`` returns): each call
    runs the store's coroutine on this thread's private event loop, over this thread's
    connection (one round trip, as on the asynchronous face)."""

    def __init__(self, parent: PostgresStore) -> None:
        self._parent = parent
        self._s = parent._s
        self._ops = parent._ops
        self._runner = parent._runner
        self._local = threading.local()
        self._res = parent._res

    def describe(self) -> str:
        """See ``PostgresStore.describe``."""
        return self._s.described

    def __repr__(self) -> str:
        return f"PostgresStore({self._s.described!r}).blocking()"

    async def _acquire(self, budget: float) -> Any:
        slot: _Slot = self._local.slot
        conn = slot.conn
        if conn is None or conn.is_closed():
            slot.conn = None
            kwargs = dict(self._s.connect)
            kwargs["timeout"] = min(budget, self._s.timeout)
            conn = await self._s.asyncpg.connect(**kwargs)
            slot.conn = conn
        return conn

    async def _release(self, conn: Any, broken: bool) -> None:
        if broken:
            _terminate(conn)
            self._local.slot.conn = None

    def _run(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any, setup: bool = True) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:  # a sync call inside a running loop (an async step): not on this thread's loop
            return self._helper_pool().submit(self._run, what, fn, *args, setup=setup).result()
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None or slot.loop.is_closed():
            slot = self._local.slot = _Slot(asyncio.new_event_loop())
            with self._res.lock:
                self._res.slots.add(slot)
        loop = slot.loop
        coro = self._runner.run(what, self._acquire, self._release, fn, args, setup)
        return loop.run_until_complete(coro)

    def _helper_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        res = self._res
        with res.lock:
            if res.helper is None:
                res.helper = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix="tideflow-postgres"
                )
            return res.helper

    # -- the operations -------------------------------------------------------------------------

    def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None:
        """See ``Store.create``."""
        return self._run("create", self._ops.create, meta, header, records, uuid.uuid4().hex)

    def commit(self, commit: Commit) -> None:
        """See ``Store.commit``."""
        self._run("commit", self._ops.commit, commit, uuid.uuid4().hex)

    def get(self, id: str) -> StoredInstance | None:
        """See ``Store.get``."""
        return self._run("get", self._ops.get, id)

    def load(self, id: str) -> Loaded | None:
        """See ``Store.load``."""
        return self._run("load", self._ops.load, id)

    def records(self, id: str, after: int) -> builtins.list[bytes]:
        """See ``Store.records``."""
        return self._run("records", self._ops.records, id, after)

    def signals(self, id: str, after: int) -> builtins.list[tuple[int, bytes]]:
        """See ``Store.signals``."""
        return self._run("signals", self._ops.signals, id, after)

    def list(self, query: ListQuery) -> ListPage:
        """See ``Store.list``."""
        before = _parse_cursor(query.cursor)
        return self._run("list", self._ops.list, query, before)

    def counts(self) -> builtins.list[Count]:
        """See ``Store.counts``."""
        return self._run("counts", self._ops.counts)

    def delete(self, id: str) -> bool:
        """See ``Store.delete``."""
        return self._run("delete", self._ops.delete, id)

    def purge(self, before: float, statuses: Sequence[str]) -> int:
        """See ``Store.purge``."""
        return self._run("purge", self._ops.purge, before, statuses)

    def send_signal(self, id: str, record: bytes, now: float) -> int:
        """See ``Store.send_signal``."""
        return self._run(
            "send_signal", self._ops.send_signal, id, record, now, uuid.uuid4().hex, [0]
        )

    def due(self, now: float, limit: int | None) -> builtins.list[InstanceMeta]:
        """See ``Store.due``."""
        return self._run("due", self._ops.due, now, limit)

    def claim(self, claim: Claim) -> builtins.list[InstanceMeta]:
        """See ``Store.claim``."""
        return self._run("claim", self._ops.claim, claim)

    def extend(self, id: str, owner: str, lease: float, now: float) -> float:
        """See ``Store.extend``."""
        return self._run("extend", self._ops.extend, id, owner, lease, now)

    def release(self, id: str, owner: str) -> bool:
        """See ``Store.release``."""
        return self._run("release", self._ops.release, id, owner)

    def drop(self) -> None:
        """See ``PostgresStore.drop``."""
        self._run("drop", self._s.drop, setup=False)

    def close(self) -> None:
        """See ``PostgresStore.close``."""
        self._res.close(True)


class _Resources:
    """What a store opened: a pool per event loop (asynchronous face), a loop and connection per
    thread (the twin), the twin's helper threads. Kept apart from the store so that a finalizer
    can close them when the store is collected."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pools: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}
        #: Per event loop, its hot connection (outside the pool): [loop, connection, in use].
        self.hot: dict[int, list[Any]] = {}
        #: Per event loop, its LISTEN connection and news (``watch``).
        self.listeners: dict[int, _Listener] = {}
        self.slots: weakref.WeakSet[_Slot] = weakref.WeakSet()
        self.helper: concurrent.futures.ThreadPoolExecutor | None = None

    def close(self, graceful: bool) -> None:
        try:
            asyncio.get_running_loop()
            graceful = False  # no run_until_complete inside a running loop
        except RuntimeError:
            pass
        with self.lock:
            helper, self.helper = self.helper, None
        if helper is not None:
            helper.shutdown(wait=graceful)
        with self.lock:
            hot = list(self.hot.values())
            self.hot.clear()
            listeners = list(self.listeners.values())
            self.listeners.clear()
        for lst in listeners:
            _close_listener(lst.loop, lst.shut(), graceful)
        for loop, conn, _ in hot:
            idle = not loop.is_closed() and not loop.is_running()
            if graceful and idle and not conn.is_closed():
                try:
                    loop.run_until_complete(asyncio.wait_for(conn.close(), 2))
                    continue
                except Exception:
                    pass
            _terminate(conn, force=loop.is_closed() or not graceful)
        with self.lock:
            pools = list(self.pools.values())
            self.pools.clear()
            slots = list(self.slots)
            self.slots.clear()
        for loop, pool in pools:
            if graceful:
                _close_pool(loop, pool)
            else:
                _terminate_pool(pool, force=True)
        for slot in slots:
            loop = slot.loop
            conn, slot.conn = slot.conn, None
            idle = not loop.is_closed() and not loop.is_running()
            if conn is not None and not conn.is_closed():
                if graceful and idle:
                    try:
                        loop.run_until_complete(asyncio.wait_for(conn.close(), 2))
                    except Exception:
                        _terminate(conn, force=True)
                else:
                    _terminate(conn, force=not loop.is_running())
            if idle:
                if graceful:
                    loop.run_until_complete(asyncio.sleep(0))  # the transports finish closing
                loop.close()
