"""Celery peer figures: N chains of 5 trivial tasks on a Redis broker and result backend, with 1
and 2 worker processes, as steps per second, ms per step and per worker process; and the latency
from ``apply_async`` of one chain to its first task starting on an idle worker.

    eval "$(bash scripts/services.sh env | sed 's/^/export /')"
    python3 benchmarks/celery_peer.py [--n 2000] [--workers 1,2] [--repeat 3] [--latency 50]
        [--redis URL] [--db 15] [--prefetch 4] [--acks-late] [--json]

Celery is never a dependency of tideflow: the script runs itself in a venv of its own,
``/tmp/celery-venv`` (``--venv``), created on first use with ``celery[redis]==5.7.0`` and
``redis>=5`` from PyPI and reused after; started from any other Python (``python3``, the project's
``.venv/bin/python``), it creates that venv if need be and re-executes itself in it. It imports
nothing of tideflow.

Redis: the server of ``--redis URL`` (default ``$TIDEFLOW_TEST_REDIS_URL``, password and all),
on database ``--db`` (default 15, not tideflow's 0), every key under a fresh prefix
``celery_bench_<hex>:`` (kombu's and the result backend's ``global_keyprefix``) on a queue of the
same name. At the end the script deletes every key under that prefix (and says how many it
deleted); it never flushes a database.

The app: tasks ``bench.s1`` .. ``bench.s5``, each ``return x + 1``; one workflow instance is
``chain(s1.s(i), s2.s(), s3.s(), s4.s(), s5.s()).apply_async()`` (one message per task, the rest
of the chain riding in it). Every task stores its result in the Redis result backend (Celery's
default: the analogue of tideflow recording each step's output); JSON serializer; acks on
receipt unless ``--acks-late`` (Celery's default; acks_late is the at-least-once setting closer to
tideflow's durability); prefetch multiplier ``--prefetch`` (default 4, Celery's).

The workers, started and stopped by the script (SIGTERM, a warm shutdown), one per process::

    /tmp/celery-venv/bin/celery --app celery_peer:app worker --pool=solo --concurrency=1 \\
        --hostname=w<i>@celery-bench --queues=celery_bench_<hex> --loglevel=WARNING \\
        --without-gossip --without-mingle --without-heartbeat

(cwd ``benchmarks/``; the app reads its broker URL, prefix and settings from ``CELERY_PEER_*``
variables the script sets; remote control is off). ``--pool=solo`` because it is the fairest to
Celery *per process*: one OS process receives, runs and acknowledges its tasks and sends the next
task of the chain, as one tideflow worker process does. ``--pool=prefork --concurrency=1`` is two
processes (a consumer parent and one child, tasks and results crossing a pipe between them), so it
would use up to two cores under the name of one worker and pay the pipe on every task; events,
gossip, mingle, heartbeats and remote control only add traffic. ``--pool prefork`` runs that
instead, for comparison.

What is measured, per worker count: the workers are started and warmed (a wave of chains, so each
has its connections open and its code loaded); then, ``--repeat`` times, the wall time from the
first ``apply_async`` of N chains (sent from this one process, in a loop) to the last chain's
result (``ResultSet.join_native``), every result checked; steps per second = 5N / wall, ms per
step = wall / 5N, and per worker process = steps per second / workers; min and median over the
repetitions. The worker processes' CPU time over the timed runs (``/proc/<pid>/stat``) divided by
the steps, and the Redis server's CPU time and commands over the same span (server-wide: the
server is shared, so others' load counts too), say where the time goes. Then ``--latency`` chains,
one at a time on idle workers (each sent 50 ms after the previous finished): the time from just
before ``apply_async`` to the start of ``s1``'s body (``time.monotonic()``, CLOCK_MONOTONIC, the
same clock in every process on Linux; ``s1`` writes it to a Redis key after reading it), and to
the chain's result; medians.

``--json`` merges the figures under ``"celery_peer"`` into benchmarks/results.json. The machine
is noisy (2 shared cores): compare figures measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
VENV = Path("/tmp/celery-venv")
REQUIREMENTS = ["celery[redis]==5.7.0", "redis>=5"]
N = 2_000
STEPS = 5
REPEAT = 3
LATENCY = 50
DB = 15
PREFETCH = 4

# What the workers read to build the app (set by the driver for its worker subprocesses).
ENV_URL, ENV_PREFIX = "CELERY_PEER_URL", "CELERY_PEER_PREFIX"
ENV_PREFETCH, ENV_ACKS_LATE = "CELERY_PEER_PREFETCH", "CELERY_PEER_ACKS_LATE"


# ---------------------------------------------------------------------------------------------
# the Celery app (imported by the workers as ``celery_peer:app``)


def make_app(url: str, prefix: str, prefetch: int, acks_late: bool) -> Any:
    """The benchmark's Celery app: broker and result backend on ``url``, every key under
    ``prefix``, tasks ``bench.s1`` .. ``bench.s5`` routed to the queue named ``prefix``."""
    from celery import Celery

    app = Celery("celery_peer", broker=url, backend=url)
    keyprefix = {"global_keyprefix": prefix + ":"}
    app.conf.update(
        broker_transport_options=keyprefix,
        result_backend_transport_options=keyprefix,
        task_default_queue=prefix,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=acks_late,
        worker_prefetch_multiplier=prefetch,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        result_expires=3600,
    )

    def inc(x: int, probe: str | None = None) -> int:
        if probe is not None:  # the latency probe: when this body started, then write it down
            started = time.monotonic()
            probe_client(url).set(probe, repr(started), ex=600)
        return x + 1

    for i in range(1, STEPS + 1):
        app.task(name=f"bench.s{i}")(inc)

    from celery.signals import worker_ready

    @worker_ready.connect(weak=False)
    def announce(sender: Any = None, **_: Any) -> None:
        probe_client(url).set(f"{prefix}:ready:{sender.hostname}", "1", ex=600)

    return app


_PROBE: dict[str, Any] = {}


def probe_client(url: str) -> Any:
    """A redis-py client on ``url``, one per process, for the probe and readiness keys."""
    if url not in _PROBE:
        import redis

        _PROBE[url] = redis.Redis.from_url(url)
    return _PROBE[url]


app = (
    make_app(
        os.environ[ENV_URL],
        os.environ[ENV_PREFIX],
        int(os.environ.get(ENV_PREFETCH, PREFETCH)),
        os.environ.get(ENV_ACKS_LATE) == "1",
    )
    if ENV_URL in os.environ and ENV_PREFIX in os.environ
    else None
)


# ---------------------------------------------------------------------------------------------
# the venv


def ensure_venv(venv: Path) -> None:
    """Re-executes this script in ``venv`` (creating it with celery first) unless it already
    runs in a Python that has celery and redis-py."""
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401

        return
    except ImportError:
        pass
    python = venv / "bin" / "python"
    if Path(sys.prefix).resolve() == venv.resolve():
        sys.exit(f"celery is not importable in {venv}: remove it and run again")
    if not (venv / "bin" / "celery").exists():
        print(f"creating {venv} with {' '.join(REQUIREMENTS)}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


# ---------------------------------------------------------------------------------------------
# workers


class Workers:
    """``count`` celery worker subprocesses on the benchmark's queue, started and stopped here."""

    def __init__(self, count: int, url: str, prefix: str, args: argparse.Namespace) -> None:
        self.count, self.url, self.prefix, self.pool = count, url, prefix, args.pool
        self.env = dict(os.environ)
        self.env.update(
            {
                ENV_URL: url,
                ENV_PREFIX: prefix,
                ENV_PREFETCH: str(args.prefetch),
                ENV_ACKS_LATE: "1" if args.acks_late else "0",
                "PYTHONPATH": str(HERE),
            }
        )
        self.celery = str(Path(sys.executable).parent / "celery")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def command(self, i: int) -> list[str]:
        """The exact command of worker ``i`` (1-based)."""
        pool = ["--pool=solo"] if self.pool == "solo" else ["--pool=prefork"]
        return [
            self.celery,
            "--app",
            "celery_peer:app",
            "worker",
            *pool,
            "--concurrency=1",
            f"--hostname=w{i}@celery-bench",
            f"--queues={self.prefix}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    def start(self, timeout: float = 60.0) -> None:
        client = probe_client(self.url)
        for i in range(1, self.count + 1):
            log = Path(f"/tmp/celery-bench-{self.prefix}-w{i}.log")
            self.logs.append(log)
            with log.open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        self.command(i), cwd=HERE, env=self.env, stdout=out, stderr=out
                    )
                )
        deadline = time.monotonic() + timeout
        for i, proc in enumerate(self.procs, 1):
            key = f"{self.prefix}:ready:w{i}@celery-bench"
            while not client.exists(key):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.logs[i - 1].read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"celery worker {i} did not start; its log:\n{tail}")
                time.sleep(0.05)

    def pids(self) -> list[int]:
        """Every process of the workers: with prefork, the pool's children too."""
        out = [p.pid for p in self.procs]
        for pid in list(out):
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            out += [int(c) for c in children]
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU time of the worker processes so far."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return total / tick

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for proc, log in zip(self.procs, self.logs, strict=True):
            text = log.read_text(errors="replace")
            if proc.returncode != 0:  # the whole tail; else only what it logged (past its banner)
                print(f"  worker exited {proc.returncode}: {text[-2000:]}", file=sys.stderr)
            else:
                for line in text.splitlines():
                    if any(f": {level}/" in line for level in ("WARNING", "ERROR", "CRITICAL")):
                        print(f"  {log.name}: {line}", file=sys.stderr)
            log.unlink(missing_ok=True)
        self.procs, self.logs = [], []


