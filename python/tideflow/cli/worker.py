"""``tideflow worker MODULE:OBJECT``: runs a ``Worker`` in this process until a signal stops it.

The first SIGTERM or SIGINT drains (``worker.stop()``: no new work, what it holds is finished or
handed back, exit 0); a second stops at once (``worker.stop(drain=False)``: its leases are left
to expire and other workers take over; exit 128 + the signal's number).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
from typing import Any

from tideflow.cli import EXIT_OK, CommandError, UsageError
from tideflow.cli._target import STORE_ENV, STORE_FORMS, engine_for, load_object, store_url

#: ``Worker``'s defaults, shown by ``--help`` (the command passes them explicitly).
DEFAULT_CONCURRENCY = 10
DEFAULT_LEASE = 30.0

#: Seconds the process is given to return after a second signal before it exits regardless
#: (a synchronous step stuck in a thread cannot be interrupted); a third signal exits at once.
FORCED_EXIT_GRACE = 5.0

EPILOG = f"""\
OBJECT is an Engine (its registered workflows are served; --store or {STORE_ENV} replaces its
own store), a Workflow, or a list or tuple of Workflows (which need --store or {STORE_ENV}).
Store URLs: {STORE_FORMS}

signals:
  the first SIGTERM or SIGINT drains: the worker takes no new work, finishes or hands back
  what it holds, and exits 0; a second one stops at once (its leases expire and other workers
  take over) with exit code 128 + the signal's number (143 for SIGTERM, 130 for SIGINT).

environment:
  {STORE_ENV}   the store URL when --store is not given

exit codes: 0 stopped cleanly, 1 a failure at run time, 2 a usage error, 130/143 stopped at once.

example:
  tideflow worker app:engine --store sqlite:////srv/app/flows.db --concurrency 20 \\
      --queue default --queue gpu --lease 60"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds ``worker`` and its options to the command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "worker",
        help="run the workflows' instances from a shared store until stopped",
        description="Runs a worker: takes the instances of the workflows OBJECT names from the\n"
        "store (started elsewhere with engine.start) and runs their steps, until a signal\n"
        "stops it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "target",
        metavar="MODULE:OBJECT",
        help="where the workflows are: a module's import name (dotted; the current directory "
        "comes first on the path) and an attribute of it (dotted), e.g. app:engine",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help=f"the store to work on (default: ${STORE_ENV}, else an Engine's own store)",
    )
    p.add_argument(
        "--concurrency",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        help=f"how many steps may run at once (default: {DEFAULT_CONCURRENCY})",
    )
    p.add_argument(
        "--queue",
        metavar="NAME",
        action="append",
        type=_queue_name,
        help="a queue to serve; repeat for several (default: the queue 'default' only; "
        "--queue default --queue gpu serves both)",
    )
    p.add_argument(
        "--lease",
        metavar="SECONDS",
        type=_positive_seconds,
        default=DEFAULT_LEASE,
        help="how long a held instance stays this worker's without a heartbeat before another "
        f"worker may take it over (default: {DEFAULT_LEASE:g})",
    )
    p.add_argument(
        "--name",
        metavar="NAME",
        type=_queue_name,
        help="a name for this worker, part of its id in leases and logs (default: generated)",
    )
    return p


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return seconds


def _queue_name(text: str) -> str:
    if not text or text != text.strip():
        raise argparse.ArgumentTypeError(
            f"expected a name without surrounding spaces, got {text!r}"
        )
    return text


