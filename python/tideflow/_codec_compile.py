"""The hint compiler of the typed codec: turns a type hint into an encoder/decoder pair.

Split from ``tideflow.codec`` (which holds the public API and the building blocks both use);
``codec_for`` imports this module on first use.
"""

from __future__ import annotations

import enum
import sys
import types
import typing
from collections import abc
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

from .codec import (
    _ANY,
    _MAPPINGS,
    _SCALARS,
    _SEQUENCES,
    _SETS,
    _WRAPPERS,
    JSONValue,
    _bad,
    _Fail,
    _is_dataclass,
    _map_dict,
    _map_list,
    _name,
    _Node,
    _NoneType,
    _scalar,
    _show,
    _sort,
    _Unsupported,
    describe,
)

if typing.TYPE_CHECKING:
    from .codec import _Building, _Fn

__all__ = ["compile_hint"]


def compile_hint(hint: Any, b: _Building) -> _Node:
    """The codec node of ``hint`` (``b`` tracks classes being compiled, for recursive types)."""
    return _compile(hint, b)


def _compile(hint: Any, b: _Building) -> _Node:
    if hint is Any or hint is object or hint is JSONValue:
        return _ANY
    if hint is None or hint is _NoneType:
        return _scalar(_NoneType)
    if isinstance(hint, (str, typing.ForwardRef)):
        raise _Unsupported(hint, "unresolved forward reference (define the type at module level)")
    if isinstance(hint, typing.TypeVar):
        if hint.__bound__ is not None:
            return _compile(hint.__bound__, b)
        cs = hint.__constraints__
        return _union(hint, [_compile(c, b) for c in cs]) if cs else _ANY
    if hasattr(hint, "__supertype__"):  # typing.NewType
        return _compile(hint.__supertype__, b)
    if type(hint).__name__ == "TypeAliasType":  # a Python 3.12 `type X = ...` alias
        return _named(hint, (object,), lambda: _compile(hint.__value__, b), b)
    origin, args = get_origin(hint), get_args(hint)
    if origin is None:
        if isinstance(hint, type):
            return _compile_class(hint, b)
    elif getattr(origin, "_name", None) in _WRAPPERS or origin is typing.Annotated:
        return _compile(args[0], b)
    elif origin is Union or origin is types.UnionType:
        return _union(hint, [_compile(a, b) for a in args])
    elif origin is Literal:
        return _literal(hint, args)
    elif origin in _SEQUENCES or origin in _SETS or origin in _MAPPINGS:
        return _container(hint, origin, args, b)
    elif isinstance(origin, type) and getattr(origin, "__parameters__", None):  # Box[int]
        tvars = dict(zip(getattr(origin, "__parameters__", ()), args, strict=False))
        return _named(hint, (origin,), lambda: _compile_class(origin, b, tvars, False), b)
    raise _Unsupported(hint, "not a supported type hint")


def _named(
    hint: object, kinds: tuple[type, ...], build: Callable[[], _Node], b: _Building
) -> _Node:
    """Compile a possibly self-referencing type once, handing out a late-bound node meanwhile."""
    try:
        ref = b.get(hint)
    except TypeError:  # unhashable (Box[Annotated[int, {}]]): cannot recurse into itself anyway
        return build()
    if ref is not None:
        r = ref

        def enc(v: Any) -> Any:
            e = r[0].enc
            return v if e is None else e(v)

        def dec(v: Any) -> Any:
            d = r[0].dec
            return v if d is None else d(v)

        return _Node(enc, dec, kinds)
    b[hint] = ref = []
    try:
        ref.append(build())
    finally:
        del b[hint]
    return ref[0]


