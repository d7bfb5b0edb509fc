"""One worker process for the tests: ``python -m tests.workers.main URL [--concurrency N]
[--lease S] [--queue Q ...]``; it runs ``tests.workers.app.WORKFLOWS``. SIGTERM drains, a
second SIGTERM stops at once. Prints ``ready <worker id>`` once it runs."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from tests.workers.app import WORKFLOWS
from tideflow import Engine, Worker


def main() -> None:
    """Runs one worker until SIGTERM."""
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--lease", type=float, default=30.0)
    p.add_argument("--queue", action="append")
    p.add_argument("--extra", action="append", default=[], help="module:NAME of more workflows")
    a = p.parse_args()
    with Engine(store=a.url) as engine:
        engine.register(*WORKFLOWS)
        for spec in a.extra:
            module, _, name = spec.partition(":")
            engine.register(*getattr(importlib.import_module(module), name))
        worker = Worker(engine, concurrency=a.concurrency, queues=a.queue, lease=a.lease)
        terms = 0

        def on_term(_sig: int, _frame: object) -> None:
            nonlocal terms
            terms += 1
            worker.stop(drain=terms == 1)

        signal.signal(signal.SIGTERM, on_term)
        threading.Timer(0.05, lambda: print(f"ready {worker.id}", flush=True)).start()
        worker.run()
    print("stopped", flush=True)
    if terms > 1:  # stopped at once: a step still running in a thread must not hold the exit
        os._exit(0)
    sys.exit(0)


if __name__ == "__main__":
    main()
