"""A private SecantusDB server for the tests that restart or kill one (never the shared server).

    with PrivateMongo(tmp_path) as server:      # its data in tmp_path/secantus: kept across restarts
        store = MongoStore(server.url + "?directConnection=true")
        server.restart()                         # stop (SIGTERM) and start again on the same port
        server.stop()

``auth=True`` starts it with ``--auth`` after creating the user ``tideflow`` with ``password``.
It skips (fails under ``CI=true``) when ``TIDEFLOW_TEST_SECANTUSD`` names no daemon.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.servers import unavailable

__all__ = ["PrivateMongo"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateMongo:
    """A SecantusDB daemon of this test's own, on a free loopback port (see the module doc)."""

    def __init__(self, tmp: Path, *, auth: bool = False, password: str = "s3cret-pw!") -> None:
        daemon = os.environ.get("TIDEFLOW_TEST_SECANTUSD")
        if not daemon or not os.path.exists(daemon):
            why = (
                "no SecantusDB daemon: TIDEFLOW_TEST_SECANTUSD is not set (scripts/services.sh env)"
            )
            unavailable(why)
        self.daemon = daemon
        self.data = tmp / "secantus"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log = tmp / "secantus.log"
        self.port = _free_port()
        self.auth = auth
        self.password = password
        self.user = "tideflow"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mongodb://127.0.0.1:PORT`` (with the user and password when ``auth``)."""
        if self.auth:
            return f"mongodb://{self.user}:{self.password}@127.0.0.1:{self.port}"
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self, *, auth: bool | None = None) -> None:
        """Starts the daemon and waits until it answers (at most 30 s)."""
        use_auth = self.auth if auth is None else auth
        args = [
            self.daemon,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            str(self.data),
            "--log-level",
            "WARNING",
        ]
        if use_auth:
            args.append("--auth")
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        end = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"SecantusDB did not start; see {self.log}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stops the daemon (SIGTERM, then SIGKILL after 10 s); its data stays."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        end = time.monotonic() + 10
        while time.monotonic() < end:  # the port is free again before a restart binds it
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                time.sleep(0.1)
            except OSError:
                return

    def restart(self) -> None:
        """Stops and starts the daemon on the same port, keeping its data."""
        self.stop()
        self.start()

    def _provision(self) -> None:
        import pymongo

        self.start(auth=False)
        client = pymongo.MongoClient(
            f"mongodb://127.0.0.1:{self.port}/?directConnection=true",
            serverSelectionTimeoutMS=10000,
        )
        try:
            client.admin.command(
                "createUser", self.user, pwd=self.password, roles=[{"role": "root", "db": "admin"}]
            )
        finally:
            client.close()
        self.stop()

    def __enter__(self) -> PrivateMongo:
        if self.auth:
            self._provision()
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