def _container(hint: Any, origin: Any, args: tuple[Any, ...], b: _Building) -> _Node:
    what = describe(hint)
    if origin in _MAPPINGS:
        key, val = (_compile(args[0], b), _compile(args[1], b)) if args else (_ANY, _ANY)
        if args and not _str_like(args[0]):
            raise _Unsupported(hint, "dict keys must be str (or a str-valued Enum or Literal)")
        ke, kd, ve, vd = key.enc, key.dec, val.enc, val.dec

        def dict_enc(v: Any) -> Any:
            if not isinstance(v, abc.Mapping):
                raise _bad(what, v)
            return _map_dict(v, ke, ve)

        def dict_dec(v: Any) -> Any:
            if type(v) is not dict:
                raise _bad(what, v)
            return v if kd is None and vd is None else _map_dict(v, kd, vd)

        return _Node(None if ke is ve is None and origin is dict else dict_enc, dict_dec, (dict,))
    if origin is tuple and args and args[-1] is not Ellipsis:
        return _fixed(what, [] if args == ((),) else [_compile(a, b) for a in args], tuple)
    item = _compile(args[0], b) if args else _ANY
    ie, idec, is_set = item.enc, item.dec, origin in _SETS
    build: Callable[[Any], Any] = (
        frozenset if origin is frozenset else set if is_set else tuple if origin is tuple else list
    )

    def seq_enc(v: Any) -> Any:
        if (
            type(v) is not list
            and type(v) is not tuple
            and (
                isinstance(v, (str, bytes, bytearray)) or not isinstance(v, (abc.Sequence, abc.Set))
            )
        ):
            raise _bad(what, v)
        out = _map_list(v, ie) if ie is not None else list(v)
        return _sort(out) if is_set else out

    def seq_dec(v: Any) -> Any:
        if type(v) is not list and type(v) is not tuple:
            raise _bad(what, v)
        if build is list and idec is None:
            return v if type(v) is list else list(v)
        try:
            return build(v if idec is None else _map_list(v, idec))
        except TypeError as e:  # an unhashable set item
            raise _Fail(f"cannot build {what}: {e}") from e

    kinds = (set, frozenset) if is_set else (list, tuple)  # abstract Sequences are listed too
    return _Node(None if ie is None and origin in (list, tuple) else seq_enc, seq_dec, kinds)


def _fixed(
    what: str,
    items: list[_Node],
    build: Callable[..., Any],
    need: int | None = None,
    named: bool = False,
) -> _Node:
    """A fixed-shape tuple or a NamedTuple (a JSON array with one item per position)."""
    encs, decs = [n.enc for n in items], [n.dec for n in items]
    need = len(items) if need is None else need

    def enc(v: Any) -> Any:
        if not isinstance(v, (list, tuple)) or not need <= len(v) <= len(items):
            raise _bad(what, v)
        return _map_list(v, encs)

    def dec(v: Any) -> Any:
        if not isinstance(v, (list, tuple)) or not need <= len(v) <= len(items):
            raise _bad(what, v)
        out = _map_list(v, decs)
        try:
            return build(*out) if named else build(out)
        except Exception as e:
            raise _Fail(f"could not construct {what}: {type(e).__name__}: {e}") from e

    native = not named and all(e is None for e in encs)
    return _Node(None if native else enc, dec, (tuple, list))


def _str_like(hint: Any) -> bool:
    hint = get_args(hint)[0] if get_origin(hint) is typing.Annotated else hint
    if hint is str or getattr(hint, "__supertype__", None) is str:
        return True
    if get_origin(hint) is Literal:
        return all(isinstance(a, str) for a in get_args(hint))
    return (
        isinstance(hint, type)
        and issubclass(hint, enum.Enum)
        and all(isinstance(m.value, str) for m in hint)
    )


def _union(hint: Any, members: list[_Node]) -> _Node:
    what = describe(hint)
    others = [m for m in members if m.kinds != (_NoneType,)]
    if len(others) == 1 and len(members) == 2:  # Optional[T]
        e1, d1 = others[0].enc, others[0].dec

        def opt_enc(v: Any) -> Any:
            return None if v is None else typing.cast("_Fn", e1)(v)

        def opt_dec(v: Any) -> Any:
            return None if v is None else typing.cast("_Fn", d1)(v)

        kinds = (_NoneType, *others[0].kinds)
        return _Node(opt_enc if e1 else None, opt_dec if d1 else None, kinds)

    def enc(v: Any) -> Any:  # the member of the value's exact class first, then any instance
        t = type(v)
        m = next((m for m in members if t in m.kinds), None) or next(
            (m for m in members if isinstance(v, m.kinds)), None
        )
        if m is None:
            raise _bad(what, v)
        return v if m.enc is None else m.enc(v)

    def dec(v: Any) -> Any:  # members in order, the first that accepts the value wins
        failures = []
        for m in members:
            if m.dec is None:
                return v
            try:
                return m.dec(v)
            except _Fail as e:
                failures.append(e)
        deepest = max(failures, key=lambda e: len(e.path))
        if deepest.path:  # a member matched the value's shape and failed further in: say where
            raise deepest
        raise _bad(what, v)

    kinds = tuple(k for m in members for k in m.kinds)
    return _Node(enc if any(m.enc for m in members) else None, dec, kinds)


