"""Tests of tideflow.codec: what decoding and encoding refuse, and how the error reads."""

# Optional[...] and Union[...] are used on purpose: codec_for must handle both spellings.
# ruff: noqa: UP045

import collections
import dataclasses
import datetime as dt
import enum
import typing
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Literal, Optional, Union

import pytest

from tideflow.codec import codec_for
from tideflow.errors import CodecError

from .codec_models import (
    Box,
    Cat,
    Color,
    Dog,
    Item,
    Level,
    Movie,
    Opaque,
    Order,
    Point,
    Positive,
    Tree,
    decode_error,
    order_json,
    round_trip,
)

# --------------------------------------------------------------------------- decode errors


def test_decode_error_wrong_type_names_the_path() -> None:
    data = order_json()
    data["items"][1]["qty"] = "x"
    assert decode_error(Order, data) == "expected int at $.items[1].qty, got str 'x'"


def test_decode_error_missing_field() -> None:
    data = order_json()
    del data["items"][0]["sku"]
    assert decode_error(Order, data) == "missing required field 'sku' of Item at $.items[0]"


def test_decode_error_unknown_field() -> None:
    data = order_json()
    data["items"][0]["colour"] = []
    assert decode_error(Order, data) == "unknown field 'colour' for Item at $.items[0]"


def test_decode_error_bad_iso_string() -> None:
    data = order_json()
    data["items"][0]["when"] = "yesterday"
    msg = decode_error(Order, data)
    assert msg.startswith("invalid ISO 8601 string for datetime")
    assert "at $.items[0].when, got str 'yesterday'" in msg


def test_decode_error_bad_base64() -> None:
    msg = decode_error(dict[str, bytes], {"key with space": "not base64!"})
    assert msg.startswith("invalid base64 string for bytes")
    assert "at $['key with space']" in msg
    assert "at $[0]" in decode_error(list[bytes], ["aG k="])  # no silently skipped characters


@pytest.mark.parametrize(
    ("hint", "value", "expected"),
    [
        (Decimal, "1.2.3", "invalid decimal string for Decimal"),
        (Decimal, 1.5, "expected Decimal (as a decimal string) at $"),
        (uuid.UUID, "xyz", "invalid UUID string for UUID"),
        (dt.timedelta, "1s", "expected timedelta (as a number of seconds)"),
        (dt.date, "2024-13-01", "invalid ISO 8601 string for date"),
        (list[int], {"a": 1}, "expected list[int] at $, got dict"),
        (tuple[int, str], [1], "expected tuple[int, str] at $, got list [1]"),
        (tuple[int, str], [1, 2], "expected str at $[1], got int 2"),
        (Point, [1.0], "expected Point at $"),
        (Point, [1.0, "y"], "expected float at $[1], got str 'y'"),
        (dict[str, int], {"a": 1, "b": None}, "expected int at $.b, got None"),
        (Movie, {"year": 1}, "missing required field 'title' of Movie at $"),
        (Movie, {"title": "x", "year": 1, "released": 5}, "at $.released"),
        (Positive, {"n": -1}, "could not construct Positive: ValueError: n must be positive at $"),
        (Order, [], "expected Order (a JSON object) at $, got list []"),
        (Literal["a", "b"], "c", "expected Literal['a', 'b'] at $, got str 'c'"),
        (Literal[1], True, "expected Literal[1] at $, got bool True"),
        (Union[int, Color], "blue", "expected int | Color at $, got str 'blue'"),
        (set[list[int]], [[1]], "cannot build set[list[int]]"),
        (
            Tree,
            {"name": "r", "children": [{"name": "a", "children": [{}]}]},
            "missing required field 'name' of Tree at $.children[0].children[0]",
        ),
        (Box[int], {"content": 1, "extra": ["x"]}, "expected int at $.extra[0]"),
    ],
    ids=repr,
)
def test_decode_errors(hint: object, value: object, expected: str) -> None:
    assert expected in decode_error(hint, value)


def test_union_reports_the_deepest_failure() -> None:
    msg = decode_error(Union[Cat, Dog], {"name": "rex", "good": "yes"})
    assert msg == "expected bool at $.good, got str 'yes'"
    msg = decode_error(Optional[list[Order]], [{"oops": 1}])
    assert "at $[0]" in msg


def test_decode_error_keeps_the_cause() -> None:
    with pytest.raises(CodecError) as info:
        codec_for(Positive).decode({"n": 0})  # type: ignore[misc]
    assert isinstance(info.value.__cause__, ValueError)
    assert isinstance(info.value, TypeError)  # CodecError is a TypeError too


