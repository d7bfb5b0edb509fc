"""The crash suites run on SQLite and on every server store: a test that takes the ``server``
fixture gets, per parameter, None (a SQLite file of its own) or the URL of a fresh namespace on
that server (dropped afterwards). A missing server skips, or fails under ``CI=true``."""

from __future__ import annotations

import pytest

from tests.servers import KINDS, namespaced

#: The stores a crash test runs on: SQLite, then the servers.
BACKENDS = ["sqlite", *KINDS]


@pytest.fixture
def server(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite, else a server store URL on a namespace of its own."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        return None
    url, drop = namespaced(kind)
    request.addfinalizer(drop)
    return url
