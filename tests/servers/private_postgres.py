"""A private PostgreSQL server for the tests that kill or restart it (never the shared one).

    with PrivatePostgres() as pg:      # initdb into a temporary directory, start on a free port
        store = PostgresStore(pg.url)
        pg.restart()                   # pg_ctl restart -m immediate (a crash and a start)
        pg.stop(); pg.start()

PostgreSQL refuses to run as root: as root, every command runs as the ``postgres`` user
(``runuser -u postgres --``) on a data directory it owns under ``/tmp``. Authentication is
``trust`` on loopback (the bad-credential tests use the shared server). The binaries come from
``TIDEFLOW_TEST_PG_BIN`` or ``/usr/lib/postgresql/*/bin``; without them the test skips (fails under
``CI=true``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from types import TracebackType

from tests.servers import unavailable

__all__ = ["PrivatePostgres", "free_port"]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (at the moment of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin_dir() -> str | None:
    env = os.environ.get("TIDEFLOW_TEST_PG_BIN")
    if env:
        return env
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(found[-1]) if found else None


class PrivatePostgres:
    """A PostgreSQL server of one test module: its own data directory and port."""

    def __init__(self) -> None:
        bindir = _bin_dir()
        if bindir is None:
            why = "no PostgreSQL binaries (pg_ctl) for a private server"
            unavailable(why)
        self.bindir = bindir
        self.root = os.geteuid() == 0
        self.base = tempfile.mkdtemp(prefix="tideflow-pg-")
        self.data = os.path.join(self.base, "data")
        self.sock = self.base
        self.port = free_port()
        #: The URL of the server's ``postgres`` database, as its ``postgres`` superuser.
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if self.root:
            shutil.chown(self.base, "postgres", "postgres")
        os.chmod(self.base, 0o700)
        self._pg("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--no-sync")  # fmt: skip
        self.start()

    def _pg(self, tool: str, *args: str) -> None:
        cmd = [os.path.join(self.bindir, tool), *args]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        """Starts the server (waits until it accepts connections)."""
        opts = (
            f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=50"
        )
        self._pg("pg_ctl", "start", "-w", "-D", self.data, "-o", opts,
                 "-l", os.path.join(self.base, "log"))  # fmt: skip

    def restart(self) -> None:
        """Stops the server at once (``-m immediate``: a crash, recovered at start) and starts it."""
        self._pg("pg_ctl", "stop", "-w", "-D", self.data, "-m", "immediate")
        self.start()

    def stop(self) -> None:
        """Stops the server at once."""
        self._pg("pg_ctl", "stop", "-w", "-D", self.data, "-m", "immediate")

    def close(self) -> None:
        """Stops the server (if running) and removes its data."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg("pg_ctl", "stop", "-w", "-D", self.data, "-m", "immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
