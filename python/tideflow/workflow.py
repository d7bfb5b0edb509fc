"""The definition API: ``@step`` and the ``Workflow`` builder.

A workflow is built by chaining immutable builder calls; each returns a new ``Workflow`` that
shares its prefix with the old one, so building a 10,000-step chain costs O(n). Nothing runs
while building: the definition compiles to a plan (data) when it is registered, run or drawn.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping

from tideflow._args import MAX_U32, check_count, check_text, shown
from tideflow.errors import DefinitionError
from tideflow.retry import Retry, to_seconds

__all__ = ["Sleep", "Step", "WaitSignal", "Workflow", "sleep", "sleep_until", "step", "wait_signal"]

# `typing` is kept off the import path (see tideflow.retry): type checkers see the aliases and a
# generic Step; at run time the aliases are built on first access and Step[I, O] is a
# types.GenericAlias.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Generic, TypeVar, Union, overload

    from tideflow._compile import CompiledWorkflow
    from tideflow.retry import Duration

    In = TypeVar("In")
    Out = TypeVar("Out")

    #: Something that can stand where a step stands: a step, a whole workflow (inlined), a wait
    #: for a signal or a durable sleep.
    Runnable = Union["Step[Any, Any]", "Workflow", "WaitSignal", "Sleep"]
    #: Where an explicit state goes next: a state name, a {label: state} table, or a router.
    Next = Union[str, Mapping[str, str], Callable[[Any], str], None]
    # Node forms (plain tuples, compiled by tideflow._compile):
    #   ("step", Step) · ("sub", Workflow) · ("parallel", [node]) · ("map", node, concurrency)
    #   ("branch", cond, node, node | None) · ("loop", node, until, max_iterations)
    #   ("wait", WaitSignal) · ("sleep", Sleep)
    Node = tuple[Any, ...]
else:

    class Generic:
        """Stands in for ``typing.Generic`` at run time: ``Step[int, str]`` is a GenericAlias."""

        __slots__ = ()

        def __class_getitem__(cls, params):
            return cls if cls is Generic else types.GenericAlias(cls, params)

    In = Out = None

    def __getattr__(name: str) -> object:
        """Builds the type aliases (the same as type checkers see) when they are asked for."""
        if name not in ("Runnable", "Next", "Node"):
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from typing import Any, Union

        globals()["Runnable"] = Union["Step[Any, Any]", "Workflow", "WaitSignal", "Sleep"]
        globals()["Next"] = Union[str, Mapping[str, str], Callable[[Any], str], None]
        globals()["Node"] = tuple[Any, ...]
        return globals()[name]


class Step(Generic[In, Out]):
    """A unit of work: a sync or async function ``fn(ctx, value) -> value`` plus its options."""

    __slots__ = ("__dict__", "fn", "is_async", "name", "queue", "retry", "timeout")

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: Duration | None = None,
        queue: str | None = None,
    ) -> None:
        if not callable(fn):
            raise DefinitionError(f"@step needs a function, got {fn!r}")
        if retry is not None and not isinstance(retry, Retry):
            raise DefinitionError(f"retry= must be a tideflow.Retry, got {type(retry).__name__}")
        self.fn = fn
        self.name: str = name if name is not None else code_name(fn, "__name__")
        check_text(self.name, "a step name", error=DefinitionError)
        self.retry = retry
        self.timeout = None if timeout is None else to_seconds(timeout, f"timeout of {self.name}")
        if queue is not None:
            check_text(queue, f"queue of step {self.name!r}", error=DefinitionError)
        #: The worker queue the step runs on (``default`` unless given): only workers that serve
        #: it run the step. Routing is not part of the plan, so it does not change the plan hash.
        self.queue: str = "default" if queue is None else queue
        self.is_async = _is_async(fn)
        _check_callable(fn, self.name)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the function directly (handy in unit tests of a single step)."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<tideflow step {self.name}>"


def code_name(fn: object, attr: str) -> str:
    """The name of a callable as a plan knows it: its ``__name__`` (or ``__qualname__``), the
    function's for a ``functools.partial``, the class's for a callable object. Never its module or
    its repr (which holds an address): the same source must give the same plan in every process."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, attr, None)
    return name if isinstance(name, str) and name else type(fn).__qualname__


