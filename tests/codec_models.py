"""The types and helpers that the codec tests share: model classes, JSON round trips, an order."""

# Optional[...] and Union[...] are used on purpose: codec_for must handle both spellings.
# ruff: noqa: UP045

import dataclasses
import datetime as dt
import enum
import json
import uuid
from decimal import Decimal
from typing import Any, Generic, NamedTuple, Optional, TypedDict, TypeVar

import pytest

from tideflow.codec import codec_for
from tideflow.errors import CodecError

try:
    from typing import NotRequired
except ImportError:  # Python 3.10
    from typing_extensions import NotRequired


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


def order_json() -> Any:
    return json_trip(codec_for(Order).encode(an_order()))  # type: ignore[misc]


def decode_error(hint: object, value: object) -> str:
    with pytest.raises(CodecError) as info:
        codec_for(hint).decode(value)  # type: ignore[misc]
    return str(info.value)