# ---------------------------------------------------------------------------------------------
# measurements


def chains(bench: Any, n: int, base: int = 0) -> list[Any]:
    """Sends n chains (inputs base .. base + n - 1) and returns their results' handles."""
    from celery import chain

    tasks = [bench.tasks[f"bench.s{i}"] for i in range(1, STEPS + 1)]
    first, rest = tasks[0], tasks[1:]
    return [chain(first.s(base + i), *[t.s() for t in rest]).apply_async() for i in range(n)]


def wait_all(results: list[Any], base: int, timeout: float) -> None:
    """Waits for every chain and checks that chain i returned base + i + 5."""
    from celery.result import ResultSet

    values = ResultSet(results).join_native(timeout=timeout, propagate=True)
    want = [base + i + STEPS for i in range(len(results))]
    if values != want:
        bad = next(i for i, (v, w) in enumerate(zip(values, want, strict=True)) if v != w)
        raise AssertionError(f"chain {bad} returned {values[bad]!r}, not {want[bad]!r}")


def redis_counters(client: Any) -> tuple[float, int]:
    """The Redis server's CPU seconds (user + sys) and commands processed so far."""
    cpu = client.info("cpu")
    stats = client.info("stats")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"], int(stats["total_commands_processed"])


def throughput(bench: Any, workers: Workers, n: int, repeat: int) -> dict[str, Any]:
    client = probe_client(workers.url)
    walls: list[float] = []
    cpu0, (rcpu0, rcmd0) = workers.cpu_seconds(), redis_counters(client)
    me0 = time.process_time()
    for r in range(repeat):
        base = (r + 1) * 1_000_000
        t = time.perf_counter()
        results = chains(bench, n, base)
        sent = time.perf_counter() - t
        wait_all(results, base, timeout=max(120.0, n * 0.1))
        walls.append(time.perf_counter() - t)
        print(
            f"  {workers.count} worker(s), run {r + 1}/{repeat}: {walls[-1]:.2f} s "
            f"(sending took {sent:.2f} s)",
            file=sys.stderr,
            flush=True,
        )
        for res in results:
            res.forget()  # the chain's results, its parents' too (AsyncResult.forget)
    me1 = time.process_time()
    cpu1, (rcpu1, rcmd1) = workers.cpu_seconds(), redis_counters(client)
    steps = n * STEPS
    best, median = min(walls), statistics.median(walls)
    return {
        "workers": workers.count,
        "chains": n,
        "steps": steps,
        "repeat": repeat,
        "wall_s_min": best,
        "wall_s_median": median,
        "steps_per_s_best": steps / best,
        "steps_per_s_median": steps / median,
        "ms_per_step_best": best / steps * 1e3,
        "ms_per_step_median": median / steps * 1e3,
        "steps_per_s_per_worker_best": steps / best / workers.count,
        "steps_per_s_per_worker_median": steps / median / workers.count,
        "worker_cpu_ms_per_step": (cpu1 - cpu0) / (steps * repeat) * 1e3,
        "client_cpu_ms_per_step": (me1 - me0) / (steps * repeat) * 1e3,
        "redis_cpu_ms_per_step": (rcpu1 - rcpu0) / (steps * repeat) * 1e3,
        "redis_commands_per_step": (rcmd1 - rcmd0) / (steps * repeat),
    }


