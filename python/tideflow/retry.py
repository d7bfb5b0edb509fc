"""Retry policies for steps, and the duration helper every API that takes a time uses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Union

from tideflow.errors import DefinitionError

__all__ = ["Duration", "Retry", "to_seconds"]

#: A duration: seconds (int or float) or a ``datetime.timedelta``.
Duration = Union[int, float, timedelta]


def to_seconds(value: Duration, what: str) -> float:
    """Converts a duration (seconds or ``timedelta``) to float seconds, rejecting bad values."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise DefinitionError(
            f"{what} must be seconds (int or float) or a timedelta, got {type(value).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise DefinitionError(f"{what} must be a finite duration >= 0, got {value!r}")
    return seconds


def _secs(value: Duration) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _exception_types(value: object, what: str) -> tuple[type[BaseException], ...]:
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise DefinitionError(f"{what} must be exception classes, got {item!r}")
    return items


@dataclass(frozen=True)
class Retry:
    """How often a failing step runs again and how long it waits in between.

    The delay before attempt ``n + 1`` is ``initial_delay * multiplier ** (n - 1)``, capped at
    ``max_delay``, then spread by ``jitter`` (a fraction, deterministic per instance and attempt).
    An exception retries when it is an instance of ``retry_on`` and not of ``give_up_on``.
    """

    max_attempts: int = 3
    initial_delay: Duration = 1.0
    multiplier: float = 2.0
    max_delay: Duration = 60.0
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = field(default=(Exception,))
    give_up_on: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise DefinitionError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise DefinitionError(f"max_attempts must be at least 1, got {self.max_attempts}")
        object.__setattr__(self, "initial_delay", to_seconds(self.initial_delay, "initial_delay"))
        object.__setattr__(self, "max_delay", to_seconds(self.max_delay, "max_delay"))
        if not isinstance(self.multiplier, (int, float)) or not self.multiplier >= 1:
            raise DefinitionError(f"multiplier must be a number >= 1, got {self.multiplier!r}")
        if not isinstance(self.jitter, (int, float)) or not 0 <= self.jitter <= 1:
            raise DefinitionError(f"jitter must be within [0, 1], got {self.jitter!r}")
        object.__setattr__(self, "retry_on", _exception_types(self.retry_on, "retry_on"))
        object.__setattr__(self, "give_up_on", _exception_types(self.give_up_on, "give_up_on"))

    def delay(self, attempt: int) -> float:
        """The delay in seconds after failed attempt ``attempt`` (1-based), without jitter."""
        base = _secs(self.initial_delay) * float(self.multiplier) ** max(attempt - 1, 0)
        return min(base, _secs(self.max_delay))

    def to_spec(self) -> dict[str, float | int]:
        """The policy as the plan spec stores it."""
        return {
            "max_attempts": self.max_attempts,
            "initial_delay": _secs(self.initial_delay),
            "multiplier": float(self.multiplier),
            "max_delay": _secs(self.max_delay),
            "jitter": float(self.jitter),
        }
