"""Worker figures: N instances of a 5-step workflow of trivial steps run by 1 and 2 worker
processes on one store, as steps per second (and per worker process); the latency from
``engine.start`` to the first step running on an idle worker; and where the time goes.

    eval "$(bash scripts/services.sh env | sed 's/^/export /')"
    .venv/bin/python benchmarks/workers.py [--n 2000] [--workers 1,2] [--concurrency 1,4,16]
        [--stores sqlite,postgres,redis] [--repeat 1] [--latency 50] [--live]
        [--count] [--profile STORE] [--json]

For each store (a SQLite file in a temporary directory; PostgreSQL on a fresh ``?schema=``;
Redis on a fresh ``?prefix=``; the servers of ``TIDEFLOW_TEST_POSTGRES_URL`` and
``TIDEFLOW_TEST_REDIS_URL``, dropped afterwards), for each worker-process count and each
``Worker(concurrency=)``: N instances of ``CHAIN`` (5 steps, each ``x + 1``) are started with
``engine.start`` from this process, then the workers (``python benchmarks/workers.py --serve
URL``, one process each, already connected and registered, waiting on their stdin) are told to
go; the wall time runs from that moment to the moment ``engine.counts()`` (polled every 10 ms)
shows N completed. steps/s = 5N / wall; per worker process = steps/s / processes. ``--live``
also times the variant where the N instances are started from this process while the workers
run (the clock starts just before the first ``engine.start``), at the best concurrency.

Latency: ``--latency`` one-step instances started one at a time on idle workers (1 process,
the best concurrency, 0.2 s apart); the step writes ``time.time()`` to a file; median and p90
of (that time - the time just before ``engine.start``).

``--count``: one more run per store (1 process, the best concurrency) in which the worker wraps
each method of its store object in a counter (in this benchmark only) and reports the calls per
step by method on exit. ``--profile STORE``: the same run under ``cProfile`` on that store; the
top functions by own time are printed.

``--json`` merges the figures under ``"workers"`` into benchmarks/results.json. The machine is
noisy (2 shared cores): compare figures measured in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tideflow import Context, Engine, Status, Worker, Workflow, step

HERE = Path(__file__).resolve().parent
N = 2_000
STEPS = 5
#: The store methods the counting run counts (those a worker calls).
COUNTED = [
    "claim",
    "commit",
    "create",
    "delete",
    "extend",
    "get",
    "load",
    "release",
    "send_signal",
    "signals",
    "records",
    "due",
    "counts",
    "list",
]


@step
def inc(ctx: Context, x: int) -> int:
    """Adds one (the trivial step of the throughput chain)."""
    return x + 1


@step
def stamp(ctx: Context, x: int) -> int:
    """Writes when it runs (``time.time()``) to the file ``WBENCH_STAMPS`` names, by instance."""
    t = time.time()
    path = os.environ.get("WBENCH_STAMPS")
    if path:
        with open(path, "a") as f:
            f.write(f"{ctx.instance_id} {t!r}\n")
    return x


#: The throughput workflow: five trivial steps.
CHAIN = Workflow("wbench_chain").then(inc).then(inc).then(inc).then(inc).then(inc)
#: The latency workflow: one step that notes when it runs.
STAMP = Workflow("wbench_stamp").then(stamp)


def with_query(url: str, **params: str) -> str:
    """The URL with these query parameters added."""
    parts = urlsplit(url)
    extra = "&".join(f"{k}={v}" for k, v in params.items())
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


# ---------------------------------------------------------------------------------------------
# the worker process


class Counting:
    """Stands in for a store object (in this benchmark only): counts each call of the methods a
    worker uses, by name, and forwards it."""

    def __init__(self, store: Any, counts: Counter[str]) -> None:
        self._store = store
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in COUNTED or not callable(attr):
            return attr
        counts = self._counts

        def counted(*a: Any, **k: Any) -> Any:
            counts[name] += 1
            return attr(*a, **k)

        return counted


def serve(url: str, concurrency: int, count: str | None, profile: str | None) -> None:
    """One worker process: connects, registers, says ``ready``, waits for a line on stdin, then
    runs the worker until SIGTERM; writes its counts / profile on the way out."""
    counts: Counter[str] = Counter()
    with Engine(store=url) as engine:
        engine.register(CHAIN, STAMP)
        engine.counts()  # connected, schema checked
        if count:
            # the worker calls the store through engine.store (the core keeps its own)
            engine.store = Counting(engine.store, counts)
        worker = Worker(engine, concurrency=concurrency)
        signal.signal(signal.SIGTERM, lambda *_: worker.stop(drain=False))
        print("ready", flush=True)
        sys.stdin.readline()
        cpu0 = time.process_time()
        prof = cProfile.Profile() if profile else None
        if prof is not None:
            prof.enable()
        worker.run()
        if prof is not None:
            prof.disable()
            prof.dump_stats(profile)  # type: ignore[arg-type]
        if count:
            Path(count).write_text(json.dumps(dict(counts)))
        print(f"cpu {time.process_time() - cpu0!r}", flush=True)


class Workers:
    """Worker processes on one store, started connected and waiting for ``go()``."""

    def __init__(
        self,
        url: str,
        processes: int,
        concurrency: int,
        count: str | None = None,
        profile: str | None = None,
        stamps: str | None = None,
    ) -> None:
        env = {**os.environ}
        if stamps:
            env["WBENCH_STAMPS"] = stamps
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", url]
        cmd += ["--concurrency", str(concurrency)]
        if count:
            cmd += ["--count-out", count]
        if profile:
            cmd += ["--profile-out", profile]
        self.procs = [
            subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(processes)
        ]
        for p in self.procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line.startswith("ready"):
                self.stop()
                raise RuntimeError(f"a worker did not start: {line!r}")

    def go(self) -> None:
        """Lets every worker start claiming."""
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()

    def stop(self) -> float:
        """SIGTERM (stop at once) and wait for every process; their CPU seconds since ``go()``."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        cpu = 0.0
        for p in self.procs:
            with contextlib.suppress(OSError, ValueError):
                assert p.stdout is not None
                for line in p.stdout:
                    if line.startswith("cpu "):
                        cpu += float(line.split()[1])
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
            for f in (p.stdin, p.stdout):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()
        return cpu