def run(args: argparse.Namespace) -> int:
    """Builds the engine and the worker, prints the startup line, and runs the worker in this
    (the main) thread until it stops; returns the exit code (after a second signal it ends the
    process itself, with ``os._exit``, so that no thread still running a step holds it)."""
    obj = load_object(args.target)
    engine = engine_for(obj, args.target, store_url(args.store))
    from tideflow.errors import InvalidArgument
    from tideflow.worker import Worker

    queues = list(dict.fromkeys(args.queue)) if args.queue else None
    try:
        worker = Worker(
            engine,
            concurrency=args.concurrency,
            queues=queues,
            lease=args.lease,
            name=args.name,
        )
    except InvalidArgument as e:
        raise UsageError(str(e)) from e
    _say(_startup_line(worker, engine, queues or ["default"], args))
    stopper = _Stopper(worker)
    previous = stopper.install()
    try:
        worker.run()
    except Exception as e:
        if stopper.forced is None:
            raise CommandError(
                f"worker {worker.id} stopped on an error: {type(e).__name__}: {e}"
            ) from e
    finally:
        stopper.restore(previous)
        if stopper.forced is None:
            _close(engine)
    if stopper.forced is not None:
        name = signal.Signals(stopper.forced).name
        _say(
            f"tideflow worker {worker.id}: stopped at once on a second signal ({name}); its "
            f"leases expire within {args.lease:g} s and other workers take over"
        )
        _exit(128 + stopper.forced)
    if stopper.received:
        name = signal.Signals(stopper.received[0]).name
        _say(f"tideflow worker {worker.id}: stopped, drained after {name}")
    else:
        _say(f"tideflow worker {worker.id}: stopped")
    return EXIT_OK


def _close(engine: Any) -> None:
    """Closes the store's connections once the worker returned (a failure is only reported)."""
    try:
        engine.close()
    except Exception as e:
        _say(f"tideflow: warning: closing the store failed: {type(e).__name__}: {e}")


def _startup_line(worker: Any, engine: Any, queues: list[str], args: argparse.Namespace) -> str:
    describe = getattr(engine.store, "describe", None)
    store = describe() if callable(describe) else type(engine.store).__name__
    flows = ", ".join(
        f"{w.name}" + (f" v{w.version}" if w.version is not None else "") + f" ({w.plan_hash[:12]})"
        for w in engine.workflows()
    )
    return (
        f"tideflow worker {worker.id}: started (pid {os.getpid()}); store {store}; "
        f"queues {', '.join(queues)}; workflows {flows}; concurrency {args.concurrency}; "
        f"lease {args.lease:g} s"
    )


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Stopper:
    """The SIGTERM and SIGINT handler: the first signal drains the worker, the second stops it
    at once (and arms a forced exit after ``FORCED_EXIT_GRACE``), a third exits the process."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.received: list[int] = []
        #: The signal that stopped the worker at once, if one did.
        self.forced: int | None = None

    def install(self) -> dict[int, Any]:
        """Installs the handler (only the main thread can) and returns the handlers it replaced."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self) for s in self.SIGNALS}

    def restore(self, previous: dict[int, Any]) -> None:
        """Puts back the handlers ``install`` replaced."""
        for s, handler in previous.items():
            signal.signal(s, handler)

    def __call__(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
        name = signal.Signals(signum).name
        wid = self.worker.id
        if len(self.received) == 1:
            # os.write: print() could re-enter a write the signal interrupted
            _write(f"tideflow worker {wid}: {name}: draining (a second signal stops at once)")
            self.worker.stop()
        elif len(self.received) == 2:
            self.forced = signum
            _write(f"tideflow worker {wid}: {name}: stopping at once")
            timer = threading.Timer(FORCED_EXIT_GRACE, _force_exit, (wid, 128 + signum))
            timer.daemon = True
            timer.start()
            self.worker.stop(drain=False)
        else:
            _write(f"tideflow worker {wid}: {name}: exiting now")
            _exit(128 + signum)


def _write(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr closed: nothing to tell
        os.write(sys.stderr.fileno(), (line + "\n").encode(errors="replace"))


def _force_exit(worker_id: str, code: int) -> None:
    """Ends the process when the worker did not return within ``FORCED_EXIT_GRACE`` of the
    second signal (a synchronous step that runs on in its thread)."""
    _write(
        f"tideflow worker {worker_id}: still busy {FORCED_EXIT_GRACE:g} s after the second "
        "signal: exiting; its leases expire and other workers take over"
    )
    _exit(code)