def latency(bench: Any, workers: Workers, samples: int) -> dict[str, Any]:
    """One chain at a time on idle workers: apply_async to s1's start, and to the result."""
    from celery import chain

    client = probe_client(workers.url)
    tasks = [bench.tasks[f"bench.s{i}"] for i in range(1, STEPS + 1)]
    to_start, to_result = [], []
    for i in range(samples):
        time.sleep(0.05)  # the workers are idle, blocked on the broker
        key = f"{workers.prefix}:probe:{uuid.uuid4().hex}"
        sig = chain(tasks[0].s(i, probe=key), *[t.s() for t in tasks[1:]])
        t0 = time.monotonic()
        res = sig.apply_async()
        out = res.get(timeout=30)
        done = time.monotonic()
        if out != i + STEPS:
            raise AssertionError(f"latency chain {i} returned {out!r}")
        started = float(client.get(key))
        client.delete(key)
        res.forget()
        to_start.append(started - t0)
        to_result.append(done - t0)
    return {
        "workers": workers.count,
        "samples": samples,
        "to_first_task_ms_median": statistics.median(to_start) * 1e3,
        "to_first_task_ms_min": min(to_start) * 1e3,
        "to_first_task_ms_max": max(to_start) * 1e3,
        "chain_ms_median": statistics.median(to_result) * 1e3,
        "chain_ms_per_step_median": statistics.median(to_result) / STEPS * 1e3,
    }


