"""Pickup latency of an idle worker: from ``engine.start`` in another engine (as an API process
would) to the first step running on the worker, on a store URL given on the command line.

    eval "$(bash scripts/services.sh env | sed 's/^/export /')"
    .venv/bin/python benchmarks/pickup.py "$TIDEFLOW_TEST_POSTGRES_URL?schema=pickup" --n 30

On a store that notifies (PostgreSQL, Redis) the worker is woken by the store; elsewhere it
polls with backoff (10 ms to 1 s), which the figures then show."""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from tideflow import Context, Engine, Worker, Workflow, step

seen: dict[str, float] = {}


@step
def first(ctx: Context, sent: float) -> float:
    """Notes how long after ``sent`` (the start) it began."""
    seen[ctx.instance_id] = time.time() - sent
    return sent


PICKUP = Workflow("pickup").then(first)


def main() -> None:
    """Starts instances at irregular intervals and prints the median and max pickup latency."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--n", type=int, default=30)
    a = p.parse_args()
    with Engine(store=a.url) as engine, Engine(store=a.url) as api:
        engine.register(PICKUP)
        api.register(PICKUP)
        worker = Worker(engine, concurrency=2)
        t = threading.Thread(target=worker.run)
        t.start()
        time.sleep(1.5)  # idle
        ids: list[str] = []
        for i in range(a.n):
            time.sleep(0.3 + (i % 3) * 0.4)
            ids.append(api.start(PICKUP, time.time()).id)
        deadline = time.monotonic() + 10
        while len([i for i in ids if i in seen]) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        worker.stop()
        t.join(10)
        for iid in ids:
            engine.delete(iid)
    ms = [seen[i] * 1000 for i in ids if i in seen]
    print(
        f"{engine.store.describe()}: {len(ms)}/{len(ids)} picked up, median "
        f"{statistics.median(ms):.1f} ms, max {max(ms):.1f} ms"
    )


if __name__ == "__main__":
    main()
