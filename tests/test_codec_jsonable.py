"""Tests of tideflow.codec.to_jsonable: values converted by their runtime type, without a hint."""

import collections
import datetime as dt
import socket
import uuid
from decimal import Decimal

import pytest

from tideflow.codec import codec_for, to_jsonable
from tideflow.errors import CodecError

from .codec_models import (
    UTC,
    Box,
    Cat,
    Color,
    Level,
    Opaque,
    Order,
    Point,
    Shade,
    an_order,
    json_trip,
)

# --------------------------------------------------------------------------- to_jsonable


def test_to_jsonable_converts_by_runtime_type() -> None:
    order = an_order()
    assert to_jsonable(order) == codec_for(Order).encode(order)  # type: ignore[misc]
    assert to_jsonable(Color.RED) == "red"
    assert to_jsonable(Shade.DARK) == "dark" and type(to_jsonable(Shade.DARK)) is str
    assert to_jsonable(Level.HIGH) == 2 and type(to_jsonable(Level.HIGH)) is int
    assert to_jsonable(Point(1.0, 2.0)) == [1.0, 2.0, ""]
    assert to_jsonable((1, (2, 3))) == [1, [2, 3]]
    assert to_jsonable({3, 1, 2}) == [1, 2, 3]
    assert to_jsonable(frozenset({"b", "a"})) == ["a", "b"]
    assert to_jsonable(b"hi") == "aGk="
    assert to_jsonable(Decimal("1.10")) == "1.10"
    assert to_jsonable(dt.timedelta(minutes=1)) == 60.0
    assert to_jsonable(dt.datetime(2020, 1, 1, tzinfo=UTC)) == "2020-01-01T00:00:00+00:00"
    assert to_jsonable(dt.date(2020, 1, 1)) == "2020-01-01"
    assert to_jsonable(dt.time(12, 30)) == "12:30:00"
    u = uuid.uuid4()
    assert to_jsonable({"u": [u]}) == {"u": [str(u)]}
    assert to_jsonable(collections.OrderedDict(a=1)) == {"a": 1}
    assert to_jsonable({Shade.DARK: 1}) == {"dark": 1}
    out = to_jsonable({"a": [1, 2.5, None, True, "s"]})
    assert out == {"a": [1, 2.5, None, True, "s"]}
    expected = {"content": {"name": "tom", "lives": 1}, "extra": []}
    assert json_trip(to_jsonable(Box(Cat("tom", 1), []))) == expected


def test_to_jsonable_turns_scalar_subclasses_into_plain_values() -> None:
    class MyInt(int):
        pass

    class MyStr(str):
        def __str__(self) -> str:
            return "overridden"

    class MyFloat(float):
        pass

    out = to_jsonable([MyInt(3), MyStr("s"), MyFloat(0.5), {MyStr("k"): 1}])
    assert out == [3, "s", 0.5, {"k": 1}]
    assert [type(x) for x in out] == [int, str, float, dict]  # type: ignore[union-attr]
    assert type(next(iter(out[3]))) is str  # type: ignore[index,call-overload]
    with pytest.raises(CodecError, match="non-finite float"):
        to_jsonable(MyFloat("nan"))


def test_to_jsonable_rejects_unsupported_values() -> None:
    def fn() -> None: ...

    sock = socket.socket()
    try:
        cases: list[tuple[object, str]] = [
            (object(), r"cannot encode values of type object at \$"),
            ({"a": [1, fn]}, r"type function at \$\.a\[1\]"),
            ([sock], r"type socket at \$\[0\]"),
            (Opaque(), "type Opaque"),
            ({1: "a"}, r"dict keys must be str, not int at \$"),
            ([float("nan")], r"non-finite float at \$\[0\]"),
            ({"x": float("inf")}, r"non-finite float at \$\.x"),
            (Cat("a", Opaque()), r"type Opaque at \$\.lives"),  # type: ignore[arg-type]
            (1 + 2j, "type complex"),
        ]
        for value, pattern in cases:
            with pytest.raises(CodecError, match=pattern):
                to_jsonable(value)
    finally:
        sock.close()


def test_to_jsonable_rejects_cycles() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(CodecError, match="nested too deeply"):
        to_jsonable(cyclic)