def cleanup(url: str, prefix: str) -> int:
    """Deletes every key under ``prefix`` on ``url``'s database; returns how many."""
    client = probe_client(url)
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.delete(*batch)
            batch = []
    if batch:
        deleted += client.delete(*batch)
    return int(deleted)


def with_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def print_table(rows: list[dict[str, Any]], lats: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{'workers':>7}  {'steps/s':>8}  {'ms/step':>7}  {'steps/s/worker':>14}  "
        f"{'(median)':>8}  {'worker CPU':>10}  {'client CPU':>10}  {'Redis CPU':>9}  {'cmds':>5}"
    )
    print(
        f"{'':>7}  {'best':>8}  {'best':>7}  {'best':>14}  {'':>8}  {'ms/step':>10}  "
        f"{'ms/step':>10}  {'ms/step':>9}  {'/step':>5}"
    )
    for r in rows:
        print(
            f"{r['workers']:>7}  {r['steps_per_s_best']:8.0f}  {r['ms_per_step_best']:7.3f}  "
            f"{r['steps_per_s_per_worker_best']:14.0f}  {r['steps_per_s_per_worker_median']:8.0f}"
            f"  {r['worker_cpu_ms_per_step']:10.3f}  {r['client_cpu_ms_per_step']:10.3f}"
            f"  {r['redis_cpu_ms_per_step']:9.3f}  "
            f"{r['redis_commands_per_step']:5.1f}"
        )
    if len(rows) == 2:
        ratio = rows[1]["steps_per_s_best"] / rows[0]["steps_per_s_best"]
        print(f"\n{rows[1]['workers']} workers over {rows[0]['workers']}: {ratio:.2f}x steps/s")
    if lats:
        print()
        print(
            f"{'workers':>7}  {'apply_async -> s1 starts, ms':>28}  "
            f"{'one chain alone, ms':>19}  {'ms/step':>7}"
        )
        print(f"{'':>7}  {'median':>10} {'min':>8} {'max':>8}  {'median':>19}  {'median':>7}")
        for lat in lats:
            print(
                f"{lat['workers']:>7}  {lat['to_first_task_ms_median']:10.2f} "
                f"{lat['to_first_task_ms_min']:8.2f} {lat['to_first_task_ms_max']:8.2f}  "
                f"{lat['chain_ms_median']:19.2f}  {lat['chain_ms_per_step_median']:7.2f}"
            )
    print(
        "\nsteps/s: 5N / wall time from the first apply_async to the last result; worker CPU: "
        "the worker processes' CPU time per step; client CPU: this process's (sending, waiting); "
        "Redis CPU and commands: server-wide (shared)."
    )


