"""Typed JSON codec: converts step values to and from JSON-native values, driven by type hints.

The Rust core serializes JSON-native values (None, bool, int, float, str, list, tuple, dict with str
keys) itself; this module turns richer values (dataclasses, enums, datetimes, ...) into such values
before a checkpoint, and JSON-native values back into typed values on replay. Nothing is pickled
or evaluated. ``datetime``, ``decimal``, ``uuid`` and ``base64`` are imported only when needed,
and so is ``typing``: converting by runtime type, and the codecs of None, bool, int, float and
str, need neither it nor the hint compiler (``tideflow._codec_compile``).
"""

from __future__ import annotations

import enum
import functools
import sys
import types
from collections import abc
from collections.abc import Callable

from .errors import CodecError

__all__ = [
    "JSONValue",
    "TypeCodec",
    "codec_for",
    "describe",
    "step_hints",
    "suggest_hint",
    "to_jsonable",
]

TYPE_CHECKING = False  # (see tideflow.retry)
if TYPE_CHECKING:
    from typing import Any, TypeAlias

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None
"""A JSON-native Python value, as the Rust core serializes and parses it."""

if TYPE_CHECKING:
    _Fn = Callable[[Any], Any]
    _Fns = _Fn | list[_Fn | None] | dict[str, _Fn | None] | None  # one function, or one per item
_NoneType = type(None)
_INF = float("inf")
_SCALARS = (_NoneType, bool, int, float, str)
_WRAPPERS = {"Annotated", "Required", "NotRequired", "ReadOnly", "Final"}
_SEQUENCES = (list, tuple, abc.Sequence, abc.MutableSequence)
_SETS = (set, frozenset, abc.Set, abc.MutableSet)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)


class TypeCodec:
    """Encoder/decoder pair compiled once for one type hint."""

    __slots__ = ("decode", "encode", "hint")

    def __init__(
        self,
        hint: object,
        encode: Callable[[Any], JSONValue] | None,  # None: the value needs no conversion
        decode: Callable[[JSONValue], Any] | None,  # None: nothing to convert or validate (Any)
    ) -> None:
        self.hint = hint
        self.encode = encode
        self.decode = decode

    def __repr__(self) -> str:
        return f"TypeCodec(hint={self.hint!r}, encode={self.encode!r}, decode={self.decode!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TypeCodec):
            return NotImplemented
        return (self.hint, self.encode, self.decode) == (other.hint, other.encode, other.decode)

    def __hash__(self) -> int:
        return hash((TypeCodec, id(self.encode), id(self.decode)))


def _is_dataclass(obj: object) -> bool:
    # `dataclasses` is not imported here (it costs ~15 ms through `inspect`): a dataclass carries
    # this attribute, and its existence proves the program has imported the module already.
    return hasattr(obj if isinstance(obj, type) else type(obj), "__dataclass_fields__")


class _Fail(Exception):
    """Internal: a conversion failed; enclosing containers add their path segments."""

    def __init__(self, problem: str, got: str = "") -> None:
        super().__init__(problem)
        self.problem, self.got = problem, got
        self.path: list[str] = []  # innermost segment first

    def error(self) -> CodecError:
        where = "$" + "".join(reversed(self.path))
        return CodecError(f"{self.problem} at {where}" + (f", got {self.got}" if self.got else ""))


def _bad(what: str, v: object) -> _Fail:
    return _Fail(f"expected {what}", _show(v))


class _Unsupported(CodecError):
    def __init__(self, hint: object, reason: str) -> None:
        super().__init__(f"cannot encode values of type {describe(hint)}: {reason}")
        self.hint = hint


class _Node:
    __slots__ = ("dec", "enc", "kinds")

    def __init__(self, enc: _Fn | None, dec: _Fn | None, kinds: tuple[type, ...]) -> None:
        self.enc = enc  # None: values pass through unchanged
        self.dec = dec  # None: any JSON value is accepted as it is
        self.kinds = kinds  # runtime classes of the hint's values (to pick a Union member)


if TYPE_CHECKING:
    _Building = dict[object, list[_Node]]  # types being compiled -> their node, once built


_ANY = _Node(None, None, (object,))
_CACHE: dict[object, TypeCodec] = {}


def _scalar(cls: type) -> _Node:
    what = "None" if cls is _NoneType else cls.__name__

    def dec(v: Any) -> Any:
        if type(v) is cls or (cls is not bool and isinstance(v, cls) and not isinstance(v, bool)):
            return v
        if cls is float and isinstance(v, int) and not isinstance(v, bool):
            try:
                return float(v)
            except OverflowError:
                pass
        raise _bad(what, v)

    return _Node(None, dec, (float, int) if cls is float else (cls,))


def _show(v: object) -> str:
    try:
        r = repr(v)
    except Exception:
        r = "<unrepresentable>"
    r = r if len(r) <= 60 else r[:57] + "..."
    return "None" if v is None else f"{_name(type(v))} {r}"


def _name(cls: type) -> str:
    return cls.__qualname__.rpartition("<locals>.")[2]


def _key(k: object) -> str:
    return f".{k}" if isinstance(k, str) and k.isidentifier() else f"[{k!r}]"


