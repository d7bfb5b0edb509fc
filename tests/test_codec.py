"""Tests of tideflow.codec: typed values <-> JSON-native values, driven by type hints."""

# Optional[...] and Union[...] are used on purpose: codec_for must handle both spellings.
# ruff: noqa: UP045

import collections
import dataclasses
import datetime as dt
import enum
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import typing
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Generic, Literal, NamedTuple, Optional, TypedDict, TypeVar, Union

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tideflow.codec import JSONValue, TypeCodec, codec_for, describe, step_hints, to_jsonable
from tideflow.errors import CodecError

try:
    from typing import NotRequired, Required
except ImportError:  # Python 3.10
    from typing_extensions import NotRequired, Required


# --------------------------------------------------------------------------- model types


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Shade(str, enum.Enum):
    DARK = "dark"
    LIGHT = "light"


class Ratio(enum.Enum):
    HALF = 0.5
    ONE = 1.0


@dataclasses.dataclass(frozen=True)
class Item:
    sku: str
    qty: int
    colors: list[Color]
    when: dt.datetime


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    items: list[Item]
    total: Decimal
    note: Optional[str] = None
    tags: set[str] = dataclasses.field(default_factory=set)
    level: Level = Level.LOW


@dataclasses.dataclass(slots=True, kw_only=True)
class Blob:
    data: bytes
    ttl: dt.timedelta
    day: dt.date
    at: dt.time


@dataclasses.dataclass
class Tree:
    name: str
    children: "list[Tree]" = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Positive:
    n: int

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError("n must be positive")


@dataclasses.dataclass
class Computed:
    a: int
    b: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.b = self.a * 2


T = TypeVar("T")


@dataclasses.dataclass
class Box(Generic[T]):
    content: T
    extra: list[T]


class Movie(TypedDict):
    title: str
    year: int
    released: NotRequired[dt.date]


class Partial(TypedDict, total=False):
    a: int
    when: dt.datetime


class Point(NamedTuple):
    x: float
    y: float
    label: str = ""


@dataclasses.dataclass
class Cat:
    name: str
    lives: int


@dataclasses.dataclass
class Dog:
    name: str
    good: bool


class Opaque:
    pass


UTC = dt.timezone.utc
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def json_trip(value: object) -> Any:
    """What the Rust side does: serialize JSON-native values, then parse them back."""
    return json.loads(json.dumps(value, allow_nan=False))


def round_trip(hint: object, value: object) -> Any:
    codec = codec_for(hint)
    encoded = codec.encode(value) if codec.encode is not None else value
    parsed = json_trip(encoded)
    return codec.decode(parsed) if codec.decode is not None else parsed


def an_order() -> Order:
    when = dt.datetime(2024, 5, 17, 13, 45, 1, 123456, tzinfo=IST)
    return Order(
        id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        items=[Item("a", 2, [Color.RED, Color.GREEN], when), Item("b", 1, [], when)],
        total=Decimal("19.990"),
        tags={"x", "y"},
        level=Level.HIGH,
    )


# --------------------------------------------------------------------------- round trips