def _literal(hint: Any, args: tuple[Any, ...]) -> _Node:
    pairs = [(a.value if isinstance(a, enum.Enum) else a, a) for a in args]  # (JSON, Python)
    if any(type(j) not in _SCALARS for j, _ in pairs):
        raise _Unsupported(hint, "Literal values must be JSON scalars or Enum members")
    what = describe(hint)

    def enc(v: Any) -> Any:
        return v.value if isinstance(v, enum.Enum) else v

    def dec(v: Any) -> Any:
        for j, a in pairs:
            if type(j) is type(v) and j == v:
                return a
        raise _bad(what, v)

    has_enum = any(isinstance(a, enum.Enum) for a in args)
    return _Node(enc if has_enum else None, dec, tuple({type(a) for a in args}))


def _compile_class(
    cls: type, b: _Building, tvars: dict[Any, Any] | None = None, direct: bool = True
) -> _Node:
    if cls in _SCALARS:
        return _scalar(cls)
    if cls in _SEQUENCES or cls in _SETS or cls in _MAPPINGS:
        return _container(cls, cls, (), b)
    if issubclass(cls, enum.Enum):
        values = [m.value for m in cls]
        if any(type(v) not in _SCALARS for v in values):
            raise _Unsupported(cls, "its values must be JSON scalars (None, bool, int, float, str)")
        accept = {type(v) for v in values} | ({int} if float in map(type, values) else set())
        return _leaf(cls, lambda v: v._value_, cls, tuple(accept), ValueError, "member value")
    if cls is bytes or cls is bytearray:
        import base64

        return _leaf(
            cls,
            lambda v: base64.b64encode(v).decode("ascii"),
            lambda s: cls(base64.b64decode(s, validate=True)),
            (str,),
            ValueError,
            "base64 string",
            (bytes, bytearray, memoryview),
        )
    mk: Callable[[], _Node]
    if _is_dataclass(cls):
        import dataclasses

        fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
        req = {f.name for f in fields if f.default is f.default_factory is dataclasses.MISSING}
        names = tuple(f.name for f in fields)
        mk = lambda: _record(cls, req, _hints(cls, names, tvars), b, False)  # noqa: E731
    elif issubclass(cls, dict) and hasattr(cls, "__required_keys__"):  # a TypedDict
        hints = _hints(cls, tuple(cls.__annotations__), tvars)
        req = set(getattr(cls, "__required_keys__", ()))
        for k, h in hints.items():  # typing_extensions.NotRequired in a typing.TypedDict (3.10)
            wrapper = getattr(get_origin(h), "_name", None)
            if wrapper == "NotRequired":
                req.discard(k)
            elif wrapper == "Required":
                req.add(k)
        mk = lambda: _record(cls, req, hints, b, True)  # noqa: E731
    elif issubclass(cls, tuple) and hasattr(cls, "_fields"):  # a NamedTuple
        nt = _hints(cls, getattr(cls, "_fields", ()), tvars)
        need = len(nt) - len(getattr(cls, "_field_defaults", {}))
        mk = lambda: _fixed(  # noqa: E731
            describe(cls), [_compile(h, b) for h in nt.values()], cls, need, True
        )
    else:
        return _library_class(cls)
    return _named(cls, (dict,) if issubclass(cls, dict) else (cls,), mk, b) if direct else mk()


def _hints(cls: type, names: tuple[str, ...], tvars: dict[Any, Any] | None) -> dict[str, Any]:
    te = sys.modules.get("typing_extensions")
    try:
        hints = (te or typing).get_type_hints(cls, include_extras=True)
    except Exception as e:
        msg = f"its type hints cannot be resolved ({type(e).__name__}: {e})"
        raise _Unsupported(cls, msg) from e
    return {n: _subst(hints.get(n, Any), tvars or {}) for n in names}


def _subst(h: Any, tvars: dict[Any, Any]) -> Any:
    if isinstance(h, typing.TypeVar):
        return tvars.get(h, h)
    params = getattr(h, "__parameters__", ())
    if tvars and params and get_args(h):
        try:
            return h[tuple(tvars.get(p, p) for p in params)]
        except TypeError:
            pass
    return h


