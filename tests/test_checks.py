"""Values are checked before they are stored, so that a step is handed the same value whether or
not the process restarted in between, and nothing stored ever fails to decode later: a value
without a type hint must be plain JSON, a value with one must decode into it (issue 7, items 5, 9
and 12)."""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tideflow import (
    CodecError,
    Context,
    Engine,
    Run,
    Status,
    UnknownInstance,
    VirtualClock,
    Workflow,
    step,
)
from tideflow.stores import SQLiteStore


class Color(enum.Enum):
    RED = "red"


@dataclass
class Point:
    x: int
    y: int


@dataclass
class Order:
    id: int
    name: str


class Backend:
    """An engine on memory or SQLite, driven sync or async; `restart()` opens a new engine on the
    same SQLite file (a new process)."""

    def __init__(self, store: str, mode: str, tmp: Path) -> None:
        self.store, self.mode, self.path = store, mode, tmp / "checks.db"
        self.clock = VirtualClock()
        self.engine = self._open()

    def _open(self) -> Engine:
        if self.store == "memory":
            return Engine(clock=self.clock)
        return Engine(store=SQLiteStore(str(self.path)), clock=self.clock)

    def run(self, wf: Workflow, value: Any = None, **kw: Any) -> Run:
        if self.mode == "sync":
            return self.engine.run(wf, value, **kw)
        return asyncio.run(self.engine.run_async(wf, value, **kw))