# ---------------------------------------------------------------------------------------------
# the measurements


def completed(engine: Engine, name: str) -> int:
    """How many instances of workflow ``name`` completed."""
    return engine.counts().get(name, {}).get(Status.COMPLETED, 0)


def wait_completed(engine: Engine, name: str, target: int, timeout: float = 600.0) -> float:
    """Polls ``engine.counts()`` every 10 ms until ``target`` completed; the time it saw them."""
    end = time.monotonic() + timeout
    while True:
        if completed(engine, name) >= target:
            return time.monotonic()
        if time.monotonic() > end:
            raise RuntimeError(f"only {completed(engine, name)} of {target} completed in time")
        time.sleep(0.01)


def throughput(
    url: str, engine: Engine, n: int, processes: int, concurrency: int, live: bool
) -> dict[str, Any]:
    """One timed run of ``n`` chains by ``processes`` workers; its figures."""
    base = completed(engine, CHAIN.name)
    tag = uuid.uuid4().hex[:6]
    if not live:
        for i in range(n):
            engine.start(CHAIN, i, id=f"c{tag}-{i}")
    workers = Workers(url, processes, concurrency)
    try:
        t0 = time.monotonic()
        workers.go()
        if live:
            for i in range(n):
                engine.start(CHAIN, i, id=f"c{tag}-{i}")
        t1 = wait_completed(engine, CHAIN.name, base + n)
    finally:
        cpu = workers.stop()
    wall = t1 - t0
    sps = STEPS * n / wall
    return {
        "processes": processes,
        "concurrency": concurrency,
        "started": "while running" if live else "before",
        "n": n,
        "wall_s": round(wall, 3),
        "steps_per_s": round(sps, 1),
        "steps_per_s_per_process": round(sps / processes, 1),
        "worker_cpu_ms_per_step": round(cpu * 1000 / (STEPS * n), 3),
    }