def _map_list(v: Any, f: _Fns) -> list[Any]:
    out: list[Any] = []
    add = out.append
    try:
        if isinstance(f, list):  # one function per position (callers check the length)
            for x, g in zip(v, f, strict=False):
                add(x if g is None else g(x))
        else:
            fn: Any = f
            for x in v:
                add(fn(x))
    except _Fail as e:
        e.path.append(f"[{len(out)}]")  # the index of the item that failed
        raise
    return out


def _map_dict(v: Any, fk: _Fn | None, fv: _Fns) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    k: Any = None
    try:
        for k, x in v.items():
            g: Any = fv.get(k) if isinstance(fv, dict) else fv
            out[k if fk is None else fk(k)] = x if g is None else g(x)
    except _Fail as e:
        e.path.append(_key(k))
        raise
    return out


def _sort(out: list[Any]) -> list[Any]:
    try:  # a set's order varies between runs: sort if we can
        out.sort()
    except TypeError:
        return out  # (items that do not compare keep their order)
    return out


def _public(f: _Fn | None) -> _Fn | None:
    return None if f is None else _checked(f)


def _checked(fn: _Fn) -> _Fn:
    def run(value: Any) -> Any:
        try:
            return fn(value)
        except _Fail as e:
            raise e.error() from e.__cause__
        except RecursionError:
            raise CodecError("value is nested too deeply (or contains itself)") from None

    return run


def codec_for(hint: object) -> TypeCodec:
    """Compile (once per hint) the encoder/decoder pair for values of the type hint ``hint``."""
    key: object = None
    try:  # the repr keeps Union[int, float] and Union[float, int] apart (they compare equal)
        key = (hint, repr(hint))
        cached = _CACHE.get(key)
    except Exception:  # an unhashable hint, e.g. Annotated[int, {}]
        key, cached = None, None
    if cached is not None:
        return cached
    if hint is None or (type(hint) is type and hint in _SCALARS):
        node = _scalar(_NoneType if hint is None else hint)  # (what the compiler would make)
    else:
        from ._codec_compile import compile_hint  # the compiler uses this module's building blocks

        try:
            node = compile_hint(hint, {})
        except _Unsupported as e:
            if e.hint is hint:
                raise
            raise CodecError(f"{e} (in {describe(hint)})") from None
    codec = TypeCodec(hint, _public(node.enc), _public(node.dec))
    if key is not None:
        _CACHE[key] = codec
    return codec


def to_jsonable(value: object) -> JSONValue:
    """Convert a value to JSON-native form by its runtime type (the fallback without a hint)."""
    out: JSONValue = _to_json_checked(value)
    return out


def _to_json(v: Any) -> Any:
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return v
    if t is float:
        if not -_INF < v < _INF:  # not math.isfinite: `math` is a shared library
            raise _Fail("cannot encode a non-finite float", _show(v))
        return v
    if t is list or t is tuple:
        return _map_list(v, _to_json)
    if t is dict:
        return _map_dict(v, _json_key, _to_json)
    if isinstance(v, enum.Enum):
        return _to_json(v._value_)
    if _is_dataclass(v) and not isinstance(v, type):
        import dataclasses

        fields = {f.name: getattr(v, f.name) for f in dataclasses.fields(v) if f.init}
        return _map_dict(fields, None, _to_json)
    if isinstance(v, str):  # subclasses of the scalars become plain values
        return str.__str__(v)
    if isinstance(v, int):
        return int.__index__(v)
    if isinstance(v, float):
        return _to_json(float.__float__(v))
    if isinstance(v, (list, tuple)):
        return _map_list(v, _to_json)
    if isinstance(v, dict):
        return _map_dict(v, _json_key, _to_json)
    if isinstance(v, (set, frozenset)):
        return _sort(_map_list(v, _to_json))
    if isinstance(v, (bytes, bytearray, memoryview)):
        import binascii

        return binascii.b2a_base64(v, newline=False).decode("ascii")
    m: Any = sys.modules.get("datetime")
    if m is not None and isinstance(v, (m.date, m.time, m.timedelta)):
        return v.total_seconds() if isinstance(v, m.timedelta) else v.isoformat()
    for mod, cls in (("uuid", "UUID"), ("decimal", "Decimal")):
        m = sys.modules.get(mod)
        if m is not None and isinstance(v, getattr(m, cls)):
            return str(v)
    m = sys.modules.get("pydantic")
    if m is not None and isinstance(v, m.BaseModel):
        return v.model_dump(mode="json")
    m = sys.modules.get("msgspec")
    if m is not None and isinstance(v, m.Struct):
        return m.to_builtins(v)
    raise _Fail(f"cannot encode values of type {_name(t)}")


_to_json_checked = _checked(_to_json)


def _json_key(k: Any) -> str:
    if type(k) is str:
        return k
    if isinstance(k, str):
        return str.__str__(k)
    raise _Fail(f"dict keys must be str, not {_name(type(k))}", _show(k))


def suggest_hint(value: object) -> str:
    """A type hint that would restore ``value`` from its JSON form, as text (``tuple[int, str]``):
    what an error proposes when a value without a hint cannot be stored as it is."""
    return _suggest(value, 0)