def _check_callable(fn: Callable[..., Any], name: str) -> None:
    """Raises DefinitionError unless ``fn`` can be called as ``fn(ctx, value)``. Further positional
    parameters are fine if they have defaults (or are ``*args``), and keyword-only ones if they do."""
    code = getattr(fn, "__code__", None)
    if type(fn) is types.FunctionType and code is not None:  # without `inspect` (slow to import)
        n, flags = code.co_argcount, code.co_flags
        required = n - len(fn.__defaults__ or ())
        kwonly = code.co_varnames[n : n + code.co_kwonlyargcount]
        missing_kw = [k for k in kwonly if k not in (fn.__kwdefaults__ or {})]
        if required <= 2 and (n >= 2 or flags & 0x04) and not missing_kw:  # 0x04: CO_VARARGS
            return
    else:
        import inspect

        try:
            inspect.signature(fn).bind(None, None)
            return
        except ValueError:  # no signature to read (some builtins): it may well work
            return
        except TypeError:
            pass
    raise DefinitionError(
        f"step {name!r} cannot be called as fn(ctx, value): a step function takes the context and "
        "the input value as its first two positional parameters (any others need defaults)"
    )


def _is_async(fn: object) -> bool:
    """Whether calling ``fn`` returns a coroutine (without importing ``inspect``, which is slow)."""
    while True:
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif hasattr(fn, "__func__"):  # bound method
            fn = fn.__func__
        else:
            break
    if getattr(fn, "_is_coroutine_marker", None) is not None:  # inspect.markcoroutinefunction
        return True
    code = getattr(fn, "__code__", None)
    if code is None and not isinstance(fn, type):
        code = getattr(type(fn).__call__, "__code__", None)  # a callable object
    return bool(code is not None and code.co_flags & 0x80)  # CO_COROUTINE


if TYPE_CHECKING:

    @overload
    def step(fn: Callable[..., Any], /) -> Step[Any, Any]: ...
    @overload
    def step(
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: Duration | None = None,
        queue: str | None = None,
    ) -> Callable[[Callable[..., Any]], Step[Any, Any]]: ...


def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retry: Retry | None = None,
    timeout: Duration | None = None,
    queue: str | None = None,
) -> Step[Any, Any] | Callable[[Callable[..., Any]], Step[Any, Any]]:
    """Declares a step, bare (``@step``) or with options (``@step(retry=..., timeout=...,
    name=..., queue=...)``; ``queue`` routes it to the workers that serve that queue)."""
    if fn is not None:
        return Step(fn, name=name, retry=retry, timeout=timeout, queue=queue)

    def wrap(f: Callable[..., Any]) -> Step[Any, Any]:
        return Step(f, name=name, retry=retry, timeout=timeout, queue=queue)

    return wrap


class WaitSignal:
    """Suspends the instance until signal ``name`` arrives; its payload (decoded to ``type`` when
    given) is the output. After ``timeout``, ``on_timeout`` runs on the wait's input instead; without
    it the instance fails with ``StepTimeout``."""

    __slots__ = ("name", "on_timeout", "timeout", "type")

    def __init__(
        self,
        name: str,
        timeout: Duration | None = None,
        type: object = None,
        on_timeout: Runnable | None = None,
    ) -> None:
        check_text(name, "a signal name", error=DefinitionError)
        self.name = name
        self.timeout = None if timeout is None else to_seconds(timeout, f"timeout of wait {name!r}")
        self.type = None if type is None else _check_type(type, f"type= of the wait for {name!r}")
        if on_timeout is not None and self.timeout is None:
            raise DefinitionError(f"the wait for {name!r} has on_timeout= but no timeout=")
        self.on_timeout = None if on_timeout is None else as_node(on_timeout, "on_timeout=")

    def __repr__(self) -> str:
        return f"<tideflow wait for signal {self.name!r}>"