def latency(url: str, engine: Engine, samples: int, concurrency: int) -> dict[str, Any]:
    """Start-to-first-step latency on one idle worker, ``samples`` times."""
    with tempfile.TemporaryDirectory() as d:
        stamps = Path(d) / "stamps"
        stamps.touch()
        workers = Workers(url, 1, concurrency, stamps=str(stamps))
        workers.go()
        lats: list[float] = []
        try:
            time.sleep(1.5)  # idle: the worker's poll backs off to its longest
            for i in range(samples):
                iid = f"l{uuid.uuid4().hex[:6]}-{i}"
                t0 = time.time()
                engine.start(STAMP, i, id=iid)
                engine.wait(iid, timeout=30)
                for line in stamps.read_text().splitlines():
                    sid, t = line.split()
                    if sid == iid:
                        lats.append(float(t) - t0)
                time.sleep(0.2)
        finally:
            workers.stop()
    lats.sort()
    return {
        "samples": len(lats),
        "median_ms": round(statistics.median(lats) * 1000, 1),
        "p90_ms": round(lats[int(0.9 * (len(lats) - 1))] * 1000, 1),
        "max_ms": round(lats[-1] * 1000, 1),
    }


def accounted(url: str, engine: Engine, n: int, concurrency: int, profile: bool) -> dict[str, Any]:
    """One run with the worker's store calls counted (and, with ``profile``, under cProfile)."""
    with tempfile.TemporaryDirectory() as d:
        count = str(Path(d) / "counts.json")
        prof = str(Path(d) / "prof") if profile else None
        base = completed(engine, CHAIN.name)
        tag = uuid.uuid4().hex[:6]
        for i in range(n):
            engine.start(CHAIN, i, id=f"p{tag}-{i}")
        workers = Workers(url, 1, concurrency, count=count, profile=prof)
        try:
            t0 = time.monotonic()
            workers.go()
            t1 = wait_completed(engine, CHAIN.name, base + n)
        finally:
            workers.stop()
        counts = json.loads(Path(count).read_text()) if Path(count).exists() else {}
        out: dict[str, Any] = {
            "n": n,
            "concurrency": concurrency,
            "wall_s": round(t1 - t0, 3),
            "calls_per_step": {
                k: round(v / (STEPS * n), 3) for k, v in sorted(counts.items(), key=lambda x: -x[1])
            },
            "calls_per_step_total": round(sum(counts.values()) / (STEPS * n), 3),
        }
        if prof and Path(prof).exists():
            buf = io.StringIO()
            st = pstats.Stats(prof, stream=buf)
            st.sort_stats("tottime").print_stats(25)
            out["profile_tottime"] = buf.getvalue()
            buf = io.StringIO()
            st = pstats.Stats(prof, stream=buf)
            st.sort_stats("cumulative").print_stats(30)
            out["profile_cumulative"] = buf.getvalue()
        return out


# ---------------------------------------------------------------------------------------------
# stores


def store_urls(names: list[str], tmp: Path) -> dict[str, str]:
    """A fresh namespace on each store asked for whose server is known."""
    urls: dict[str, str] = {}
    hexpart = uuid.uuid4().hex[:8]
    for name in names:
        if name == "sqlite":
            urls[name] = f"sqlite:///{tmp / 'workers.db'}"
        elif name == "postgres":
            base = os.environ.get("TIDEFLOW_TEST_POSTGRES_URL")
            if base:
                urls[name] = with_query(base, schema=f"wbench_{hexpart}")
            else:
                print("postgres: skipped, TIDEFLOW_TEST_POSTGRES_URL is unset", file=sys.stderr)
        elif name == "redis":
            base = os.environ.get("TIDEFLOW_TEST_REDIS_URL")
            if base:
                urls[name] = with_query(base, prefix=f"wbench_{hexpart}")
            else:
                print("redis: skipped, TIDEFLOW_TEST_REDIS_URL is unset", file=sys.stderr)
        else:
            raise SystemExit(f"unknown store {name!r} (sqlite, postgres, redis)")
    return urls