def _record(
    cls: type, required: set[str], hints: dict[str, Any], b: _Building, typed_dict: bool
) -> _Node:
    """A dataclass or a TypedDict: a JSON object with one key per field."""
    what = describe(cls)
    nodes = {n: _compile(h, b) for n, h in hints.items()}
    encs, decs = {n: x.enc for n, x in nodes.items()}, {n: x.dec for n, x in nodes.items()}
    known, req = frozenset(hints), frozenset(required)

    def enc(v: Any) -> Any:
        if typed_dict:  # keys a TypedDict does not declare are kept as they are
            if not isinstance(v, dict):
                raise _bad(what, v)
            return _map_dict(v, None, encs)
        if not isinstance(v, cls):
            if isinstance(v, dict) and not v.keys() >= req:  # its fields as a dict, and not all
                raise _Fail(f"missing required field {min(req - v.keys())!r} of {what}", _show(v))
            raise _bad(what if not isinstance(v, dict) else f"{what} (not a dict of its fields)", v)
        return _map_dict({n: getattr(v, n) for n in encs}, None, encs)

    def dec(v: Any) -> Any:
        if type(v) is not dict:
            raise _bad(f"{what} (a JSON object)", v)
        if not v.keys() >= req:
            raise _Fail(f"missing required field {min(req - v.keys())!r} of {what}")
        if typed_dict:
            return _map_dict(v, None, decs)
        if not v.keys() <= known:
            raise _Fail(f"unknown field {min(v.keys() - known)!r} for {what}")
        kwargs = _map_dict(v, None, decs)
        try:
            return cls(**kwargs)
        except Exception as e:
            raise _Fail(f"could not construct {what}: {type(e).__name__}: {e}") from e

    return _Node(
        enc if not typed_dict or any(encs.values()) else None,
        dec,
        (dict,) if typed_dict else (cls,),
    )


def _leaf(
    cls: type,
    dump: _Fn,
    load: _Fn,
    accept: tuple[type, ...] | None,
    errors: type[Exception] | tuple[type[Exception], ...],
    form: str,
    instances: tuple[type, ...] | None = None,
    exclude: type | None = None,
) -> _Node:
    """A class encoded by ``dump``, decoded by ``load`` from a JSON value of an ``accept`` type."""
    what, inst = _name(cls), instances or (cls,)

    def enc(v: Any) -> Any:
        if not isinstance(v, inst) or (exclude is not None and isinstance(v, exclude)):
            raise _bad(what, v)
        return dump(v)

    def dec(v: Any) -> Any:
        if accept is not None and type(v) not in accept:
            raise _bad(f"{what} (as a {form})", v)
        try:
            return load(v)
        except errors as e:
            detail = str(e) if isinstance(e, ValueError) and str(e) else type(e).__name__
            raise _Fail(f"invalid {form} for {what} ({' '.join(detail.split())})", _show(v)) from e

    return _Node(enc, dec, inst)


def _library_class(cls: type) -> _Node:
    """Classes of lazily imported modules (a hint naming one proves its module is loaded)."""
    m: Any = sys.modules.get("datetime")
    if m is not None and issubclass(cls, m.timedelta):
        return _leaf(
            cls,
            lambda v: v.total_seconds(),
            lambda v: cls(seconds=v),
            (int, float),
            OverflowError,
            "number of seconds",
        )
    if m is not None and issubclass(cls, (m.date, m.time)):
        iso: _Fn = getattr(cls, "fromisoformat")  # noqa: B009
        full = issubclass(cls, m.datetime)

        def parse(s: str) -> Any:
            if full and len(s) <= 10:  # 3.11's datetime.fromisoformat takes a bare date too
                raise ValueError("a date without a time")
            if s.endswith("Z") and sys.version_info < (3, 11):  # 3.10 does not take a "Z"
                s = s[:-1] + "+00:00"
            return iso(s)

        excl = m.datetime if not issubclass(cls, (m.datetime, m.time)) else None
        return _leaf(
            cls, lambda v: v.isoformat(), parse, (str,), ValueError, "ISO 8601 string", exclude=excl
        )
    m = sys.modules.get("uuid")
    if m is not None and issubclass(cls, m.UUID):
        return _leaf(cls, str, cls, (str,), ValueError, "UUID string")
    m = sys.modules.get("decimal")
    if m is not None and issubclass(cls, m.Decimal):
        return _leaf(cls, str, cls, (str, int), ArithmeticError, "decimal string")
    m = sys.modules.get("pydantic")
    if m is not None and issubclass(cls, m.BaseModel):
        model: Any = cls
        return _leaf(
            cls,
            lambda v: v.model_dump(mode="json"),
            model.model_validate,
            None,
            ValueError,
            "pydantic model",
        )
    m = sys.modules.get("msgspec")
    if m is not None and issubclass(cls, m.Struct):
        ms = m
        return _leaf(
            cls,
            ms.to_builtins,
            lambda v: ms.convert(v, cls),
            None,
            ms.ValidationError,
            "msgspec Struct",
        )
    raise _Unsupported(
        cls,
        "not JSON-native and not a dataclass, TypedDict, NamedTuple, Enum, "
        "date/time type, UUID, Decimal, bytes or pydantic/msgspec model",
    )
