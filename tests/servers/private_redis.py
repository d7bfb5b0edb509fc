"""A private Redis server for the tests that kill or restart one (never the shared server).

    with PrivateRedis(tmp_path) as server:
        store = RedisStore(server.url)
        server.restart()            # SHUTDOWN NOSAVE, then the same port and directory again
        server.restart(kill=True)   # SIGKILL instead
        server.stop()

It runs ``redis-server`` in the foreground as a subprocess on a free loopback port, with a
password, its data in ``directory`` and ``appendonly yes``/``appendfsync always``, so every
acknowledged write survives a restart. Skips the test when ``redis-server`` is not installed
(fails under ``CI=true``).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.servers import unavailable

__all__ = ["PASSWORD", "PrivateRedis"]

PASSWORD = "private-redis-pw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` subprocess of one test (see the module doc)."""

    def __init__(self, directory: Path, appendfsync: str = "always") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            why = "redis-server is not installed (scripts/services.sh install)"
            unavailable(why)
        self.binary = binary
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.appendfsync = appendfsync
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """``redis://:PASSWORD@127.0.0.1:PORT/0``."""
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Starts the server (on the same port and directory as before) and waits for it."""
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 -- handed to the child
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--requirepass",
                PASSWORD,
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.directory / 'redis.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(f"AUTH {PASSWORD}\r\nPING\r\n".encode())
                    got = b""
                    while b"PONG" not in got and b"LOADING" not in got and len(got) < 200:
                        chunk = s.recv(100)
                        if not chunk:
                            break
                        got += chunk
                    if b"PONG" in got:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer within 20 s")
            time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        """Stops the server: ``SHUTDOWN NOSAVE`` (SIGTERM if it does not answer), or SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.send_signal(signal.SIGKILL)
        else:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(f"AUTH {PASSWORD}\r\nSHUTDOWN NOSAVE\r\n".encode())
                    s.settimeout(2)
                    try:
                        while s.recv(100):
                            pass
                    except OSError:
                        pass
            except OSError:
                proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def restart(self, kill: bool = False) -> None:
        """Stops the server (see ``stop``) and starts it again on the same port and data."""
        self.stop(kill=kill)
        self.start()

    def client(self) -> object:
        """A redis-py client of its own (e.g. for ``CLIENT KILL``); close it after use."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=PASSWORD)

    def __enter__(self) -> PrivateRedis:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
