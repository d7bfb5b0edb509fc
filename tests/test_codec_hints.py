"""Tests of tideflow.codec.step_hints: the input and output hints read off a step function."""

# Optional[...] and Union[...] are used on purpose: codec_for must handle both spellings.
# ruff: noqa: UP045

import datetime as dt
import functools
import sys
from typing import Any, Optional

import pytest

from tideflow.codec import codec_for, step_hints

from .codec_models import (
    UTC,
    Color,
    Item,
    Level,
    Movie,
    Order,
    Point,
    an_order,
    order_json,
    round_trip,
)

# --------------------------------------------------------------------------- step_hints


def typed_step(ctx: object, value: Order) -> list[Item]:
    return value.items


async def async_step(ctx: object, value: dict[str, int]) -> Optional[Color]:
    return None


def untyped_step(ctx, value):  # type: ignore[no-untyped-def]
    return value


def string_step(ctx: "object", value: "list[Order]") -> "dict[str, Item]":
    return {}


def half_resolvable(ctx: object, value: "NoSuchType") -> "Level":  # type: ignore[name-defined]  # noqa: F821
    return Level.LOW


def no_input(ctx: object) -> int:
    return 1


def kw_only_value(ctx: object, *, value: int) -> str:
    return ""


class Steps:
    def method(self, ctx: object, value: "Movie") -> int:
        return 1

    def __call__(self, ctx: object, value: Point) -> "Point":
        return value


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (typed_step, (Order, list[Item])),
        (async_step, (dict[str, int], Optional[Color])),
        (untyped_step, (Any, Any)),
        (string_step, (list[Order], dict[str, Item])),
        (half_resolvable, ("NoSuchType", Level)),  # left unresolved: its codec says so
        (no_input, (Any, int)),
        (kw_only_value, (Any, str)),
        (Steps().method, (Movie, int)),
        (Steps(), (Point, Point)),
        (functools.partial(typed_step), (Order, list[Item])),
        (lambda ctx, value: value, (Any, Any)),
        (len, (Any, Any)),
    ],
    ids=lambda x: getattr(x, "__name__", type(x).__name__),
)
def test_step_hints(fn: Any, expected: tuple[object, object]) -> None:
    assert step_hints(fn) == expected


def test_step_hints_feed_codec_for() -> None:
    arg, ret = step_hints(string_step)
    assert codec_for(arg).decode([order_json()]) == [an_order()]  # type: ignore[misc]
    assert codec_for(ret).encode is not None


def test_step_hints_with_future_annotations_module(tmp_path: Any, monkeypatch: Any) -> None:
    (tmp_path / "future_steps.py").write_text(
        "from __future__ import annotations\n"
        "import dataclasses, datetime\n"
        "@dataclasses.dataclass\n"
        "class Event:\n"
        "    at: datetime.datetime\n"
        "    tags: list[str] | None = None\n"
        "async def step(ctx, value: list[Event]) -> dict[str, Event]:\n"
        "    return {}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import future_steps  # type: ignore[import-not-found]

    try:
        arg, ret = step_hints(future_steps.step)
        assert arg == list[future_steps.Event]
        assert ret == dict[str, future_steps.Event]
        event = future_steps.Event(dt.datetime(2020, 1, 1, tzinfo=UTC), ["a"])
        assert round_trip(arg, [event]) == [event]
    finally:
        sys.modules.pop("future_steps", None)