class Sleep:
    """Suspends the instance for a duration or until a moment; the input passes through."""

    __slots__ = ("seconds", "until")

    def __init__(self, seconds: float | None = None, until: float | None = None) -> None:
        self.seconds = seconds
        self.until = until

    def __repr__(self) -> str:
        what = f"{self.seconds}s" if self.seconds is not None else f"until {self.until}"
        return f"<tideflow sleep {what}>"


def _check_type(hint: object, what: str) -> object:
    """``hint`` if the codec can handle it (compiled once, and cached); a DefinitionError naming
    ``what`` if it is no type hint at all (``[1, 2]``, ``"x:"``) or one the codec cannot handle."""
    from tideflow.codec import codec_for

    try:
        codec_for(hint)
    except Exception as e:  # whatever a malformed hint makes `typing` raise
        raise DefinitionError(
            f"{what} must be a type the codec handles, got {shown(hint)}: {e}"
        ) from None
    return hint


def wait_signal(
    name: str,
    timeout: Duration | None = None,
    type: object = None,
    on_timeout: Runnable | None = None,
) -> WaitSignal:
    """A wait for signal ``name``, to use as an explicit state or anywhere a step stands."""
    return WaitSignal(name, timeout, type, on_timeout)


def sleep(duration: Duration) -> Sleep:
    """A durable sleep of ``duration`` (seconds or ``timedelta``); honoured across restarts."""
    return Sleep(seconds=to_seconds(duration, "sleep duration"))


def sleep_until(moment: object) -> Sleep:
    """A durable sleep until ``moment`` (a timezone-aware ``datetime``, or seconds since the epoch)."""
    if isinstance(moment, (int, float)) and not isinstance(moment, bool):
        try:
            until = float(moment)
        except OverflowError:  # an int beyond a float's range
            until = float("inf")
        if not abs(until) < float("inf"):  # also false for NaN
            raise DefinitionError(
                f"sleep_until() needs a finite number of seconds since the epoch, got {shown(moment)}"
            )
        return Sleep(until=until)
    timestamp = getattr(moment, "timestamp", None)
    if timestamp is None or getattr(moment, "utcoffset", lambda: None)() is None:
        raise DefinitionError(f"sleep_until() needs a timezone-aware datetime, got {moment!r}")
    return Sleep(until=float(timestamp()))


def as_node(x: object, where: str) -> Node:
    """The node for something given to a builder method, or a DefinitionError saying why not."""
    if isinstance(x, Step):
        return ("step", x)
    if isinstance(x, Workflow):
        return ("sub", x)
    if isinstance(x, WaitSignal):
        return ("wait", x)
    if isinstance(x, Sleep):
        return ("sleep", x)
    what = getattr(x, "__qualname__", None) or type(x).__name__
    hint = " (decorate it with @tideflow.step)" if callable(x) else ""
    raise DefinitionError(f"{where} takes a step or a Workflow, but {what} is not a step{hint}")


def _check_fn(f: object, where: str) -> Callable[[Any], Any]:
    if not callable(f) or isinstance(f, (Step, Workflow)):
        raise DefinitionError(f"{where} must be a plain function of the previous output, got {f!r}")
    return f