def merge_json(figures: dict[str, Any]) -> Path:
    path = HERE / "results.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data["celery_peer"] = figures
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=N, help="chains per run (default %(default)s)")
    ap.add_argument("--workers", default="1,2", help="worker process counts (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=REPEAT, help="runs (default %(default)s)")
    ap.add_argument(
        "--latency", type=int, default=LATENCY, help="latency samples (default %(default)s)"
    )
    ap.add_argument(
        "--redis",
        default=os.environ.get("TIDEFLOW_TEST_REDIS_URL"),
        help="Redis server URL (default $TIDEFLOW_TEST_REDIS_URL); its database is replaced",
    )
    ap.add_argument("--db", type=int, default=DB, help="Redis database (default %(default)s)")
    ap.add_argument("--prefetch", type=int, default=PREFETCH, help="worker_prefetch_multiplier")
    ap.add_argument("--acks-late", action="store_true", help="task_acks_late=True")
    ap.add_argument("--pool", choices=["solo", "prefork"], default="solo", help="worker pool")
    ap.add_argument("--venv", type=Path, default=VENV, help="the venv (default %(default)s)")
    ap.add_argument("--json", action="store_true", help="merge into benchmarks/results.json")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.workers.split(",") if c.strip()]
    if not args.redis:
        ap.error("no Redis: pass --redis URL or set TIDEFLOW_TEST_REDIS_URL")
    if args.n < 1 or args.repeat < 1 or not counts or min(counts) < 1:
        ap.error("--n, --repeat and every --workers count must be at least 1")
    ensure_venv(args.venv)

    url = with_db(args.redis, args.db)
    prefix = f"celery_bench_{uuid.uuid4().hex[:10]}"
    client = probe_client(url)
    print(
        f"Celery peer: {args.n} chains of {STEPS} tasks (x + 1), best and median of "
        f"{args.repeat}; {platform.machine()} {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.2f}, Python {platform.python_version()}, celery "
        f"{version('celery')}, kombu {version('kombu')}, redis-py {version('redis')}, Redis "
        f"{client.info('server')['redis_version']} (db {args.db}, prefix {prefix}:); "
        f"--pool={args.pool} --concurrency=1, prefetch {args.prefetch}, "
        f"acks_late={args.acks_late}",
        flush=True,
    )
    bench = make_app(url, prefix, args.prefetch, args.acks_late)
    rows: list[dict[str, Any]] = []
    lats: list[dict[str, Any]] = []
    command = ""
    try:
        for count in counts:
            workers = Workers(count, url, prefix, args)
            command = " ".join(workers.command(1))
            workers.start()
            try:
                warm = min(args.n, 200)
                wait_all(chains(bench, warm, 0), 0, timeout=120.0)
                rows.append(throughput(bench, workers, args.n, args.repeat))
                if args.latency > 0:
                    lats.append(latency(bench, workers, args.latency))
            finally:
                workers.stop()
    finally:
        deleted = cleanup(url, prefix)
        print(f"  deleted {deleted} Redis keys under {prefix}:", file=sys.stderr)
    print_table(rows, lats)
    print(f"worker command (cwd benchmarks/): {command}")
    if args.json:
        figures = {
            "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "celery": version("celery"),
            "kombu": version("kombu"),
            "redis_server": client.info("server")["redis_version"],
            "pool": args.pool,
            "prefetch": args.prefetch,
            "acks_late": args.acks_late,
            "worker_command": command,
            "throughput": rows,
            "latency": lats,
        }
        print(f"\nmerged into {merge_json(figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