ROUND_TRIPS: list[tuple[object, object]] = [
    (int, 7),
    (int, -(2**70)),
    (float, 2.5),
    (str, "héllo"),
    (bool, False),
    (None, None),
    (type(None), None),
    (list[int], [1, 2, 3]),
    (list[Color], [Color.GREEN, Color.RED]),
    (Sequence[int], [3, 1]),
    (set[int], {3, 1, 2}),
    (frozenset[str], frozenset({"b", "a"})),
    (tuple[int, str], (1, "a")),
    (tuple[int, ...], (1, 2, 3)),
    (tuple[()], ()),
    (tuple[Color, dt.date], (Color.RED, dt.date(2020, 2, 29))),
    (dict[str, float], {"a": 1.5, "b": -0.0}),
    (dict[str, Level], {"x": Level.HIGH}),
    (dict[Color, int], {Color.RED: 1}),
    (dict[Literal["a", "b"], int], {"a": 1}),
    (Mapping[str, list[Item]], {"k": an_order().items}),
    (list, [1, "a", None]),
    (dict, {"a": [1]}),
    (tuple, (1, 2)),
    (Optional[int], None),
    (Optional[int], 3),
    (int | None, 4),
    (Optional[Color], Color.RED),
    (Optional[Color], None),
    (Union[int, str], "s"),
    (Union[int, frozenset[str]], frozenset({"a"})),
    (Union[Cat, Dog], Dog("rex", True)),
    (Union[Cat, Dog], Cat("tom", 9)),
    (Union[dt.datetime, dt.date], dt.date(2020, 1, 1)),
    (Union[dt.datetime, dt.date], dt.datetime(2020, 1, 1, 12, tzinfo=UTC)),
    (Literal["a", 1, None], 1),
    (Literal["a", 1, None], "a"),
    (Literal[Color.RED], Color.RED),
    (Color, Color.GREEN),
    (Level, Level.LOW),
    (Shade, Shade.DARK),
    (Ratio, Ratio.ONE),
    (Order, an_order()),
    (list[Order], [an_order(), an_order()]),
    (
        Blob,
        Blob(
            data=b"\x00\xffhi",
            ttl=dt.timedelta(days=2, microseconds=7),
            day=dt.date(1999, 12, 31),
            at=dt.time(23, 59, 58, 1, tzinfo=UTC),
        ),
    ),
    (Tree, Tree("root", [Tree("a"), Tree("b", [Tree("c")])])),
    (Computed, Computed(4)),
    (Box[Item], Box(an_order().items[0], an_order().items)),
    (Box[int], Box(1, [2, 3])),
    (Movie, Movie(title="Heat", year=1995, released=dt.date(1995, 12, 15))),
    (Movie, Movie(title="Heat", year=1995)),
    (Partial, Partial()),
    (Partial, Partial(when=dt.datetime(2001, 1, 1, tzinfo=UTC))),
    (Point, Point(1.0, 2.5, "p")),
    (list[Point], [Point(0.0, 1.0)]),
    (dt.datetime, dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=IST)),
    (dt.datetime, dt.datetime(2024, 1, 2, 3, 4, 5)),
    (dt.date, dt.date(2024, 1, 2)),
    (dt.time, dt.time(1, 2, 3, 4)),
    (dt.timedelta, dt.timedelta(days=-3, seconds=5, microseconds=999999)),
    (uuid.UUID, uuid.uuid4()),
    (Decimal, Decimal("3.14159265358979323846264338327950288419716939937510")),
    (bytes, bytes(range(256))),
    (bytearray, bytearray(b"abc")),
    (Any, {"a": [1, 2.5, None, True]}),
    (object, [1, "x"]),
    (JSONValue, {"a": [1, {"b": None}]}),
    (typing.Annotated[int, "meta"], 5),
    (typing.NewType("UserId", int), 5),
]


@pytest.mark.parametrize(("hint", "value"), ROUND_TRIPS, ids=lambda x: describe(x)[:40])
def test_round_trip(hint: object, value: object) -> None:
    back = round_trip(hint, value)
    assert back == value
    if value is not None and hint not in (Any, object, JSONValue, list, tuple):
        assert type(back) is type(value)


def test_round_trip_preserves_nested_types_and_timezone() -> None:
    order = an_order()
    back = round_trip(Order, order)
    assert isinstance(back, Order)
    assert isinstance(back.items[0], Item)
    assert back.items[0].colors == [Color.RED, Color.GREEN]
    assert isinstance(back.items[0].colors[0], Color)
    assert back.items[0].when.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert isinstance(back.tags, set)
    assert back.level is Level.HIGH
    assert str(back.total) == "19.990"  # exact, trailing zero kept


def test_encoded_form_is_json_native_and_readable() -> None:
    encoded = codec_for(Order).encode(an_order())  # type: ignore[misc]
    assert encoded["id"] == "12345678-1234-5678-1234-567812345678"
    assert encoded["total"] == "19.990"
    assert encoded["items"][0]["colors"] == ["red", "green"]
    assert encoded["items"][0]["when"] == "2024-05-17T13:45:01.123456+05:30"
    assert encoded["tags"] == ["x", "y"]  # sets are sorted: checkpoints are deterministic
    assert encoded["level"] == 2
    assert json_trip(encoded) == encoded
    blob = Blob(data=b"hi", ttl=dt.timedelta(seconds=1.5), day=dt.date(2000, 1, 1), at=dt.time(1))
    assert codec_for(Blob).encode(blob) == {  # type: ignore[misc]
        "data": "aGk=",
        "ttl": 1.5,
        "day": "2000-01-01",
        "at": "01:00:00",
    }
    assert codec_for(Point).encode(Point(1.0, 2.0)) == [1.0, 2.0, ""]  # type: ignore[misc]
    assert codec_for(Computed).encode(Computed(3)) == {"a": 3}  # type: ignore[misc]


@pytest.mark.parametrize(
    "hint",
    [
        int,
        str,
        float,
        bool,
        None,
        Any,
        object,
        list[int],
        dict[str, float],
        tuple[int, str],
        Optional[list[str]],
        Union[int, str],
        Literal["a", "b"],
        list,
        dict,
        tuple[int, ...],
        dict[str, list[dict[str, int]]],
        TypedDict("Flat", {"a": int, "b": list[str]}),
    ],
    ids=describe,
)
def test_json_native_hints_need_no_encoder(hint: object) -> None:
    assert codec_for(hint).encode is None


