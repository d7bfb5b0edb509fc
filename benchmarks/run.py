"""Prints tideflow's headline figures and writes them to benchmarks/results.json.

    python benchmarks/run.py            (or: make bench)

Every figure is measured in this one run, beside its baseline (a plain Python loop calling the
same function), because this machine is noisy: compare ratios, not absolute numbers across runs.
Each timing is the best of several repetitions.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tideflow import Context, Engine, Workflow, step

N = 10_000
FAN = 1_000
REPEAT = 5
HERE = Path(__file__).resolve().parent


def best(fn: Callable[[], Any], repeat: int = REPEAT) -> float:
    """The fastest of `repeat` timed calls, in seconds."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def inc(ctx: Context | None, x: int) -> int:
    return x + 1


async def ainc(ctx: Context | None, x: int) -> int:
    return x + 1


def plain_loop() -> int:
    x = 0
    for _ in range(N):
        x = inc(None, x)
    return x


async def plain_async_loop() -> int:
    x = 0
    for _ in range(N):
        x = await ainc(None, x)
    return x


def chain(fn: Callable[..., Any], name: str) -> Workflow:
    s = step(name=name)(fn)
    wf = Workflow(name)
    for _ in range(N):
        wf = wf.then(s)
    wf.compile()
    return wf


def loop(fn: Callable[..., Any], name: str) -> Workflow:
    s = step(name=name)(fn)
    wf = Workflow(name).loop(s, until=lambda x: x >= N, max_iterations=N)
    wf.compile()
    return wf


def per_step_overhead(results: dict[str, Any]) -> None:
    base = best(plain_loop)
    abase = best(lambda: asyncio.run(plain_async_loop()))
    results["plain_loop_us_per_call"] = base / N * 1e6
    results["plain_async_loop_us_per_call"] = abase / N * 1e6
    for shape, build in (("chain", chain), ("loop", loop)):
        wf, awf = build(inc, f"{shape}_sync"), build(ainc, f"{shape}_async")

        def sync_run(wf: Workflow = wf) -> None:
            r = Engine().run(wf, 0)
            assert r.output == N, r

        def async_run(awf: Workflow = awf) -> None:
            r = asyncio.run(Engine().run_async(awf, 0))
            assert r.output == N, r

        t_sync = best(sync_run)
        t_async = best(async_run)
        results[f"memory_{shape}_sync_us_per_step"] = (t_sync - base) / N * 1e6
        results[f"memory_{shape}_async_us_per_step"] = (t_async - abase) / N * 1e6


def fan_out(results: dict[str, Any]) -> None:
    @step
    def spread(ctx: Context, x: int) -> list[int]:
        return list(range(FAN))

    @step
    def gather(ctx: Context, xs: Any) -> int:
        return sum(xs)

    s = step(name="leaf")(inc)
    branches = Workflow("parallel").parallel(*[s] * FAN).then(gather)
    mapped = Workflow("map").then(spread).map(s).then(gather)
    expect = sum(range(1, FAN + 1))

    def run_parallel() -> None:
        assert Engine().run(branches, 0).output == FAN

    def run_map() -> None:
        assert Engine().run(mapped, 0).output == expect

    results["memory_parallel_1000_ms"] = best(run_parallel) * 1e3
    results["memory_map_1000_ms"] = best(run_map) * 1e3


RSS_PROBE = """
import os, sys, time
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
before = rss()
t = time.perf_counter()
if sys.argv[1] == 'tideflow':
    import tideflow
    took = time.perf_counter() - t
    @tideflow.step
    def one(ctx, x):
        return x + 1
    assert tideflow.Engine().run(tideflow.Workflow('w').then(one), 1).output == 2
    total = time.perf_counter() - t
else:
    took = total = 0.0
print(rss() - before, took, total)
"""


def footprint(results: dict[str, Any]) -> None:
    def probe(what: str) -> tuple[int, float, float]:
        out = subprocess.run(
            [sys.executable, "-c", RSS_PROBE, what], capture_output=True, text=True, check=True
        ).stdout.split()
        return int(out[0]), float(out[1]), float(out[2])

    # compile bytecode first so the import is timed as an installed package would be
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(HERE.parent / "python")], check=False
    )
    probes = [probe("tideflow") for _ in range(REPEAT)]
    bare = min(probe("bare")[0] for _ in range(REPEAT))
    results["import_plus_minimal_run_rss_mb"] = (min(p[0] for p in probes) - bare) / 2**20
    results["import_ms"] = min(p[1] for p in probes) * 1e3
    results["import_plus_minimal_run_ms"] = min(p[2] for p in probes) * 1e3


def servers(results: dict[str, Any]) -> None:
    """The server stores (benchmarks/servers.py), each beside its driver's raw round trip; a
    server whose TIDEFLOW_TEST_*_URL is unset, or whose store does not import, is skipped."""
    sys.path.insert(0, str(HERE))
    try:
        from servers import measure as measure_servers  # type: ignore[import-not-found]
    except Exception as exc:
        print(f"\nserver stores: skipped: benchmarks/servers.py does not import ({exc!r})")
        return
    results.update(measure_servers())


def main() -> int:
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "steps": N,
    }
    per_step_overhead(results)
    fan_out(results)
    footprint(results)
    sqlite = HERE / "sqlite_bench.py"
    if sqlite.exists():
        with tempfile.TemporaryDirectory() as tmp:
            sys.path.insert(0, str(HERE))
            from sqlite_bench import measure  # type: ignore[import-not-found]

            results.update(measure(Path(tmp)))
    width = max(len(k) for k in results)
    for k, v in results.items():
        print(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    servers(results)
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {HERE / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