def _suggest(v: object, depth: int) -> str:
    if v is None:
        return "None"
    t = type(v)
    if depth > 3:
        return "Any"
    if t is tuple:
        items = [_suggest(x, depth + 1) for x in v]  # type: ignore[attr-defined]
        return f"tuple[{', '.join(items)}]" if 0 < len(items) <= 6 else "tuple[Any, ...]"
    if t in (list, set, frozenset):
        return f"{t.__name__}[{_suggest_union(v, depth)}]"  # type: ignore[arg-type]
    if t is dict:
        d: dict[Any, Any] = v  # type: ignore[assignment]
        keys = _suggest_union(d.keys(), depth)
        return f"dict[{keys if keys != 'Any' else 'str'}, {_suggest_union(d.values(), depth)}]"
    return _name(t)


def _suggest_union(items: abc.Iterable[object], depth: int) -> str:
    seen: list[str] = []
    for n, x in enumerate(items):
        if n == 20:
            break
        h = _suggest(x, depth + 1)
        if h not in seen:
            seen.append(h)
    return " | ".join(seen) if 0 < len(seen) <= 3 else "Any"


def describe(hint: object) -> str:
    """Return a short readable name of a type hint for error messages, e.g. ``list[Order]``."""
    import typing
    from typing import Any, Literal, Union, get_args, get_origin

    if hint is None or hint is _NoneType:
        return "None"
    if hint is Any or hint is Ellipsis:
        return "Any" if hint is Any else "..."
    if isinstance(hint, (str, typing.ForwardRef)):
        return hint if isinstance(hint, str) else hint.__forward_arg__
    if isinstance(hint, list):
        return "[" + ", ".join(describe(h) for h in hint) + "]"
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union or origin is types.UnionType:
        return " | ".join(describe(a) for a in args)
    if origin is Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is typing.Annotated:
        return describe(args[0])
    if origin is not None:
        inner = "()" if not args or args == ((),) else ", ".join(describe(a) for a in args)
        return f"{describe(origin)}[{inner}]"
    if isinstance(hint, type):
        return _name(hint)
    name = getattr(hint, "__name__", None)  # TypeVar, NewType, special forms
    return name if isinstance(name, str) else repr(hint).replace("typing.", "")


def _resolve_one(fn: types.FunctionType, ann: object, missing: object) -> object:
    """Resolves one annotation of a plain function (string annotations included), or ``missing``."""
    if not isinstance(ann, str):
        t = sys.modules.get("typing")  # a ForwardRef proves that typing is loaded
        if t is None or not isinstance(ann, t.ForwardRef):
            return ann
    import typing

    def shim() -> None: ...

    shim.__annotations__ = {"return": ann}
    try:
        return typing.get_type_hints(shim, globalns=fn.__globals__).get("return", missing)
    except Exception:
        return ann  # unresolved: compiling its codec raises the DefinitionError that says so


def step_hints(fn: Callable[..., object]) -> tuple[object, object]:
    """Return a step's (input hint, return hint); the input is its second positional parameter.
    ``Any`` stands for a missing annotation; one that cannot be resolved is returned as it is
    written (a str), so that compiling its codec raises an error naming it."""
    from typing import Any

    return _step_hints(fn, Any)


def _step_hints(fn: Callable[..., object], missing: object) -> tuple[object, object]:
    """``step_hints``, with ``missing`` (which stands for ``Any``) where there is no annotation."""
    if type(fn) is types.FunctionType and not hasattr(fn, "__wrapped__"):
        # the common case, without `inspect` (importing it costs ~10 ms and ~1 MB)
        code = fn.__code__
        names = code.co_varnames[: code.co_argcount]
        anns = fn.__annotations__
        if not anns:
            return missing, missing
        if len(names) < 2 or names[1] not in anns:
            if "return" not in anns:
                return missing, missing
            return missing, _resolve_one(fn, anns["return"], missing)
        arg = _resolve_one(fn, anns[names[1]], missing)
        ret = _resolve_one(fn, anns["return"], missing) if "return" in anns else missing
        return arg, ret
    import inspect
    import typing

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return missing, missing
    positional = []
    for p in sig.parameters.values():
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            break
        positional.append(p)
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    if not isinstance(target, (types.FunctionType, types.MethodType)) and callable(target):
        target = type(target).__call__
    try:
        resolved: dict[str, Any] = typing.get_type_hints(target)
    except Exception:
        resolved = {}
    globalns = getattr(inspect.unwrap(target), "__globals__", {})

    def slot(name: str, ann: object) -> object:
        if ann is inspect.Parameter.empty:
            return missing
        if name in resolved:
            return resolved[name]

        def shim() -> None: ...

        shim.__annotations__ = {"return": ann}
        try:  # resolve this one annotation alone: another one failing must not hide it
            return typing.get_type_hints(shim, globalns=globalns).get("return", missing)
        except Exception:
            return ann  # unresolved (see _resolve_one)

    arg = slot(positional[1].name, positional[1].annotation) if len(positional) > 1 else missing
    return arg, slot("return", sig.return_annotation)