@pytest.mark.parametrize(
    "hint",
    [
        set[int],
        list[Color],
        dict[str, dt.date],
        tuple[int, Item],
        Optional[Order],
        Point,
        Movie,
        Literal[Color.RED],
        Union[int, Color],
        Sequence[int],
        Mapping[str, int],
    ],
    ids=describe,
)
def test_non_native_hints_have_an_encoder(hint: object) -> None:
    assert codec_for(hint).encode is not None


def test_any_has_no_decoder_and_typed_hints_do() -> None:
    assert codec_for(Any).decode is None
    assert codec_for(object).decode is None
    assert codec_for(int).decode is not None


def test_codec_for_is_cached_and_union_order_matters() -> None:
    assert codec_for(list[Order]) is codec_for(list[Order])
    assert isinstance(codec_for(int), TypeCodec)
    assert type(codec_for(Union[int, float]).decode(3)) is int  # type: ignore[misc]
    assert type(codec_for(Union[float, int]).decode(3)) is float  # type: ignore[misc]


def test_unhashable_hint_still_compiles() -> None:
    codec = codec_for(typing.Annotated[list[Color], {"unhashable": []}])
    assert codec.decode(["red"]) == [Color.RED]  # type: ignore[misc]


def test_scalar_decoding_is_strict() -> None:
    assert type(codec_for(float).decode(3)) is float  # type: ignore[misc]
    for hint, bad in [
        (int, True),
        (int, 1.0),
        (int, "1"),
        (bool, 1),
        (float, True),
        (str, 1),
        (None, 0),
        (float, "1.5"),
    ]:
        with pytest.raises(CodecError, match=r"expected .* at \$"):
            codec_for(hint).decode(bad)  # type: ignore[misc]


def test_enum_decoding_is_type_strict() -> None:
    assert codec_for(Ratio).decode(1) is Ratio.ONE  # type: ignore[misc]
    with pytest.raises(CodecError, match=r"expected Level \(as a member value\) at \$, got bool"):
        codec_for(Level).decode(True)  # type: ignore[misc]
    pattern = r"for Color \('blue' is not a valid Color\) at \$\[1\], got str 'blue'"
    with pytest.raises(CodecError, match=pattern):
        codec_for(list[Color]).decode(["red", "blue"])  # type: ignore[misc]


# --------------------------------------------------------------------------- decode errors


def order_json() -> Any:
    return json_trip(codec_for(Order).encode(an_order()))  # type: ignore[misc]


def decode_error(hint: object, value: object) -> str:
    with pytest.raises(CodecError) as info:
        codec_for(hint).decode(value)  # type: ignore[misc]
    return str(info.value)


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


# --------------------------------------------------------------------------- hypothesis

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@given(json_values)
def test_json_native_values_pass_through(value: object) -> None:
    assert to_jsonable(value) == value
    assert json_trip(to_jsonable(value)) == value
    assert round_trip(Any, value) == value
    assert round_trip(JSONValue, value) == value


@given(st.dictionaries(st.text(), st.lists(st.tuples(st.integers(), st.text()), max_size=4)))
def test_nested_native_containers_round_trip(value: dict[str, list[tuple[int, str]]]) -> None:
    assert round_trip(dict[str, list[tuple[int, str]]], value) == value


zones = st.sampled_from([None, UTC, IST, dt.timezone(dt.timedelta(hours=-9))])
datetimes = st.datetimes(timezones=zones)
items = st.builds(
    Item, sku=st.text(), qty=st.integers(), colors=st.lists(st.sampled_from(Color)), when=datetimes
)
orders = st.builds(
    Order,
    id=st.uuids(),
    items=st.lists(items, max_size=4),
    total=st.decimals(allow_nan=False, allow_infinity=False),
    note=st.none() | st.text(),
    tags=st.sets(st.text(max_size=3)),
    level=st.sampled_from(Level),
)
blobs = st.builds(
    Blob,
    data=st.binary(),
    # float seconds keep every microsecond for durations up to ~136 years
    ttl=st.timedeltas(min_value=dt.timedelta(days=-36500), max_value=dt.timedelta(days=36500)),
    day=st.dates(),
    at=st.times(timezones=zones),
)


@given(orders)
def test_orders_round_trip(order: Order) -> None:
    back = round_trip(Order, order)
    assert back == order
    assert [i.when.utcoffset() for i in back.items] == [i.when.utcoffset() for i in order.items]
    assert str(back.total) == str(order.total)


@given(blobs)
def test_blobs_round_trip(blob: Blob) -> None:
    assert round_trip(Blob, blob) == blob


@given(orders)
def test_to_jsonable_matches_the_typed_encoder(order: Order) -> None:
    assert to_jsonable(order) == codec_for(Order).encode(order)  # type: ignore[misc]


