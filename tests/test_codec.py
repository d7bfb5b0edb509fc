"""Tests of tideflow.codec: typed values <-> JSON-native values, driven by type hints.

Round trips by hint, the encoded form, strictness, property-based round trips, ``describe``, the
optional libraries (pydantic, msgspec) and other typing forms. Decode and encode errors are in
test_codec_errors.py, ``to_jsonable`` in test_codec_jsonable.py, ``step_hints`` in
test_codec_hints.py; the shared model types in codec_models.py.
"""

# Optional[...] and Union[...] are used on purpose: codec_for must handle both spellings.
# ruff: noqa: UP045

import datetime as dt
import typing
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal, Optional, TypedDict, TypeVar, Union

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tideflow.codec import JSONValue, TypeCodec, codec_for, describe, to_jsonable
from tideflow.errors import CodecError

try:
    from typing import Required
except ImportError:  # Python 3.10
    from typing_extensions import Required


from .codec_models import (
    IST,
    UTC,
    Blob,
    Box,
    Cat,
    Color,
    Computed,
    Dog,
    Item,
    Level,
    Movie,
    Order,
    Partial,
    Point,
    Ratio,
    Shade,
    T,
    Tree,
    an_order,
    decode_error,
    json_trip,
    order_json,
    round_trip,
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