class Workflow:
    """A workflow definition, built by chaining; every method returns a new ``Workflow``.

    ``Workflow(name)`` builds a pipeline with ``.then``/``.parallel``/``.map``/``.branch``/
    ``.loop``; ``Workflow(name, start="a")`` builds an explicit state machine with ``.state``.
    """

    __slots__ = (
        "_compiled",
        "_node",
        "_parent",
        "_states",
        "compensation",
        "concurrency",
        "name",
        "start",
        "timeout",
        "version",
    )

    def __init__(
        self,
        name: str,
        version: str | None = None,
        *,
        start: str | None = None,
        timeout: Duration | None = None,
        concurrency: int | None = None,
    ) -> None:
        check_text(name, "a workflow name", error=DefinitionError)
        if concurrency is not None and (
            type(concurrency) is not int or concurrency < 1  # bool is not a count
        ):
            raise DefinitionError(
                f"concurrency of workflow {name!r} must be a positive int, got {concurrency!r}"
            )
        if version is not None:
            check_text(version, "version", error=DefinitionError, empty=True)
        if start is not None:
            check_text(start, "start", error=DefinitionError)
        self.name = name
        self.version = version
        self.start = start
        self.timeout = None if timeout is None else to_seconds(timeout, f"timeout of {name}")
        #: At most this many instances of the workflow run at once across all workers of the
        #: store (None: no limit). Deployment, not plan: it does not change the plan hash.
        self.concurrency = concurrency
        self._parent: Workflow | None = None
        self._node: Node | None = None
        self._states: tuple[tuple[str, Node, Next], ...] = ()
        self._compiled: CompiledWorkflow | None = None
        self.compensation: Step[Any, Any] | None = None

    def _derive(self) -> Workflow:
        w = Workflow.__new__(Workflow)
        w.name, w.version, w.start, w.timeout = self.name, self.version, self.start, self.timeout
        w.concurrency = self.concurrency
        w._parent, w._node, w._states, w._compiled = None, None, self._states, None
        w.compensation = self.compensation
        return w

    def _append(self, node: Node) -> Workflow:
        if self.start is not None:
            raise DefinitionError(
                f"workflow {self.name!r} is a state machine (start={self.start!r}): "
                "add states with .state(), or wrap a pipeline in a Workflow and use it as a state"
            )
        w = self._derive()
        w._parent, w._node = self, node
        return w

    def then(self, x: Runnable) -> Workflow:
        """Runs ``x`` (a step or a workflow) on the previous output."""
        return self._append(as_node(x, "then()"))

    def parallel(self, *xs: Runnable) -> Workflow:
        """Runs each of ``xs`` on the previous output; the next node receives the tuple of results."""
        if not xs:
            raise DefinitionError("parallel() needs at least one step")
        return self._append(("parallel", [as_node(x, "parallel()") for x in xs]))

    def map(self, x: Runnable, concurrency: int | None = None) -> Workflow:
        """Runs ``x`` on each item of the previous output (a list); results stay in order."""
        if concurrency is not None:
            check_count(concurrency, "map concurrency", low=1, high=MAX_U32, error=DefinitionError)
        return self._append(("map", as_node(x, "map()"), concurrency))

    def branch(
        self,
        condition: Callable[[Any], object],
        then: Runnable,
        otherwise: Runnable | None = None,
    ) -> Workflow:
        """Runs ``then`` when ``condition(previous output)`` is true, else ``otherwise`` (or passes
        the value through). The decision is checkpointed."""
        cond = _check_fn(condition, "branch() condition")
        other = None if otherwise is None else as_node(otherwise, "branch(otherwise=)")
        return self._append(("branch", cond, as_node(then, "branch(then=)"), other))

    def loop(
        self,
        body: Runnable,
        until: Callable[[Any], object],
        max_iterations: int | None = None,
    ) -> Workflow:
        """Repeats ``body`` (each output feeding the next iteration) until ``until(output)`` holds;
        more than ``max_iterations`` iterations fail the instance."""
        cond = _check_fn(until, "loop() until")
        if max_iterations is None:
            raise DefinitionError(
                f"a loop in workflow {self.name!r} has no bound: give it max_iterations"
            )
        check_count(max_iterations, "max_iterations", low=1, high=MAX_U32, error=DefinitionError)
        return self._append(("loop", as_node(body, "loop()"), cond, max_iterations))

    def wait_signal(
        self,
        name: str,
        timeout: Duration | None = None,
        type: object = None,
        on_timeout: Runnable | None = None,
    ) -> Workflow:
        """Suspends until signal ``name`` arrives; its payload (decoded to ``type``) is the next
        input. After ``timeout``, runs ``on_timeout`` on the current value, or fails the instance."""
        return self._append(("wait", WaitSignal(name, timeout, type, on_timeout)))

    def sleep(self, duration: Duration) -> Workflow:
        """Suspends for ``duration`` (durable: a restart honours the remaining time)."""
        return self._append(("sleep", sleep(duration)))

    def sleep_until(self, moment: object) -> Workflow:
        """Suspends until ``moment`` (a timezone-aware datetime, or epoch seconds)."""
        return self._append(("sleep", sleep_until(moment)))

    def on_cancel(self, compensation: Step[Any, Any]) -> Workflow:
        """Runs ``compensation`` (with the cancellation reason as its input) when an instance is
        cancelled; the instance is CANCELLED once it has run."""
        if not isinstance(compensation, Step):
            raise DefinitionError(f"on_cancel() takes a step, got {compensation!r}")
        w = self._derive()
        w._parent, w._node = self._parent, self._node
        w.compensation = compensation
        return w

    def state(self, name: str, x: Runnable, next: Next = None) -> Workflow:
        """Adds a named state running ``x``; ``next`` is a state name, a ``{label: state}`` table
        (the output picks the label), a router function returning a state name, or None (end)."""
        if self.start is None:
            raise DefinitionError(
                f"workflow {self.name!r} has no start state: create it as Workflow(name, start=...)"
            )
        check_text(name, "a state name", error=DefinitionError)
        if any(s[0] == name for s in self._states):
            raise DefinitionError(f"workflow {self.name!r} defines state {name!r} twice")
        if next is not None and not isinstance(next, (str, Mapping)) and not callable(next):
            raise DefinitionError(
                f"next= of state {name!r} must be a state name, a dict or a router"
            )
        w = self._derive()
        w._states = (*self._states, (name, as_node(x, f"state({name!r})"), next))
        return w

    def nodes(self) -> list[Node]:
        """The pipeline's nodes in order (empty for a state machine)."""
        out: list[Node] = []
        w: Workflow | None = self
        while w is not None and w._node is not None:
            out.append(w._node)
            w = w._parent
        out.reverse()
        return out

    def states(self) -> tuple[tuple[str, Node, Next], ...]:
        """The explicit states, in the order they were added."""
        return self._states

    def compile(self) -> CompiledWorkflow:
        """Validates the definition and compiles it to a plan; raises DefinitionError if invalid."""
        if self._compiled is None:
            from tideflow._compile import compile_workflow

            try:
                self._compiled = compile_workflow(self)
            except UnicodeEncodeError as e:  # a name or label no store could hold
                raise DefinitionError(
                    f"workflow {self.name!r}: a name or label must be text that UTF-8 can "
                    f"encode, got {e.object[e.start : e.end]!r} in {e.object!r}"
                ) from None
        return self._compiled

    @property
    def plan_hash(self) -> str:
        """The content hash of the compiled plan (what running instances pin)."""
        return self.compile().hash

    def to_mermaid(self) -> str:
        """The plan drawn as a Mermaid flowchart."""
        return self.compile().plan.to_mermaid()

    def to_json(self) -> str:
        """The plan as JSON (names and structure only: no code)."""
        return self.compile().plan.to_json()

    def __repr__(self) -> str:
        size = len(self._states) if self.start is not None else len(self.nodes())
        kind = "states" if self.start is not None else "nodes"
        return f"<Workflow {self.name!r} version={self.version!r} {size} {kind}>"