@given(st.decimals(allow_nan=True, allow_infinity=True))
def test_decimal_is_exact(value: Decimal) -> None:
    assert str(round_trip(Decimal, value)) == str(value)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**6), 10**6)))
def test_float_list_accepts_ints(values: list[float]) -> None:
    back = round_trip(list[float], values)
    assert all(type(x) is float for x in back)
    assert back == [float(x) for x in values]


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


# --------------------------------------------------------------------------- misc


@pytest.mark.parametrize(
    ("hint", "text"),
    [
        (list[Order], "list[Order]"),
        (Order, "Order"),
        (Optional[int], "int | None"),
        (int | None, "int | None"),
        (dict[str, tuple[int, ...]], "dict[str, tuple[int, ...]]"),
        (typing.List[int], "list[int]"),  # noqa: UP006
        (Sequence[Color], "Sequence[Color]"),
        (Literal["a", 1], "Literal['a', 1]"),
        (None, "None"),
        (Any, "Any"),
        (tuple[()], "tuple[()]"),
        (T, "T"),
        ("Fwd", "Fwd"),
    ],
    ids=repr,
)
def test_describe(hint: object, text: str) -> None:
    assert describe(hint) == text


def test_import_does_not_load_heavy_modules(tmp_path: Any) -> None:
    # codec.py alone (with errors.py) in a bare package: what the module itself imports
    import tideflow.codec
    import tideflow.errors

    pkg = tmp_path / "tideflow"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    shutil.copy(tideflow.codec.__file__, pkg / "codec.py")
    shutil.copy(tideflow.errors.__file__, pkg / "errors.py")
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import tideflow.codec\n"
        "heavy = {'decimal', 'uuid', 'datetime', 'base64', 'binascii', 'json', 'pydantic'}\n"
        "print(sorted((set(sys.modules) - before) & heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,
    )
    assert out.stdout.strip() == "[]"


def test_float_decode_rejects_an_int_too_large_for_a_float() -> None:
    with pytest.raises(CodecError, match=r"expected float at \$, got int"):
        codec_for(float).decode(10**400)  # type: ignore[misc]


# --------------------------------------------------------------------------- optional libraries


def test_pydantic_models() -> None:
    pydantic = pytest.importorskip("pydantic", minversion="2")

    class Address(pydantic.BaseModel):  # type: ignore[misc,name-defined]
        city: str
        since: dt.date

    class Person(pydantic.BaseModel):  # type: ignore[misc,name-defined]
        name: str
        addresses: list[Address]
        color: Color

    person = Person(
        name="ann", addresses=[Address(city="Oslo", since=dt.date(2020, 1, 2))], color=Color.RED
    )
    codec = codec_for(list[Person])
    assert codec.encode is not None
    encoded = codec.encode([person])
    assert encoded == [
        {"name": "ann", "addresses": [{"city": "Oslo", "since": "2020-01-02"}], "color": "red"}
    ]
    assert codec.decode(json_trip(encoded)) == [person]  # type: ignore[misc]
    assert to_jsonable(person) == encoded[0]
    with pytest.raises(CodecError, match=r"invalid pydantic model for Person .* at \$\[0\]"):
        codec.decode([{"name": "ann"}])  # type: ignore[misc]


def test_msgspec_structs() -> None:
    msgspec = pytest.importorskip("msgspec")

    class Reading(msgspec.Struct):  # type: ignore[misc,name-defined]
        at: dt.datetime
        value: float
        raw: bytes

    reading = Reading(dt.datetime(2020, 1, 1, tzinfo=UTC), 1.5, b"\x01")
    codec = codec_for(dict[str, Reading])
    assert codec.encode is not None
    encoded = codec.encode({"r": reading})
    assert json_trip(encoded) == encoded
    assert codec.decode(json_trip(encoded)) == {"r": reading}  # type: ignore[misc]
    assert to_jsonable(reading) == encoded["r"]
    with pytest.raises(CodecError, match=r"invalid msgspec Struct for Reading .* at \$\.r"):
        codec.decode({"r": {"at": "nope", "value": 1.0, "raw": ""}})  # type: ignore[misc]


# --------------------------------------------------------------------------- other typing forms

Bounded = TypeVar("Bounded", bound=Item)


class Strict(TypedDict, total=False):
    a: Required[int]
    b: str


def test_typevars_and_required_keys() -> None:
    decode = codec_for(list[Bounded]).decode
    assert decode is not None
    assert decode([order_json()["items"][0]]) == [an_order().items[0]]
    assert codec_for(Strict).decode({"a": 1}) == {"a": 1}  # type: ignore[misc]
    assert "missing required field 'a' of Strict" in decode_error(Strict, {"b": "x"})
    assert "missing required field 'released'" not in decode_error(Movie, {"title": 1, "year": 1})
