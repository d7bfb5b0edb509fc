"""Retry policies for steps, and the duration helper every API that takes a time uses."""

from __future__ import annotations

import sys

from tideflow._args import MAX_U32, check_count, shown
from tideflow.errors import DefinitionError

__all__ = ["Duration", "Retry", "to_seconds"]

# `typing` is kept off the import path (with what it pulls in it costs ~1 MB and several ms):
# names used only in annotations are imported for type checkers alone. mypy treats a constant
# named TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import timedelta
    from typing import Union

    from tideflow.errors import TideflowError

    #: A duration: seconds (int or float) or a ``datetime.timedelta``.
    Duration = Union[int, float, "timedelta"]
else:

    def __getattr__(name: str) -> object:
        """Builds ``Duration`` (the same alias as for type checkers) when it is asked for."""
        if name == "Duration":
            from typing import Union

            globals()[name] = value = Union[int, float, "timedelta"]
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_INF = float("inf")  # (not math.inf: `math` is a shared library, ~90 KB to load)


def to_seconds(value: Duration, what: str, error: type[TideflowError] = DefinitionError) -> float:
    """Converts a duration (seconds or ``timedelta``) to float seconds, rejecting bad values with
    ``error`` (a ``DefinitionError`` for a definition, an ``InvalidArgument`` for a call)."""
    dt = sys.modules.get("datetime")  # not imported here: a timedelta proves it is loaded
    if dt is not None and isinstance(value, dt.timedelta):
        seconds = float(value.total_seconds())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = _finite(value)
    else:
        raise error(
            f"{what} must be seconds (int or float) or a timedelta, got {type(value).__name__}"
        )
    if not 0 <= seconds < _INF:  # also false for NaN
        raise error(f"{what} must be a finite duration >= 0, got {shown(value)}")
    return seconds


def _finite(x: float) -> float:
    """``x`` as a float; an int too large for one (``10**400``) is infinite, no finite duration."""
    try:
        return float(x)
    except OverflowError:
        return _INF


def _exception_types(value: object, what: str) -> tuple[type[BaseException], ...]:
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise DefinitionError(f"{what} must be exception classes, got {item!r}")
    return items


class Retry:
    """How often a failing step runs again and how long it waits in between.

    The delay before attempt ``n + 1`` is ``initial_delay * multiplier ** (n - 1)``, capped at
    ``max_delay``, then spread by ``jitter`` (a fraction, deterministic per instance and attempt).
    An exception retries when it is an instance of ``retry_on`` and not of ``give_up_on``.
    Immutable; durations are seconds or ``timedelta`` and are kept as float seconds.
    """

    __slots__ = (
        "give_up_on",
        "initial_delay",
        "jitter",
        "max_attempts",
        "max_delay",
        "multiplier",
        "retry_on",
    )

    max_attempts: int
    initial_delay: float
    multiplier: float
    max_delay: float
    jitter: float
    retry_on: tuple[type[BaseException], ...]
    give_up_on: tuple[type[BaseException], ...]

    def __init__(
        self,
        max_attempts: int = 3,
        initial_delay: Duration = 1.0,
        multiplier: float = 2.0,
        max_delay: Duration = 60.0,
        jitter: float = 0.0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        give_up_on: type[BaseException] | tuple[type[BaseException], ...] = (),
    ) -> None:
        check_count(max_attempts, "max_attempts", low=1, high=MAX_U32, error=DefinitionError)
        if (
            isinstance(multiplier, bool)
            or not isinstance(multiplier, (int, float))
            or not 1 <= _finite(multiplier) < _INF
        ):
            raise DefinitionError(
                f"multiplier must be a finite number >= 1, got {shown(multiplier)}"
            )
        if (
            isinstance(jitter, bool)
            or not isinstance(jitter, (int, float))
            or not 0 <= _finite(jitter) <= 1
        ):
            raise DefinitionError(f"jitter must be a number within [0, 1], got {shown(jitter)}")
        set_ = object.__setattr__
        set_(self, "max_attempts", max_attempts)
        set_(self, "initial_delay", to_seconds(initial_delay, "initial_delay"))
        set_(self, "multiplier", float(multiplier))
        set_(self, "max_delay", to_seconds(max_delay, "max_delay"))
        set_(self, "jitter", float(jitter))
        set_(self, "retry_on", _exception_types(retry_on, "retry_on"))
        set_(self, "give_up_on", _exception_types(give_up_on, "give_up_on"))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Retry is immutable; build a new one instead of setting {name}")

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, n) for n in Retry.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Retry) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Retry(max_attempts={self.max_attempts}, initial_delay={self.initial_delay}, "
            f"multiplier={self.multiplier}, max_delay={self.max_delay}, jitter={self.jitter}, "
            f"retry_on={self.retry_on!r}, give_up_on={self.give_up_on!r})"
        )

    def delay(self, attempt: int) -> float:
        """The delay in seconds after failed attempt ``attempt`` (1-based), without jitter."""
        base = self.initial_delay * self.multiplier ** max(attempt - 1, 0)
        return min(base, self.max_delay)

    def to_spec(self) -> dict[str, float | int]:
        """The policy as the plan spec stores it."""
        return {
            "max_attempts": self.max_attempts,
            "initial_delay": self.initial_delay,
            "multiplier": self.multiplier,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
        }
