"""Compiles a ``Workflow`` definition into a plan spec (JSON, validated and hashed in Rust) bound
to this process's callables and their typed codecs."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from tideflow import _core
from tideflow.codec import _step_hints, codec_for, describe
from tideflow.errors import CodecError, DefinitionError
from tideflow.workflow import Step, WaitSignal, Workflow, code_name

TYPE_CHECKING = False  # (see tideflow.retry)
if TYPE_CHECKING:
    from typing import Any

    from tideflow.workflow import Node

__all__ = ["CompiledWorkflow", "compile_workflow"]


class CompiledWorkflow:
    """A workflow compiled to a plan and bound to callables: what an engine runs."""

    __slots__ = ("core", "has_async", "hash", "name", "plan", "queues", "workflow")

    def __init__(
        self,
        workflow: Workflow,
        plan: _core.Plan,
        core: _core.Compiled,
        has_async: bool,
        queues: tuple[str, ...] = (),
    ) -> None:
        self.workflow = workflow
        #: The worker queue of each step, by its index in the plan's step table.
        self.queues = queues
        self.has_async = has_async
        self.plan = plan
        self.core = core
        self.hash = plan.hash
        self.name = plan.name


def _fn_name(f: object) -> str:
    """The name a condition or router has in the plan (and so in its hash, drawing and errors):
    its qualified name without the module (``is_big``, ``Rules.check``, ``<lambda>``). The module
    is left out because it depends on how the code was loaded (``__main__`` for a script, ``app``
    for the worker that imports it), and the same source must give the same plan."""
    return code_name(f, "__qualname__")


class _Compiler:
    def __init__(self, root: Workflow) -> None:
        self.root = root
        self.steps: list[Step[Any, Any]] = []
        self.step_index: dict[int, int] = {}
        self.step_names: dict[str, Step[Any, Any]] = {}
        self.fns: list[Any] = []
        self.fn_index: dict[int, int] = {}
        self.waits: list[WaitSignal] = []
        self.active: set[int] = set()

    def step(self, s: Step[Any, Any]) -> int:
        i = self.step_index.get(id(s))
        if i is not None:
            return i
        other = self.step_names.get(s.name)
        if other is not None and other is not s:
            raise DefinitionError(
                f"workflow {self.root.name!r} uses two different steps named {s.name!r}; "
                "give one of them another name with @step(name=...)"
            )
        self.step_names[s.name] = s
        self.step_index[id(s)] = len(self.steps)
        self.steps.append(s)
        return len(self.steps) - 1

    def fn(self, f: Any) -> int:
        i = self.fn_index.get(id(f))
        if i is None:
            i = self.fn_index[id(f)] = len(self.fns)
            self.fns.append(f)
        return i

    def workflow(self, w: Workflow) -> dict[str, Any]:
        if id(w) in self.active:
            raise DefinitionError(f"workflow {w.name!r} contains itself")
        self.active.add(id(w))
        try:
            if w.start is not None:
                return self.states(w)
            nodes = w.nodes()
            if not nodes:
                raise DefinitionError(f"workflow {w.name!r} has no steps")
            return {"kind": "seq", "children": [self.node(n) for n in nodes]}
        finally:
            self.active.discard(id(w))

    def states(self, w: Workflow) -> dict[str, Any]:
        states = []
        for name, node, nxt in w.states():
            spec: Any
            if nxt is None:
                spec = None
            elif isinstance(nxt, str):
                spec = {"goto": nxt}
            elif isinstance(nxt, Mapping):
                table = []
                for label, target in nxt.items():
                    label = getattr(label, "value", label)
                    if not isinstance(label, str) or not isinstance(target, str):
                        raise DefinitionError(
                            f"the transitions of state {name!r} must map str labels to state names"
                        )
                    table.append([label, target])
                spec = {"labels": table}
            else:
                targets = getattr(nxt, "targets", None)
                if targets is not None:
                    targets = [str(t) for t in targets]
                spec = {"router": {"router": self.fn(nxt), "targets": targets}}
            states.append({"name": name, "body": self.node(node), "next": spec})
        return {"kind": "states", "start": w.start, "states": states}

    def node(self, n: Node) -> dict[str, Any]:
        kind = n[0]
        if kind == "step":
            return {"kind": "step", "step": self.step(n[1])}
        if kind == "sub":
            return {"kind": "sub", "workflow": n[1].name, "body": self.workflow(n[1])}
        if kind == "parallel":
            return {"kind": "parallel", "children": [self.node(c) for c in n[1]]}
        if kind == "map":
            return {"kind": "map", "body": self.node(n[1]), "concurrency": n[2]}
        if kind == "branch":
            other = None if n[3] is None else self.node(n[3])
            return {
                "kind": "branch",
                "cond": self.fn(n[1]),
                "then": self.node(n[2]),
                "otherwise": other,
            }
        if kind == "loop":
            return {
                "kind": "loop",
                "body": self.node(n[1]),
                "until": self.fn(n[2]),
                "max_iterations": n[3],
            }
        if kind == "wait":
            w: WaitSignal = n[1]
            self.waits.append(w)
            on_timeout = None if w.on_timeout is None else self.node(w.on_timeout)
            return {
                "kind": "wait_signal",
                "name": w.name,
                "wait": len(self.waits) - 1,
                "timeout": w.timeout,
                "on_timeout": on_timeout,
            }
        if kind == "sleep":
            return {"kind": "sleep", "seconds": n[1].seconds, "until": n[1].until}
        raise DefinitionError(f"unknown node kind {kind!r}")  # pragma: no cover - builder invariant


#: Stands for "no annotation" while hints are combined: typing.Any, which it is equivalent to,
#: would import `typing` for a workflow that has no type hints at all.
_NOHINT = object()


def _untyped(*hints: object) -> bool:
    typing = sys.modules.get("typing")  # an Any can only exist once typing is loaded
    return any(h is _NOHINT or (typing is not None and h is typing.Any) for h in hints)


def _union(a: object, b: object) -> object:
    from typing import Union

    return Union[a, b]


def _node_hints(n: Node) -> tuple[object, object]:
    """(input hint, output hint) of a node, from its steps' annotations."""
    kind = n[0]
    if kind == "step":
        return _step_hints(n[1].fn, _NOHINT)
    if kind == "sub":
        return _workflow_hints(n[1])
    if kind == "parallel":
        hints = [_node_hints(c) for c in n[1]]
        # the fan-in is a tuple however its branches are typed (the core builds it, also on a
        # resume): an untyped branch is an `object` in it, so a stored output decodes to a tuple
        outs = tuple(object if _untyped(h[1]) else h[1] for h in hints)
        return hints[0][0], tuple.__class_getitem__(outs)
    if kind == "map":
        i, o = _node_hints(n[1])
        return (_NOHINT if _untyped(i) else list[i]), (_NOHINT if _untyped(o) else list[o])  # type: ignore[valid-type]
    if kind == "branch":
        ti, to = _node_hints(n[2])
        oo = _NOHINT if n[3] is None else _node_hints(n[3])[1]
        return ti, (_NOHINT if _untyped(to, oo) else _union(to, oo))
    if kind == "loop":
        return _node_hints(n[1])
    if kind == "wait":
        out = _NOHINT if n[1].type is None else n[1].type
        if n[1].on_timeout is not None:
            alt = _node_hints(n[1].on_timeout)[1]
            out = _NOHINT if _untyped(out, alt) else _union(out, alt)
        return _NOHINT, out
    return _NOHINT, _NOHINT  # sleep passes its input through: its type is the previous node's