def test_dataclass_defaults_are_honoured() -> None:
    data = order_json()
    for key in ("note", "tags", "level"):
        del data[key]
    back = codec_for(Order).decode(data)  # type: ignore[misc]
    assert (back.note, back.tags, back.level) == (None, set(), Level.LOW)
    assert codec_for(Point).decode([1, 2]) == Point(1.0, 2.0, "")  # type: ignore[misc]


def test_typed_dict_keeps_undeclared_keys() -> None:
    # encode passes undeclared keys through, so decode must accept them (a checkpoint that was
    # written must always be readable on replay)
    value = {"title": "x", "year": 1, "extra": [1]}
    assert round_trip(Movie, value) == value


# --------------------------------------------------------------------------- encode errors


@pytest.mark.parametrize(
    ("hint", "value", "expected"),
    [
        (Order, {"id": 1}, "missing required field 'items' of Order at $, got dict"),
        (list[Item], [1], "expected Item at $[0], got int 1"),
        (Color, "red", "expected Color at $, got str 'red'"),
        (dt.date, dt.datetime(2020, 1, 1), "expected date at $, got datetime"),
        (set[Color], "ab", "expected set[Color] at $, got str 'ab'"),
        (dict[str, Color], {"k": 1}, "expected Color at $.k"),
        (tuple[int, Color], (1, 2, 3), "expected tuple[int, Color] at $"),
        (Union[int, Color], "x", "expected int | Color at $, got str 'x'"),
        (bytes, "text", "expected bytes at $, got str 'text'"),
    ],
    ids=repr,
)
def test_encode_errors(hint: object, value: object, expected: str) -> None:
    encode = codec_for(hint).encode
    assert encode is not None
    with pytest.raises(CodecError) as info:
        encode(value)
    assert expected in str(info.value)


def test_abstract_containers_accept_any_implementation() -> None:
    import types

    encode = codec_for(Sequence[int]).encode
    assert encode is not None and encode(collections.deque([1, 2])) == [1, 2]
    encode = codec_for(Mapping[str, Color]).encode
    assert encode is not None
    assert encode(types.MappingProxyType({"a": Color.RED})) == {"a": "red"}
    assert round_trip(Sequence[Color], (Color.RED,)) == [Color.RED]


def test_union_encode_picks_the_member_by_class() -> None:
    encode = codec_for(Union[int, Color, dt.date]).encode
    assert encode is not None
    assert encode(Color.RED) == "red"
    assert encode(3) == 3
    assert encode(dt.date(2020, 1, 2)) == "2020-01-02"
    enc_both = codec_for(Union[dt.date, dt.datetime]).encode
    assert enc_both is not None  # the exact class wins over the base class
    assert enc_both(dt.datetime(2020, 1, 2, 3)) == "2020-01-02T03:00:00"


# --------------------------------------------------------------------------- unsupported hints


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        (Opaque, "cannot encode values of type Opaque"),
        (list[Opaque], "cannot encode values of type Opaque: .* \\(in list\\[Opaque\\]\\)"),
        (dict[int, str], "dict\\[int, str\\]: dict keys must be str"),
        (typing.Callable[[int], int], "cannot encode values of type"),
        (complex, "cannot encode values of type complex"),
        ("Order", "unresolved forward reference"),
        (enum.Enum("Bad", {"A": (1, 2)}), "cannot encode values of type Bad: its values"),
        (Literal[b"x"], "Literal values must be JSON scalars"),
        (Box, None),  # a bare generic dataclass works: T is Any
    ],
    ids=repr,
)
def test_unsupported_hints(hint: object, expected: str | None) -> None:
    if expected is None:
        assert codec_for(hint).decode({"content": 1, "extra": []}) == Box(1, [])  # type: ignore[misc]
        return
    with pytest.raises(CodecError, match=expected):
        codec_for(hint)


def test_unresolvable_dataclass_hints_raise_codec_error() -> None:
    @dataclasses.dataclass
    class Local:
        other: "NoSuchType"  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(CodecError, match="Local: its type hints cannot be resolved"):
        codec_for(Local)


def test_float_decode_rejects_an_int_too_large_for_a_float() -> None:
    with pytest.raises(CodecError, match=r"expected float at \$, got int"):
        codec_for(float).decode(10**400)  # type: ignore[misc]
