"""The ``tideflow`` command, run as ``python -m tideflow`` in subprocesses: its help, one-line
usage errors (exit 2, no traceback) for every kind of bad input, the store it picks (``--store``,
``TIDEFLOW_STORE``, an Engine's own), and ``tideflow worker`` end to end on a SQLite file with
the real ``Worker``: instances started here complete there, SIGTERM drains a running step, and a
second SIGTERM stops at once."""

from __future__ import annotations

import os
import re
import runpy
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from tideflow import Engine, Status

ROOT = Path(__file__).resolve().parents[1]

#: How long a test waits for a worker to do something before it gives up (a hang guard only).
PATIENCE = 60.0

#: The module the commands import (written into each test's tmp dir as app.py).
APP = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path

    from tideflow import Context, Engine, Workflow, step

    HERE = Path(__file__).parent

    @step
    def double(ctx: Context, x: int) -> int:
        return 2 * x

    @step
    def record_pid(ctx: Context, x: int) -> list:
        return [x, os.getpid()]

    @step
    def hold(ctx: Context, x: int) -> int:
        # tells the test that it runs, then waits until the test releases it
        (HERE / f"started-{ctx.instance_id}").touch()
        while not (HERE / "release").exists():
            time.sleep(0.01)
        return x + 1

    pipeline = Workflow("pipeline", version="1").then(double).then(record_pid)
    held = Workflow("held").then(hold)
    workflows = [pipeline, held]

    class nested:
        flows = (pipeline, held)

    engine = Engine()                 # in memory: a worker needs --store or TIDEFLOW_STORE
    engine.register(pipeline, held)
    bare_engine = Engine()            # no workflow registered
    not_a_workflow = 42
    empty = []
    mixed = [pipeline, "held"]
    """
)

#: A module that cannot be imported, and one whose own import of a dependency fails.
BROKEN = "import tideflow\nVALUE = 1 / 0\n"
NEEDS = "import tideflow_no_such_dependency\n"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A directory holding app.py, broken.py and needs.py (the commands' PYTHONPATH)."""
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "broken.py").write_text(BROKEN)
    (tmp_path / "needs.py").write_text(NEEDS)
    return tmp_path


def url_of(path: Path) -> str:
    """The SQLite URL of an absolute path."""
    return f"sqlite:///{path}"


def env_for(app: Path, **extra: str) -> dict[str, str]:
    """The environment of a command: PYTHONPATH to ``app``, no TIDEFLOW_STORE unless given."""
    env = {k: v for k, v in os.environ.items() if k != "TIDEFLOW_STORE"}
    env["PYTHONPATH"] = str(app)
    env.update(extra)
    return env


def tideflow(
    *args: str, app: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m tideflow ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "tideflow", *args],
        capture_output=True,
        text=True,
        env=env_for(app) if env is None else env,
        cwd=cwd or app,
        timeout=PATIENCE,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single line ``tideflow: error: ...`` a failed command printed (and nothing else)."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tideflow: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    return lines[0]


# -- help ---------------------------------------------------------------------------------------


def test_help_lists_the_commands_and_the_exit_codes(app: Path) -> None:
    proc = tideflow("--help", app=app)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "usage: tideflow" in out
    assert "worker" in out
    assert "exit codes:" in out
    for code in ("0 ", "1 ", "2 ", "130", "143"):
        assert f"\n  {code}" in out, code


def test_worker_help_names_every_option_the_env_var_and_the_signals(app: Path) -> None:
    proc = tideflow("worker", "--help", app=app)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("usage: tideflow worker")
    for option in ("MODULE:OBJECT", "--store URL", "--concurrency N", "--queue NAME"):
        assert option in out, option
    for text in ("--lease SECONDS", "--name NAME", "TIDEFLOW_STORE", "SIGTERM", "SIGINT", "143"):
        assert text in out, text


def test_version(app: Path) -> None:
    from tideflow import __version__

    proc = tideflow("--version", app=app)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"tideflow {__version__}")


def test_the_console_script_entry_point_resolves_to_main() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?:^\[|\Z)", text, re.M | re.S)
    assert section is not None, "pyproject.toml has no [project.scripts]"
    entry = re.search(r'^tideflow\s*=\s*"([^"]+)"', section.group(1), re.M)
    assert entry is not None
    from tideflow.cli import main

    loaded = EntryPoint("tideflow", entry.group(1), "console_scripts").load()
    assert loaded is main


# -- usage errors: exit 2, one line -------------------------------------------------------------

DB = "@DB@"  # replaced by a SQLite URL in the test's tmp dir