def _workflow_hints(w: Workflow) -> tuple[object, object]:
    if w.start is not None:
        for name, node, _ in w.states():
            if name == w.start:
                return _node_hints(node)[0], _NOHINT
        return _NOHINT, _NOHINT
    nodes = w.nodes()
    # a sleep passes its input through: look past it for the types at either end
    first = next((n for n in nodes if n[0] != "sleep"), None)
    last = next((n for n in reversed(nodes) if n[0] != "sleep"), None)
    if first is None or last is None:
        return _NOHINT, _NOHINT
    return _node_hints(first)[0], _node_hints(last)[1]


class _NoCodec:
    """What ``codec_for(Any)`` gives: values pass through unconverted."""

    encode = decode = None


def _codec(hint: object, what: str) -> Any:
    if _untyped(hint):
        return _NoCodec
    try:
        return codec_for(hint)
    except CodecError as e:
        raise DefinitionError(f"{what}: {e}") from None


#: The scalar hints whose values the Rust side checks without calling the decoder.
_NATIVE_CHECKS = {int: "int", float: "float", str: "str", bool: "bool", None: "None"}


def _check(hint: object, codec: Any) -> tuple[str, str]:
    """How a value of ``hint`` is checked before it is stored (see rust/bindings/src/checked.rs):
    ``untyped`` (plain JSON only) for no hint or ``Any``, a scalar's name, or ``typed`` (the stored
    form must decode into the hint); and the hint described for error messages."""
    if codec.decode is None:  # no hint, Any, object: the value must come back as JSON gives it
        return "untyped", "Any"
    key = None if hint is type(None) else hint
    try:
        native = _NATIVE_CHECKS.get(key)  # type: ignore[call-overload]
    except TypeError:  # an unhashable hint
        native = None
    if native is not None:
        return native, native  # (describe() would import typing for a plain scalar)
    return "typed", describe(hint)


def compile_workflow(w: Workflow) -> CompiledWorkflow:
    """Validates ``w`` and binds it: raises DefinitionError naming what is wrong."""
    c = _Compiler(w)
    root = c.workflow(w)
    compensation = None if w.compensation is None else c.step(w.compensation)
    spec = {
        "name": w.name,
        "version": w.version,
        "steps": [
            {
                "name": s.name,
                "retry": None if s.retry is None else s.retry.to_spec(),
                "timeout": s.timeout,
            }
            for s in c.steps
        ],
        "fns": [_fn_name(f) for f in c.fns],
        "root": root,
        "timeout": w.timeout,
        "compensation": compensation,
    }
    plan = _core.Plan(_core.encode_json(spec).decode())
    bound = []
    for s in c.steps:
        ret = _step_hints(s.fn, _NOHINT)[1]
        out_codec = _codec(ret, f"the return type of step {s.name!r}")
        check, hint = _check(ret, out_codec)
        retry_on = s.retry.retry_on if s.retry is not None else (Exception,)
        give_up_on = s.retry.give_up_on if s.retry is not None else ()
        enc, dec = out_codec.encode, out_codec.decode
        bound.append((s.fn, s.is_async, enc, dec, retry_on, give_up_on, check, hint))
    in_hint, out_hint = _workflow_hints(w)
    in_codec = _codec(in_hint, f"the input type of workflow {w.name!r}")
    in_check, in_described = _check(in_hint, in_codec)
    out_codec = _codec(out_hint, f"the output type of workflow {w.name!r}")
    waits = [
        None if wt.type is None else _codec(wt.type, f"the type of signal {wt.name!r}").decode
        for wt in c.waits
    ]
    core = _core.Compiled(
        plan,
        bound,
        c.fns,
        in_codec.encode,
        in_codec.decode,
        out_codec.decode,
        waits,
        in_check,
        in_described,
    )
    return CompiledWorkflow(
        w, plan, core, any(s.is_async for s in c.steps), tuple(s.queue for s in c.steps)
    )
