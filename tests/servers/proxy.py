"""A TCP proxy between a store and its server, for the fault tests: it forwards bytes both ways
and, on request, drops connections, refuses new ones, or swallows a server's reply (the server
did the work, the client never hears of it: a lost acknowledgement).

    with Proxy("127.0.0.1", server_port) as proxy:
        store = PostgresStore(proxy.url(url))
        proxy.drop_reply_to(b"commit")  # the reply to the next request containing b"commit"
        ...

It runs in threads of its own (one accepting, two per connection), so it works beside sync and
async code alike; everything it does is on loopback.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Proxy"]


class _Link:
    """One proxied connection: the client's socket and the server's."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        #: Set when the client sent a request carrying the armed marker: the next reply is dropped.
        self.swallow = False
        self.closed = False
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class Proxy:
    """A loopback TCP proxy to ``host:port`` with switches for faults (see the module doc)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        #: The port clients connect to.
        self.port: int = self._listener.getsockname()[1]
        #: How many connections were accepted (refused ones included).
        self.connections = 0
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._refuse = False
        self._drop_next = False
        self._marker: bytes | None = None
        self._stopped = False
        #: How many replies were swallowed.
        self.swallowed = 0
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    # -- switches -------------------------------------------------------------------------------

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's (user and password kept)."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def cut(self) -> None:
        """Closes every open connection now (as a server or a network that drops them)."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    def refuse(self, on: bool = True) -> None:
        """While on, new connections are closed as soon as they are accepted."""
        self._refuse = on

    def drop_next_reply(self) -> None:
        """The next bytes any server sends are swallowed and that connection closed."""
        self._drop_next = True

    def drop_reply_to(self, marker: bytes) -> None:
        """The reply to the next request whose bytes contain ``marker`` is swallowed and that
        connection closed: the server applied the request, the client never hears."""
        self._marker = marker

    @property
    def armed(self) -> bool:
        """Whether a reply is still waiting to be swallowed."""
        return self._drop_next or self._marker is not None

    def close(self) -> None:
        """Stops accepting and closes every connection."""
        self._stopped = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the pumps -----------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            if self._refuse:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=self._up, args=(link,), daemon=True).start()
            threading.Thread(target=self._down, args=(link,), daemon=True).start()

    def _up(self, link: _Link) -> None:
        """Client to server."""
        try:
            while True:
                data = link.client.recv(65536)
                if not data:
                    break
                marker = self._marker
                if marker is not None and marker in data:
                    self._marker = None
                    link.swallow = True
                link.server.sendall(data)
        except OSError:
            pass
        link.close()

    def _down(self, link: _Link) -> None:
        """Server to client."""
        try:
            while True:
                data = link.server.recv(65536)
                if not data:
                    break
                if link.swallow or self._drop_next:
                    self._drop_next = False
                    link.swallow = False
                    self.swallowed += 1
                    break
                link.client.sendall(data)
        except OSError:
            pass
        link.close()