USAGE_ERRORS: list[tuple[str, list[str], dict[str, str], str]] = [
    ("no command", [], {}, "a command is needed: worker"),
    ("unknown command", ["nope"], {}, "invalid choice: 'nope'"),
    ("no target", ["worker"], {}, "the following arguments are required: MODULE:OBJECT"),
    ("no object", ["worker", "app"], {}, "expected MODULE:OBJECT (such as app:engine), got 'app'"),
    ("empty object", ["worker", "app:"], {}, "expected MODULE:OBJECT"),
    ("a file path", ["worker", "app.py:engine"], {}, "not a file path: got 'app.py'"),
    ("no such module", ["worker", "nosuch:engine"], {}, "cannot import module 'nosuch'"),
    ("no such package", ["worker", "nosuch.app:engine"], {}, "no module named 'nosuch'"),
    (
        "a module that fails",
        ["worker", "broken:engine"],
        {},
        "cannot import module 'broken': ZeroDivisionError: division by zero",
    ),
    (
        "a module whose dependency is missing",
        ["worker", "needs:engine"],
        {},
        "cannot import module 'needs': ModuleNotFoundError: No module named "
        "'tideflow_no_such_dependency'",
    ),
    ("no such object", ["worker", "app:nope"], {}, "'app' has no attribute 'nope'"),
    (
        "no such attribute",
        ["worker", "app:nested.nope"],
        {},
        "'app:nested' has no attribute 'nope'",
    ),
    (
        "not a workflow",
        ["worker", "app:not_a_workflow", "--store", DB],
        {},
        "app:not_a_workflow is a int (42), not an Engine, a Workflow or a list of Workflows",
    ),
    ("an empty list", ["worker", "app:empty", "--store", DB], {}, "is an empty list, not an"),
    (
        "a list holding a str",
        ["worker", "app:mixed", "--store", DB],
        {},
        "is a list holding a str ('held'), not an Engine",
    ),
    ("workflows without a store", ["worker", "app:workflows"], {}, "need a store: give --store"),
    (
        "an engine in memory",
        ["worker", "app:engine"],
        {},
        "app:engine runs on the in-memory store, which no other process sees",
    ),
    (
        "an engine without workflows",
        ["worker", "app:bare_engine", "--store", DB],
        {},
        "app:bare_engine is an Engine with no workflow registered",
    ),
    ("--store memory", ["worker", "app:engine", "--store", "memory"], {}, "private to one process"),
    (
        "--store of no known scheme",
        ["worker", "app:engine", "--store", "ftp://host/x"],
        {},
        "--store: unknown store URL 'ftp://host/x'",
    ),
    (
        "--store of no scheme",
        ["worker", "app:engine", "--store", "flows.db"],
        {},
        "unknown store URL 'flows.db'",
    ),
    (
        "a relative SQLite URL without its third slash",
        ["worker", "app:engine", "--store", "sqlite://flows.db"],
        {},
        "a SQLite URL is sqlite:///relative.db",
    ),
    (
        "an unknown SQLite option",
        ["worker", "app:engine", "--store", "sqlite:///flows.db?mode=ro"],
        {},
        "the one SQLite URL option is durability=normal|full",
    ),
    (
        "a password is never shown",
        ["worker", "app:engine", "--store", "ftp://me:secret@host/x"],
        {},
        "'ftp://me:***@host/x'",
    ),
    (
        "TIDEFLOW_STORE of no known scheme",
        ["worker", "app:workflows"],
        {"TIDEFLOW_STORE": "nope://x"},
        "TIDEFLOW_STORE: unknown store URL 'nope://x'",
    ),
    ("--concurrency 0", ["worker", "app:engine", "--concurrency", "0"], {}, "got '0'"),
    ("--concurrency -3", ["worker", "app:engine", "--concurrency", "-3"], {}, "got '-3'"),
    (
        "--concurrency x",
        ["worker", "app:engine", "--concurrency", "x"],
        {},
        "argument --concurrency: expected a positive integer, got 'x'",
    ),
    ("--lease 0", ["worker", "app:engine", "--lease", "0"], {}, "positive number of seconds"),
    ("--lease nan", ["worker", "app:engine", "--lease", "nan"], {}, "got 'nan'"),
    ("--lease inf", ["worker", "app:engine", "--lease", "inf"], {}, "got 'inf'"),
    ("--lease soon", ["worker", "app:engine", "--lease", "soon"], {}, "got 'soon'"),
    ("--queue ''", ["worker", "app:engine", "--queue", ""], {}, "argument --queue: expected a"),
    (
        "unknown option",
        ["worker", "app:engine", "--colour"],
        {},
        "unrecognized arguments: --colour",
    ),
]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [case[1:] for case in USAGE_ERRORS],
    ids=[case[0] for case in USAGE_ERRORS],
)
def test_a_usage_error_is_one_line_and_exit_2(
    app: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    db = url_of(app / "flows.db")
    proc = tideflow(*(db if a == DB else a for a in args), app=app, env=env_for(app, **env))
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert message in line
    assert not (app / "flows.db").exists()  # nothing was opened


def test_main_returns_the_exit_code_in_process(
    app: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tideflow.cli import main

    monkeypatch.chdir(app)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command puts app's directory on it
    monkeypatch.delenv("TIDEFLOW_STORE", raising=False)
    assert main(["--help"]) == 0
    assert "exit codes:" in capsys.readouterr().out
    assert "app" not in sys.modules
    try:
        assert main(["worker", "app:workflows"]) == 2
    finally:
        sys.modules.pop("app", None)
    assert capsys.readouterr().err == (
        "tideflow: error: app:workflows names workflows, which need a store: give --store URL "
        "or set TIDEFLOW_STORE\n"
    )


def test_debug_adds_the_traceback(app: Path) -> None:
    for args in (["--debug", "worker", "broken:engine"], ["worker", "broken:engine", "--debug"]):
        proc = tideflow(*args, app=app)
        assert proc.returncode == 2
        assert "Traceback (most recent call last)" in proc.stderr
        assert "ZeroDivisionError" in proc.stderr
        assert proc.stderr.splitlines()[-1].startswith("tideflow: error: cannot import module")


def test_a_store_that_cannot_be_opened_is_a_runtime_failure_exit_1(app: Path) -> None:
    db = url_of(app / "no" / "such" / "dir" / "flows.db")
    proc = tideflow("worker", "app:workflows", "--store", db, app=app)
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc)
    assert "cannot open the store 'sqlite:///" in line


# -- running workers ----------------------------------------------------------------------------


class WorkerProcess:
    """A ``tideflow worker`` subprocess whose stderr goes to a file the test reads."""

    def __init__(self, app: Path, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.log = app / f"worker-{time.monotonic_ns()}.log"
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                cwd=cwd,
                text=True,
            )

    @property
    def stderr(self) -> str:
        """What it printed on stderr so far."""
        return self.log.read_text()

    def wait_for(self, text: str) -> str:
        """Waits until stderr holds ``text`` (failing if the process ends first); returns the
        line that holds it."""
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            for line in self.stderr.splitlines():
                if text in line:
                    return line
            if self.proc.poll() is not None:
                pytest.fail(f"the worker exited ({self.proc.returncode}) first:\n{self.stderr}")
            time.sleep(0.02)
        pytest.fail(f"no {text!r} from the worker:\n{self.stderr}")

    def signal(self, signum: int) -> None:
        """Sends ``signum`` to the worker."""
        self.proc.send_signal(signum)

    def wait(self) -> int:
        """Waits for the worker to exit; its exit code."""
        try:
            return self.proc.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker did not exit:\n{self.stderr}")

    def kill(self) -> None:
        """Kills the worker if it still runs (a failed test's clean-up)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def workers(app: Path) -> Iterator[Any]:
    """Starts ``tideflow worker`` subprocesses (``python -m tideflow`` unless ``args`` says
    otherwise) and kills any left running at the end."""
    started: list[WorkerProcess] = []

    def start(
        *args: str, env: dict[str, str] | None = None, python: tuple[str, ...] = ("-m",)
    ) -> WorkerProcess:
        w = WorkerProcess(
            app, [*python, "tideflow", "worker", *args], env_for(app) if env is None else env, app
        )
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()


@pytest.fixture
def flows(app: Path) -> dict[str, Any]:
    """The test's own copy of app.py's workflows (the same plans as the worker's)."""
    return runpy.run_path(str(app / "app.py"))


def wait_until_finished(engine: Engine, ids: list[str], worker: WorkerProcess) -> None:
    """Polls the store until every instance in ``ids`` finished."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if all(engine.get(i).status.finished for i in ids):
            return
        if worker.proc.poll() is not None:
            pytest.fail(f"the worker exited ({worker.proc.returncode}):\n{worker.stderr}")
        time.sleep(0.05)
    pytest.fail(f"not finished: {[engine.get(i).status for i in ids]}\n{worker.stderr}")


def pid_in(startup: str) -> int:
    """The worker's pid as its startup line gives it."""
    m = re.search(r"\(pid (\d+)\)", startup)
    assert m is not None, startup
    return int(m.group(1))


def test_a_worker_runs_instances_started_elsewhere_and_drains_on_sigterm(
    app: Path, workers: Any, flows: dict[str, Any]
) -> None:
    db = app / "flows.db"
    with Engine(store=url_of(db)) as engine:
        ids = [engine.start(flows["pipeline"], i, id=f"p-{i}").id for i in range(5)]
        assert {engine.get(i).status for i in ids} == {Status.PENDING}
        # app:engine is in memory: --store replaces its store (and keeps its workflows)
        w = workers("app:engine", "--store", url_of(db), "--concurrency", "3", "--lease", "7.5")
        startup = w.wait_for("started")
        wid = startup.split()[2].rstrip(":")
        assert startup == (
            f"tideflow worker {wid}: started (pid {pid_in(startup)}); store sqlite:{db}; "
            f"queues default; workflows pipeline v1 ({flows['pipeline'].plan_hash[:12]}), "
            f"held ({flows['held'].plan_hash[:12]}); concurrency 3; lease 7.5 s"
        )
        wait_until_finished(engine, ids, w)
        for n, i in enumerate(ids):
            run = engine.get(i)
            assert (run.status, run.output) == (Status.COMPLETED, [2 * n, pid_in(startup)])
            assert [(s.step, s.status) for s in engine.steps(i)] == [
                ("double", "completed"),
                ("record_pid", "completed"),
            ]
        w.signal(signal.SIGTERM)
        assert w.wait() == 0, w.stderr
    lines = w.stderr.splitlines()
    assert lines[-1] == f"tideflow worker {wid}: stopped, drained after SIGTERM"
    assert "Traceback" not in w.stderr


def test_sigterm_while_a_step_runs_lets_it_finish_and_be_recorded(
    app: Path, workers: Any, flows: dict[str, Any]
) -> None:
    db = app / "flows.db"
    with Engine(store=url_of(db)) as engine:
        engine.start(flows["held"], 41, id="h-1")
        w = workers("app:workflows", "--store", url_of(db))
        w.wait_for("started")
        deadline = time.monotonic() + PATIENCE
        while not (app / "started-h-1").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (app / "started-h-1").exists(), w.stderr
        w.signal(signal.SIGTERM)
        w.wait_for("SIGTERM: draining")
        assert w.proc.poll() is None  # still running the step it holds
        (app / "release").touch()
        assert w.wait() == 0, w.stderr
        run = engine.get("h-1")
        assert (run.status, run.output) == (Status.COMPLETED, 42)
        assert [(s.step, s.status) for s in engine.steps("h-1")] == [("hold", "completed")]
    assert w.stderr.splitlines()[-1].endswith(": stopped, drained after SIGTERM")


@pytest.mark.parametrize(("second", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_second_signal_stops_at_once(
    app: Path, workers: Any, flows: dict[str, Any], second: int, code: int
) -> None:
    db = app / "flows.db"
    with Engine(store=url_of(db)) as engine:
        engine.start(flows["held"], 1, id="h-1")  # never released: the step runs until killed
        w = workers("app:nested.flows", "--store", url_of(db))
        w.wait_for("started")
        deadline = time.monotonic() + PATIENCE
        while not (app / "started-h-1").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (app / "started-h-1").exists(), w.stderr
        w.signal(signal.SIGTERM)
        w.wait_for("draining")
        w.signal(second)
        assert w.wait() == code, w.stderr
        assert not engine.get("h-1").status.finished  # left to its lease
    name = signal.Signals(second).name
    assert f"{name}: stopping at once" in w.stderr
    assert "Traceback" not in w.stderr


def test_tideflow_store_names_the_store_and_store_beats_it(
    app: Path, workers: Any, flows: dict[str, Any]
) -> None:
    db, other = app / "flows.db", app / "other.db"
    with Engine(store=url_of(db)) as engine:
        run = engine.start(flows["pipeline"], 5)
        # a list of workflows on TIDEFLOW_STORE, imported from the current directory only (-I:
        # neither PYTHONPATH nor the directory is on the path until the command puts it there)
        env = env_for(app, TIDEFLOW_STORE=url_of(db))
        del env["PYTHONPATH"]
        w = workers("app:workflows", env=env, python=("-I", "-m"))
        startup = w.wait_for("started")
        assert f"; store sqlite:{db};" in startup
        wait_until_finished(engine, [run.id], w)
        assert engine.get(run.id).output == [10, pid_in(startup)]
        w.signal(signal.SIGTERM)
        assert w.wait() == 0, w.stderr
    # an Engine honours TIDEFLOW_STORE too, and --store wins over it
    env = env_for(app, TIDEFLOW_STORE=url_of(db))
    for args, where in (([], db), (["--store", url_of(other)], other)):
        w = workers("app:engine", "--queue", "default", "--queue", "gpu", *args, env=env)
        startup = w.wait_for("started")
        assert f"; store sqlite:{where}; queues default, gpu;" in startup
        w.signal(signal.SIGINT)
        assert w.wait() == 0, w.stderr
        assert w.stderr.splitlines()[-1].endswith(": stopped, drained after SIGINT")
