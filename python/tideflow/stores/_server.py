"""What the server stores (PostgreSQL, Redis, MongoDB) share: their URLs, the import of their
driver, and keeping a password out of every message.

A server store is an ``AsyncStore`` (``run_async`` awaits its coroutines on the caller's event
loop) with a synchronous twin, its ``blocking()`` ``Store``, which ``engine.run`` and the other
synchronous calls use. Nothing here imports a driver: each store imports its own when it is
built, and a missing one is a ``StoreError`` naming the extra to install.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from tideflow.errors import StoreError

__all__ = ["DEFAULT_TIMEOUT", "ServerURL", "import_driver", "parse_url", "redact"]

#: Seconds a server store waits to connect, or for one operation, before it raises ``StoreError``.
DEFAULT_TIMEOUT = 10.0


class ServerURL(NamedTuple):
    """A parsed server URL (the password is kept only here, never in a message)."""

    scheme: str
    host: str
    port: int | None
    user: str | None
    password: str | None
    #: The path without its leading slash, unquoted ("" when there is none).
    path: str
    #: The query parameters, in order.
    query: list[tuple[str, str]]
    #: The URL with the password replaced by ``***``.
    redacted: str


def redact(url: str) -> str:
    """``url`` with the password of its user info (``user:password@``) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc_end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i != -1:
            netloc_end = min(netloc_end, i)
    netloc, tail = rest[:netloc_end], rest[netloc_end:]
    at = netloc.rfind("@")
    if at == -1:
        return url
    userinfo, hosts = netloc[:at], netloc[at + 1 :]
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{hosts}{tail}"


def parse_url(url: str, schemes: tuple[str, ...], store: str) -> ServerURL:
    """Splits a store URL whose scheme is one of ``schemes``; a ``StoreError`` (naming ``store``
    and the URL without its password) for anything malformed."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise StoreError(f"{store}: malformed URL {shown!r}: {redact(str(exc))}") from None
    if parts.scheme.lower() not in schemes:
        wanted = " or ".join(f"{s}://" for s in schemes)
        raise StoreError(f"{store}: a URL starting with {wanted} was expected, got {shown!r}")
    if not parts.hostname:
        raise StoreError(f"{store}: the URL {shown!r} names no host")
    if parts.fragment:
        raise StoreError(
            f"{store}: the URL {shown!r} has a fragment (#...), which means nothing here"
        )
    return ServerURL(
        scheme=parts.scheme.lower(),
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        path=unquote(parts.path.lstrip("/")),
        query=parse_qsl(parts.query, keep_blank_values=True),
        redacted=shown,
    )


def import_driver(module: str, extra: str, store: str) -> Any:
    """Imports a store's driver, or raises a ``StoreError`` that says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise StoreError(
            f"{store} needs the {module.split('.')[0]} package: pip install 'tideflow[{extra}]'"
        ) from exc