@pytest.fixture(params=["memory-sync", "memory-async", "sqlite-sync", "sqlite-async"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    store, mode = request.param.split("-")
    return Backend(store, mode, tmp_path)


def _returns(value: Any) -> Callable[[Any, Any], Any]:
    def load(ctx, x):  # type: ignore[no-untyped-def]
        return value

    return load


# -- item 5: a step without a return hint ---------------------------------------------------------

NOT_PLAIN_JSON = [
    (b"\x00\xff", "a bytes", "", "bytes"),
    ((1, "a"), "a tuple", "", "tuple[int, str]"),
    ({3, 1}, "a set", "", "set[int]"),
    (datetime(2026, 1, 1, tzinfo=timezone.utc), "a datetime", "", "datetime"),
    (Decimal("1.5"), "a Decimal", "", "Decimal"),
    (uuid.UUID(int=7), "a UUID", "", "UUID"),
    (Point(1, 2), "a Point", "", "Point"),
    (Color.RED, "a Color", "", "Color"),
    ([1, 2, (3, "x")], "a tuple", " at $[2]", "list[int | tuple[int, str]]"),
    ({"a": [1, {"when": Decimal(1)}]}, "a Decimal", " at $.a[1].when", None),
]


@pytest.mark.parametrize(("value", "what", "where", "hint"), NOT_PLAIN_JSON)
def test_an_untyped_step_output_that_json_cannot_restore_is_refused(
    backend: Backend, value: Any, what: str, where: str, hint: str | None
) -> None:
    r = backend.run(Workflow("w").then(step(name="load")(_returns(value))), 0, id="i")
    assert r.status is Status.FAILED and r.error is not None
    assert r.error.error_type == "CodecError"
    assert f'step "load" returned {what}{where} without a return type hint' in str(r.error)
    if hint is not None:
        assert f"annotate the step (-> {hint})" in str(r.error)
    assert backend.engine.get("i").status is Status.FAILED  # stored, and readable


def test_a_dict_key_that_is_not_a_str_is_refused_without_a_hint(backend: Backend) -> None:
    r = backend.run(Workflow("w").then(step(name="load")(_returns({"a": {1: "x"}}))), 0)
    assert r.status is Status.FAILED and r.error is not None
    assert 'step "load" returned a dict key of type int at $.a' in str(r.error)
    assert "use str keys" in str(r.error)


def test_a_subclass_of_a_json_type_is_refused_without_a_hint(backend: Backend) -> None:
    class Tags(list[str]):
        pass

    r = backend.run(Workflow("w").then(step(name="load")(_returns(Tags(["a"])))), 0)
    assert r.status is Status.FAILED and r.error is not None
    assert "returned a Tags without a return type hint" in str(r.error)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_an_untyped_step_hands_on_the_same_value_with_or_without_a_restart(
    store: str, tmp_path: Path
) -> None:
    seen: list[Any] = []
    value = {"a": [1, 2.5, "x", None, True, {"b": []}], "n": 10**30}

    @step
    def produce(ctx, x):  # type: ignore[no-untyped-def]
        return value

    @step
    def consume(ctx, v):  # type: ignore[no-untyped-def]
        seen.append(v)
        return len(v)

    wf = Workflow("same").then(produce).sleep(1).then(consume)
    b = Backend(store, "sync", tmp_path)
    b.run(wf, 0, id="live")
    b.clock.advance(1)
    assert [r.output for r in b.engine.run_due()] == [2]
    if store == "sqlite":
        b.run(wf, 0, id="restarted")
        b.engine = b._open()  # a new process resumes it from the file
        b.engine.register(wf)
        b.clock.advance(1)
        assert [r.output for r in b.engine.run_due()] == [2]
    assert all(v == value and type(v["a"][1]) is float for v in seen) and len(seen) >= 1


@dataclass
class Measured:
    x: float
    tags: list[str]


TYPED_LOOSELY = [
    (list[int], (1, 2), [1, 2]),
    (tuple[int, ...], [1, 2], (1, 2)),
    (float, 3, 3.0),
    (int | None, 3, 3),
    (bytes, bytearray(b"ab"), b"ab"),
    (set[int], frozenset({1}), {1}),
    (Measured, Measured(1, ("a",)), Measured(1.0, ["a"])),  # type: ignore[arg-type]
    (dict[str, Any], {"a": (1,)}, {"a": [1]}),
]


@pytest.mark.parametrize(("hint", "returned", "received"), TYPED_LOOSELY)
def test_a_typed_step_hands_on_the_value_a_resume_would_decode(
    tmp_path: Path, hint: Any, returned: Any, received: Any
) -> None:
    """A value its hint takes but whose stored form decodes to another value (a tuple for
    `-> list[int]`, an int for `-> float`) reached the next step as returned when the process
    went on, and as decoded after a restart: two answers. Both now get the decoded one."""
    seen: list[Any] = []

    def produce(ctx, x):  # type: ignore[no-untyped-def]
        return returned

    produce.__annotations__ = {"return": hint}

    @step
    def consume(ctx, v):  # type: ignore[no-untyped-def]
        seen.append(v)

    produce_step = step(name="produce")(produce)
    b = Backend("sqlite", "sync", tmp_path)
    b.run(Workflow("typed-live").then(produce_step).then(consume), 0)  # the process goes on
    wf = Workflow("typed-same").then(produce_step).sleep(1).then(consume)
    b.run(wf, 0, id="restarted")
    b.engine = b._open()  # a new process resumes it from the file
    b.engine.register(wf)
    b.clock.advance(1)
    b.engine.run_due()
    assert [(type(v), repr(v)) for v in seen] == [(type(received), repr(received))] * 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_typed_input_reaches_the_first_step_as_a_resume_would_decode_it(
    tmp_path: Path, mode: str
) -> None:
    seen: list[Any] = []

    @step
    def first(ctx: Context, x: float) -> float:
        seen.append(x)
        return x

    b = Backend("memory", mode, tmp_path)
    run = b.run(Workflow("typed-input").then(first), 3)
    assert [(type(v), v) for v in seen] == [(float, 3.0)] and type(run.output) is float


def test_a_parallel_fan_in_tuple_still_reaches_an_untyped_step(tmp_path: Path) -> None:
    seen: list[Any] = []

    @step
    def one(ctx, x):  # type: ignore[no-untyped-def]
        return 1

    @step
    def two(ctx, x):  # type: ignore[no-untyped-def]
        return "two"

    @step
    def gather(ctx, both):  # type: ignore[no-untyped-def]
        seen.append(both)
        return list(both)

    wf = Workflow("fan").parallel(one, two).sleep(1).then(gather)
    b = Backend("sqlite", "sync", tmp_path)
    b.run(wf, 0, id="f")
    b.engine = b._open()
    b.engine.register(wf)
    b.clock.advance(1)
    assert [r.output for r in b.engine.run_due()] == [[1, "two"]]
    assert seen == [(1, "two")]  # the core builds the tuple, after a restart too


def test_an_untyped_input_that_json_cannot_restore_is_refused_and_nothing_is_stored(
    backend: Backend,
) -> None:
    wf = Workflow("w").then(step(name="echo")(lambda ctx, x: 1))
    with pytest.raises(CodecError, match=r'input of workflow "w" is a tuple at \$\.pair'):
        backend.run(wf, {"pair": (1, 2)}, id="i")
    with pytest.raises(UnknownInstance):
        backend.engine.get("i")
    assert backend.run(wf, {"pair": [1, 2]}, id="i").status is Status.COMPLETED


def test_suggest_hint_describes_a_value() -> None:
    from tideflow.codec import suggest_hint

    assert suggest_hint((1, "a", None)) == "tuple[int, str, None]"
    assert suggest_hint({"k": [b"x"]}) == "dict[str, list[bytes]]"
    assert suggest_hint([]) == "list[Any]"


# -- item 9: a step's output against its declared type ---------------------------------------------


def test_a_typed_output_of_the_wrong_type_fails_the_attempt_and_stores_nothing_undecodable(
    backend: Backend,
) -> None:
    @step
    def count(ctx: Context, x: int) -> int:
        return "three"  # type: ignore[return-value]

    wf = Workflow("typed").then(count)
    r = backend.run(wf, 1, id="t")
    assert r.status is Status.FAILED and r.error is not None
    assert r.error.error_type == "CodecError"
    msg = str(r.error)
    assert 'step "count" returned a value that does not fit its return type int' in msg
    assert "expected int at $, got str 'three'" in msg
    # what is stored decodes: get() and a re-run return the failed run instead of raising
    assert backend.engine.get("t").status is Status.FAILED
    assert backend.run(wf, 1, id="t").status is Status.FAILED


@pytest.mark.parametrize(
    ("hint", "value", "ok"),
    [
        (int, True, False),  # the decoder takes no bool for an int: neither does the encoder
        (int, 3.0, False),
        (float, True, False),
        (float, 10**400, False),  # no float holds it
        (str, b"x", False),
        (Point, {"x": 1, "y": 2}, False),  # a dict is not a Point (it would come back as one)
        (list[int], [1, "2"], False),
        (tuple[int, str], (1, 2), False),
        (int | None, "x", False),
        (float, 3, True),  # an int is a float (it decodes to 3.0)
        (int, 10**30, True),
        (list[int], (1, 2), True),
    ],
)
def test_an_output_is_stored_only_if_it_decodes_into_the_return_type(
    backend: Backend, hint: Any, value: Any, ok: bool
) -> None:
    def produce(ctx: Context, x: int) -> Any:
        return value

    produce.__annotations__["return"] = hint
    r = backend.run(Workflow("w").then(step(name="produce")(produce)), 0, id="v")
    assert (r.status is Status.COMPLETED) is ok, r.error
    stored = backend.engine.get("v")
    if ok:  # (a tuple for a list decodes as the list the hint asks for)
        assert stored.output == (list(value) if isinstance(value, tuple) else value)
    else:
        assert r.error is not None and "does not fit its return type" in str(r.error)
        assert stored.status is Status.FAILED


def test_a_dataclass_field_of_the_wrong_type_is_caught_on_encode(backend: Backend) -> None:
    @step
    def make(ctx: Context, x: int) -> Point:
        return Point(1, "two")  # type: ignore[arg-type]

    r = backend.run(Workflow("w").then(make), 0)
    assert r.error is not None and "expected int at $.y, got str 'two'" in str(r.error)


# -- item 12: the input against the first step's hint ----------------------------------------------


def test_a_workflow_input_is_checked_against_the_first_steps_hint_before_it_is_stored(
    backend: Backend,
) -> None:
    @step
    def double(ctx: Context, x: int) -> int:
        return x * 2

    wf = Workflow("d").then(double)
    with pytest.raises(CodecError, match=r"input type int of its first step: expected int.*'3'"):
        backend.run(wf, "3", id="i")
    with pytest.raises(UnknownInstance):
        backend.engine.get("i")
    assert backend.run(wf, 3, id="i").output == 6


def test_a_dict_input_for_a_dataclass_names_the_missing_field(backend: Backend) -> None:
    @step
    def ship(ctx: Context, order: Order) -> str:
        return order.name

    with pytest.raises(CodecError, match="missing required field 'id' of Order"):
        backend.run(Workflow("o").then(ship), {"name": "x"})
    assert backend.run(Workflow("o").then(ship), Order(1, "x")).output == "x"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_workflow_ending_in_a_fan_in_gives_a_tuple_live_and_from_the_store(
    tmp_path: Path, mode: str
) -> None:
    """The fan-in of a parallel is a tuple, whether its branches are typed or not: run.output and
    get().output (decoded by a fresh engine that registered the workflow) give the same value, at
    the top and inside a map."""

    @step
    def loose(ctx, x):  # type: ignore[no-untyped-def]
        return {"a": x}

    @step
    def typed(ctx: Context, x: int) -> int:
        return x + 1

    @step
    def pair(ctx, x):  # type: ignore[no-untyped-def]
        return [1, 2]

    ending = Workflow("ends-in-fan-in").parallel(loose, typed)
    mapped = Workflow("maps-fan-ins").then(pair).map(Workflow("b").parallel(loose, typed))
    expected = {"ends-in-fan-in": ({"a": 1}, 2), "maps-fan-ins": [({"a": 1}, 2), ({"a": 2}, 3)]}
    for wf in (ending, mapped):
        b = Backend("sqlite", mode, tmp_path)
        live = b.run(wf, 1, id=wf.name).output
        fresh = b._open()
        fresh.register(wf)
        stored = fresh.get(wf.name).output
        assert live == stored == expected[wf.name]
        assert type(live) is type(stored)
        if wf is mapped:
            assert all(type(v) is tuple for v in (*live, *stored))
