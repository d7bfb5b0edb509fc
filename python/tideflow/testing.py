"""Test helpers: a virtual clock (skip days instantly) and a pytest fixture giving an engine.

Use the fixture by adding ``pytest_plugins = ["tideflow.testing"]`` to a ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tideflow.engine import Engine, VirtualClock

__all__ = ["VirtualClock", "engine", "make_engine"]


def make_engine(**kwargs: Any) -> Engine:
    """An in-memory engine on a fresh virtual clock (pass ``store=``/``clock=`` to override)."""
    kwargs.setdefault("clock", VirtualClock())
    return Engine(**kwargs)


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:

    @pytest.fixture
    def engine() -> Iterator[Engine]:
        """An in-memory engine on a virtual clock, fresh for each test."""
        yield make_engine()
