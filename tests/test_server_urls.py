"""What the server stores share, without a server: URL parsing and redaction, the dispatch of
``Engine(store=url)`` on the scheme, importing no driver until a store is built, and a missing
driver named with the extra that installs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tideflow import Engine, StoreError
from tideflow.stores._server import parse_url, redact

SECRET = "s3cr3t-Pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://app:{SECRET}@db:5432/prod", "postgresql://app:***@db:5432/prod"),
        (f"redis://:{SECRET}@cache:6379/0?prefix=x", "redis://:***@cache:6379/0?prefix=x"),
        (f"mongodb://u:{SECRET}@a:1,b:2/db", "mongodb://u:***@a:1,b:2/db"),
        ("mongodb://u@a/db", "mongodb://u@a/db"),
        ("redis://cache:6379", "redis://cache:6379"),
        (f"postgres://u:{SECRET}@h/d#frag", "postgres://u:***@h/d#frag"),
        (f"postgres://u:p@ss:{SECRET}@h/d", "postgres://u:***@h/d"),  # an unescaped @ in it
        ("not a url", "not a url"),
    ],
)
def test_redact_hides_the_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert SECRET not in redact(url)


def test_parse_url_splits_and_unquotes() -> None:
    u = parse_url(
        "postgresql://app%40x:p%2Fw@db.example:6543/my%20db?schema=s&sslmode=disable",
        ("postgresql", "postgres"),
        "PostgresStore",
    )
    assert (u.host, u.port, u.user, u.password, u.path) == (
        "db.example",
        6543,
        "app@x",
        "p/w",
        "my db",
    )
    assert u.query == [("schema", "s"), ("sslmode", "disable")]
    assert "p/w" not in u.redacted and "p%2Fw" not in u.redacted


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"postgresql://u:{SECRET}@h:99999/db", "malformed URL"),
        (f"postgresql://u:{SECRET}@/db", "names no host"),
        (f"redis://u:{SECRET}@h/0", "postgresql:// or postgres:// was expected"),
        (f"postgresql://u:{SECRET}@h/db#x", "fragment"),
    ],
)
def test_a_malformed_url_is_a_store_error_without_the_password(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as err:
        parse_url(url, ("postgresql", "postgres"), "PostgresStore")
    assert SECRET not in str(err.value) and SECRET not in repr(err.value)
    assert err.value.__cause__ is None or SECRET not in str(err.value.__cause__)


def test_an_unknown_scheme_is_refused_without_the_password() -> None:
    with pytest.raises(StoreError, match="unknown store") as err:
        Engine(store=f"mysql://root:{SECRET}@h/db")
    assert SECRET not in str(err.value)


DRIVERS = {"postgres": "asyncpg", "redis": "redis", "mongo": "pymongo"}
URLS = {
    "postgres": "postgresql://u@127.0.0.1:1/db",
    "redis": "redis://127.0.0.1:1/0",
    "mongo": "mongodb://127.0.0.1:1/db",
}


def test_importing_tideflow_and_its_stores_imports_no_driver() -> None:
    code = (
        "import sys\n"
        "import tideflow, tideflow.stores\n"
        "from tideflow.stores import PostgresStore, RedisStore, MongoStore\n"
        "import tideflow.stores.postgres, tideflow.stores.redis, tideflow.stores.mongo\n"
        "print(sorted(m for m in ('asyncpg', 'redis', 'pymongo', 'bson', 'motor') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("kind", sorted(DRIVERS))
def test_a_missing_driver_is_a_store_error_naming_the_extra(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(sys.modules):
        if name == DRIVERS[kind] or name.startswith(DRIVERS[kind] + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, DRIVERS[kind], None)  # import raises ImportError
    with pytest.raises(StoreError, match=rf"pip install 'tideflow\[{kind}\]'"):
        Engine(store=URLS[kind])
