"""The test servers (PostgreSQL, Redis, SecantusDB for MongoDB), as ``scripts/services.sh``
starts them: their URLs come from the environment (``scripts/services.sh env``), and a test that
needs a server that is not running skips saying how to start it, or fails under ``CI=true``.

``make test`` and ``.ci/run`` start the servers themselves; by hand:

    bash scripts/services.sh install && bash scripts/services.sh start
    eval "$(bash scripts/services.sh env | sed 's/^/export /')"

Every test gets a store of its own on the shared server: a fresh schema (PostgreSQL), key prefix
(Redis) or database (MongoDB), dropped afterwards. A test that restarts or kills a server starts
a private one (``tests/servers/private.py``) so that it never disturbs the others.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

__all__ = ["BACKENDS", "ENV", "KINDS", "namespaced", "server_url", "unavailable", "unique_name"]

#: The server kinds, and the variable that holds each one's URL.
ENV = {
    "postgres": "TIDEFLOW_TEST_POSTGRES_URL",
    "redis": "TIDEFLOW_TEST_REDIS_URL",
    "mongo": "TIDEFLOW_TEST_MONGODB_URL",
}
KINDS = tuple(ENV)
#: The durable stores a test parametrised over stores runs on: SQLite, then the servers.
BACKENDS = ["sqlite", *KINDS]

_DRIVERS = {"postgres": "asyncpg", "redis": "redis", "mongo": "pymongo"}


def server_url(kind: str) -> str:
    """The URL of the shared test server of ``kind``; skips (fails under ``CI=true``) without one."""
    url = os.environ.get(ENV[kind])
    why = None
    if not url:
        why = (
            f"no {kind} test server: {ENV[kind]} is not set (start the servers with "
            "`bash scripts/services.sh start` and export `bash scripts/services.sh env`, "
            "or run `make test`, which does both)"
        )
    else:
        try:
            __import__(_DRIVERS[kind])
        except ImportError:
            why = f"the {_DRIVERS[kind]} driver is not installed (make test installs it)"
    if why is not None:
        unavailable(why)
    assert url is not None
    return url


def unavailable(why: str) -> NoReturn:
    """A server a test needs is missing: skips saying ``why``, or fails under ``CI=true``."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {why}")
    pytest.skip(why)


def unique_name(prefix: str = "t") -> str:
    """A fresh schema, key prefix or database name for one test."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def namespaced(kind: str) -> tuple[str, Callable[[], None]]:
    """A URL of the shared ``kind`` server on a namespace of its own (a fresh schema, key prefix
    or database), and a function that drops that namespace; skips (fails under CI) without a
    server."""
    base = server_url(kind)
    name = unique_name()
    parts = urlsplit(base)
    if kind == "mongo":
        url = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
    else:
        option = "schema" if kind == "postgres" else "prefix"
        query = f"{parts.query}&{option}={name}" if parts.query else f"{option}={name}"
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))

    def drop() -> None:
        from tideflow.stores import parse_store

        store: Any = parse_store(url)
        try:
            store.drop()
        finally:
            store.close()

    return url, drop