def merge_json(figures: dict[str, Any]) -> Path:
    """Merges the figures under ``"workers"`` into benchmarks/results.json."""
    path = HERE / "results.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data["workers"] = figures
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def bench_store(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of one store."""
    processes = [int(c) for c in args.workers.split(",")]
    concs = [int(c) for c in args.concurrency.split(",")]
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"rows": rows}
    engine = Engine(store=url)
    try:
        engine.register(CHAIN, STAMP)
        for procs in processes:
            for conc in concs:
                best: dict[str, Any] | None = None
                for _ in range(args.repeat):
                    r = throughput(url, engine, args.n, procs, conc, live=False)
                    if best is None or r["wall_s"] < best["wall_s"]:
                        best = r
                assert best is not None
                rows.append(best)
                print(f"  {name}: {_row(best)}", flush=True)
        one = [r for r in rows if r["processes"] == min(processes)]
        conc = max(one, key=lambda r: r["steps_per_s"])["concurrency"]
        out["best_concurrency"] = conc
        if args.live:
            for procs in processes:
                r = throughput(url, engine, args.n, procs, conc, live=True)
                rows.append(r)
                print(f"  {name}: {_row(r)}", flush=True)
        by = {
            p: max(
                (r for r in rows if r["processes"] == p and r["started"] == "before"),
                key=lambda r: r["steps_per_s"],
            )
            for p in processes
        }
        if 1 in by and 2 in by:
            out["ratio_2_vs_1"] = round(by[2]["steps_per_s"] / by[1]["steps_per_s"], 2)
            print(f"  {name}: 2 vs 1 processes (best of each): {out['ratio_2_vs_1']}x")
        if args.latency > 0:
            out["latency"] = latency(url, engine, args.latency, conc)
            print(f"  {name}: start -> first step on an idle worker: {out['latency']}", flush=True)
        if args.count or args.profile == name:
            acc = accounted(url, engine, args.n, conc, profile=args.profile == name)
            out["accounting"] = acc
            print(
                f"  {name}: store calls per step (1 process, concurrency {conc}): "
                f"{acc['calls_per_step_total']} {acc['calls_per_step']}",
                flush=True,
            )
            if "profile_tottime" in acc:
                print(acc["profile_tottime"])
                print(acc["profile_cumulative"])
    finally:
        drop = getattr(engine.store, "drop", None)
        if callable(drop):
            drop()
        engine.close()
    return out


def _row(r: dict[str, Any]) -> str:
    return (
        f"{r['processes']} process(es) x concurrency {r['concurrency']}, started "
        f"{r['started']}: {r['wall_s']} s, {r['steps_per_s']} steps/s, "
        f"{r['steps_per_s_per_process']} per process, worker CPU "
        f"{r['worker_cpu_ms_per_step']} ms/step"
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark (or, with ``--serve``, one worker process of it)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=N, help="instances per run (default %(default)s)")
    ap.add_argument("--workers", default="1,2", help="worker process counts (default %(default)s)")
    ap.add_argument("--concurrency", default="1,4,16", help="Worker(concurrency=) values")
    ap.add_argument("--stores", default="sqlite,postgres,redis", help="stores to run on")
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell, best kept")
    ap.add_argument("--latency", type=int, default=50, help="latency samples (0: none)")
    ap.add_argument("--live", action="store_true", help="also start instances while running")
    ap.add_argument("--count", action="store_true", help="count store calls per step")
    ap.add_argument("--profile", metavar="STORE", help="cProfile one worker on this store")
    ap.add_argument("--json", action="store_true", help="merge into benchmarks/results.json")
    ap.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--count-out", help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        conc = int(args.concurrency)
        serve(args.serve, conc, args.count_out, args.profile_out)
        return 0
    if args.n < 1 or args.repeat < 1:
        ap.error("--n and --repeat must be at least 1")
    import tideflow

    print(
        f"tideflow workers: {args.n} instances of {STEPS} trivial steps; "
        f"{platform.machine()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}, tideflow {tideflow.__version__}, extension "
        f"{Path(tideflow._core.__file__).name}",
        flush=True,
    )
    figures: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "n": args.n,
        "command": " ".join(["benchmarks/workers.py", *(argv or sys.argv[1:])]),
        "stores": {},
    }
    with tempfile.TemporaryDirectory() as d:
        for name, url in store_urls(args.stores.split(","), Path(d)).items():
            print(f"{name}:", flush=True)
            figures["stores"][name] = bench_store(name, url, args)
    if args.json:
        print(f"\nmerged into {merge_json(figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
