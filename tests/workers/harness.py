"""Starting and stopping worker processes for the tests, and reading what their steps noted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def store_url(server: str | None, tmp_path: Path) -> str:
    """The store the test's processes share: the server namespace, or a SQLite file."""
    return server if server is not None else f"sqlite:///{tmp_path / 'workers.db'}"


class Workers:
    """Worker processes (``tests.workers.main``) on one store, each noting its steps in ``log``;
    all are killed when the block ends."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log
        self.procs: list[subprocess.Popen[str]] = []

    def start(
        self,
        concurrency: int = 4,
        lease: float = 30.0,
        queues: list[str] | None = None,
        extra: list[str] | None = None,
    ) -> subprocess.Popen[str]:
        """Starts one more worker and waits until it runs (``extra``: ``module:NAME`` lists of
        more workflows to register)."""
        cmd = [sys.executable, "-m", "tests.workers.main", self.url]
        cmd += ["--concurrency", str(concurrency), "--lease", str(lease)]
        for spec in extra or []:
            cmd += ["--extra", spec]
        for q in queues or []:
            cmd += ["--queue", q]
        env = {**os.environ, "TIDEFLOW_TEST_LOG": str(self.log), "PYTHONPATH": str(ROOT)}
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("ready"), f"the worker did not start: {line!r}"
        self.procs.append(p)
        return p

    def terminate(self, p: subprocess.Popen[str], timeout: float = 60.0) -> int:
        """SIGTERM (drain) and wait; the exit code."""
        p.send_signal(signal.SIGTERM)
        return p.wait(timeout)

    def kill(self, p: subprocess.Popen[str]) -> None:
        """SIGKILL, as a crash would."""
        p.kill()
        p.wait(10)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            if p.stdout is not None:
                p.stdout.close()


def records(log: Path) -> list[dict[str, Any]]:
    """What the steps noted, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def wait_until(cond: Any, timeout: float = 60.0, what: str = "the condition") -> None:
    """Polls ``cond()`` until it is true; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# -- fault tests (tests/workers/test_faults.py) ---------------------------------------------


def pause(p: subprocess.Popen[str]) -> None:
    """SIGSTOP: the process stops (its heartbeats too) until ``unpause``."""
    p.send_signal(signal.SIGSTOP)


def unpause(p: subprocess.Popen[str]) -> None:
    """SIGCONT: a paused process goes on."""
    p.send_signal(signal.SIGCONT)


def noted(log: Path, **match: Any) -> list[dict[str, Any]]:
    """The notes whose fields equal all of ``match``."""
    return [n for n in records(log) if all(n.get(k) == v for k, v in match.items())]


# -- test_scaleout.py (part 2): workers registering another list of app.py, CPU time -------------


def start_registering(
    workers: Workers,
    workflows: str,
    concurrency: int = 4,
    lease: float = 30.0,
    queues: list[str] | None = None,
) -> subprocess.Popen[str]:
    """Starts one more worker of ``workers`` (as ``Workers.start``) that registers the list
    ``tests.workers.app.<workflows>`` instead of ``WORKFLOWS``, and waits until it runs."""
    code = (
        "import sys, tests.workers.app as app, tests.workers.main as m; "
        f"m.WORKFLOWS = app.{workflows}; sys.argv[0] = 'tests.workers.main'; m.main()"
    )
    cmd = [sys.executable, "-c", code, workers.url]
    cmd += ["--concurrency", str(concurrency), "--lease", str(lease)]
    for q in queues or []:
        cmd += ["--queue", q]
    env = {**os.environ, "TIDEFLOW_TEST_LOG": str(workers.log), "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.startswith("ready"), f"the worker did not start: {line!r}"
    workers.procs.append(p)
    return p


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system, all threads) process ``pid`` has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the command: state is field 3, utime 14 and stime 15 (1-based, man 5 proc)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
