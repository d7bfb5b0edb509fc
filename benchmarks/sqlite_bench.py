"""SQLite figures for benchmarks/run.py: tideflow's per-step cost in both durability modes beside
the raw cost of one INSERT + COMMIT (Python's sqlite3, same WAL/synchronous settings), measured in
the same run, and a 1,000-way fan-out: with `engine.run` (the branches run one after another and
each is committed as it finishes) and with `run_async` over async steps (the branches that finish
together are committed together: one commit, and in full mode one sync, per wave)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from tideflow import Context, Engine, Workflow, step
from tideflow.stores import SQLiteStore

N = 2_000
FAN = 1_000
REPEAT = 3


def _inc(ctx: Context | None, x: int) -> int:
    return x + 1


def _raw_commits(path: Path, synchronous: str) -> float:
    """Seconds per INSERT + COMMIT of a small row, in a WAL database."""
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute(f"PRAGMA synchronous={synchronous}")
    c.execute("CREATE TABLE t (k TEXT, seq INTEGER, data BLOB, PRIMARY KEY (k, seq)) WITHOUT ROWID")
    payload = b"x" * 48
    t = time.perf_counter()
    for i in range(N):
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO t VALUES (?, ?, ?)", ("instance", i, payload))
        c.execute("COMMIT")
    took = time.perf_counter() - t
    c.close()
    return took / N


def _plain(n: int) -> float:
    t = time.perf_counter()
    x = 0
    for _ in range(n):
        x = _inc(None, x)
    return (time.perf_counter() - t) / n


def measure(tmp: Path) -> dict[str, Any]:
    """Returns the SQLite figures (µs per step, ms per fan-out, ratios)."""
    s = step(name="inc")(_inc)
    chain = Workflow("sqlite-chain")
    for _ in range(N):
        chain = chain.then(s)
    chain.compile()

    @step
    def total(ctx: Context, xs: Any) -> int:
        return sum(xs)

    fan = Workflow("sqlite-fan").parallel(*[s] * FAN).then(total)

    @step(name="ainc")
    async def ainc(ctx: Context, x: int) -> int:
        return x + 1

    afan = Workflow("sqlite-fan-async").parallel(*[ainc] * FAN).then(total)
    out: dict[str, Any] = {"sqlite_steps": N}
    counter = 0
    for mode, sync in (("normal", "NORMAL"), ("full", "FULL")):
        raw, ours, fans, afans = [], [], [], []
        for _ in range(REPEAT):
            counter += 1
            raw.append(_raw_commits(tmp / f"raw{counter}.db", sync))
            engine = Engine(store=SQLiteStore(tmp / f"tf{counter}.db", durability=mode))
            t = time.perf_counter()
            assert engine.run(chain, 0).output == N
            ours.append((time.perf_counter() - t) / N - _plain(N))
            t = time.perf_counter()
            assert engine.run(fan, 0).output == FAN
            fans.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert asyncio.run(engine.run_async(afan, 0)).output == FAN
            afans.append(time.perf_counter() - t)
        out[f"sqlite_{mode}_raw_insert_commit_us"] = min(raw) * 1e6
        out[f"sqlite_{mode}_us_per_step"] = min(ours) * 1e6
        out[f"sqlite_{mode}_ratio_to_raw_commit"] = min(ours) / min(raw)
        out[f"sqlite_{mode}_parallel_1000_ms"] = min(fans) * 1e3
        out[f"sqlite_{mode}_parallel_1000_async_ms"] = min(afans) * 1e3
    return out


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for k, v in measure(Path(d)).items():
            print(f"{k:<40} {v:.3f}" if isinstance(v, float) else f"{k:<40} {v}")
