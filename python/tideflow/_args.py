"""Checks of the arguments the public API receives, so that a bad one is refused at the call that
received it with a tideflow error naming the argument and what is allowed (never a bare
``TypeError``, ``OverflowError`` or ``UnicodeEncodeError`` from deeper down)."""

from __future__ import annotations

from tideflow.errors import InvalidArgument

TYPE_CHECKING = False  # (see tideflow.retry)
if TYPE_CHECKING:
    from tideflow.errors import TideflowError

__all__ = ["MAX_COUNT", "MAX_U32", "check_count", "check_text", "shown"]

#: The largest bound a plan stores (attempts, iterations, concurrency): an unsigned 32-bit int.
MAX_U32 = 2**32 - 1
#: The largest ``limit=`` a query takes (a signed 64-bit int, what every store can index).
MAX_COUNT = 2**63 - 1


def check_text(
    value: object,
    what: str,
    *,
    error: type[TideflowError] = InvalidArgument,
    empty: bool = False,
) -> str:
    """``value`` if it is a str (non-empty unless ``empty``) that UTF-8 can encode (no lone
    surrogate such as ``"\\ud800"``: it could never be stored); ``error`` naming ``what`` if not."""
    if not isinstance(value, str):
        raise error(f"{what} must be a str, got {type(value).__name__} {shown(value)}")
    if not value and not empty:
        raise error(f"{what} must be a non-empty str")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise error(
            f"{what} must be text that UTF-8 can encode, got {shown(value)} (a lone surrogate "
            f"{value[e.start]!r} at index {e.start})"
        ) from None
    return value


def check_count(
    value: object,
    what: str,
    *,
    low: int = 0,
    high: int = MAX_COUNT,
    error: type[TideflowError] = InvalidArgument,
) -> int:
    """``value`` if it is an int (not a bool) within ``[low, high]``; ``error`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{what} must be an int, got {type(value).__name__} {shown(value)}")
    if not low <= value <= high:
        raise error(f"{what} must be an int in [{low}, {_bound(high)}], got {shown(value)}")
    return value


def _bound(n: int) -> str:
    for bits in (32, 63, 64):
        if n == 2**bits - 1:
            return f"2**{bits} - 1"
    return str(n)


def shown(value: object) -> str:
    """A repr for a message, shortened (and never failing: a 5,000-digit int has no decimal repr
    under Python's default digit limit)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"(an int of {value.bit_length()} bits)"
    try:
        text = repr(value)
    except Exception:  # a repr that raises: show the type alone
        return f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."
