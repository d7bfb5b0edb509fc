"""Per-step cost of a 1,000-step sequential chain on SQLite: tideflow beside DBOS and LangGraph;
and on PostgreSQL: tideflow's PostgresStore beside DBOS on the same server.

    PYTHONPATH=python /tmp/peers-venv/bin/python benchmarks/peers.py [--repeat 5] [--dir DIR]
        [--postgres URL] [--skip-sqlite]

The peers are never dependencies of tideflow: install them into a throwaway venv (not the project's)
and run this from the repository root with the source tree on the path (its compiled extension is
abi3, so it loads in any CPython >= 3.10):

    python3 -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install dbos langgraph langgraph-checkpoint-sqlite asyncpg

(asyncpg is tideflow's PostgreSQL driver, the ``tideflow[postgres]`` extra.) The PostgreSQL rows
run on the server of ``--postgres URL`` (default: ``$TIDEFLOW_TEST_POSTGRES_URL``, the test server
of ``scripts/services.sh``; the user needs CREATEDB), for example::

    eval "$(bash scripts/services.sh env | sed 's/^/export /')"
    PYTHONPATH=python /tmp/peers-venv/bin/python benchmarks/peers.py --skip-sqlite

Each repetition of DBOS gets a database of its own, ``dbos_bench_<hex>``, created before and
dropped (``WITH (FORCE)``) after it, as its ``system_database_url``; tideflow's runs share one
database ``tideflow_bench_<hex>`` created for the run (dropped at the end), each repetition on a
fresh ``?schema=`` (``store.drop()`` after it). Neither connects nor creates its schema on the
clock: DBOS is launched before, and tideflow runs a one-step workflow on the store before. Without
a URL, or without asyncpg, or while ``tideflow.stores.PostgresStore`` does not import, the
PostgreSQL rows are skipped with a line saying why.

A peer that is not installed is skipped with a line saying how to install it (the exit code is
still 0). Every figure is measured in this one run, on a fresh database file per repetition, and
is the best of ``--repeat`` repetitions, interleaved across the systems so that a burst of load hits
all of them. Only the run itself is timed: opening the database, creating its schema and building
the workflow or graph are not. The step body is ``x + 1``; per-step time is the run's wall time
divided by the number of steps (so it includes the run's own start and finish commits).

What each system runs:

* tideflow: ``Workflow.then(step)`` 1,000 times, ``engine.run(wf, 0)``, on
  ``Engine(store="sqlite:////abs/path.db")`` (WAL, ``synchronous=NORMAL``) and on
  ``SQLiteStore(path, durability="full")`` (WAL, ``synchronous=FULL``); in memory for reference.
* DBOS Transact: its own SQLite system database (``system_database_url="sqlite:///..."``), a
  ``@DBOS.workflow()`` calling a ``@DBOS.step()`` 1,000 times, DBOS launched before and destroyed
  after every repetition. DBOS leaves SQLite's rollback journal as it is; a second row runs it on
  a file switched to WAL beforehand, to show what the journal mode accounts for.
* On PostgreSQL: tideflow's ``PostgresStore`` (``Engine(store="postgresql://...?schema=...")``,
  ``engine.run``, server commit settings as the server has them), and DBOS with
  ``system_database_url="postgresql://..."`` running the same ``@DBOS.workflow()``; the ratio of
  DBOS's per-step time to tideflow's is printed (the target of issue 9: at least 10x).
* LangGraph: a ``StateGraph`` of 1,000 nodes in a chain, compiled with a ``SqliteSaver``
  checkpointer and invoked with a ``thread_id``, with ``durability="sync"`` (each step's checkpoint
  is written before the next step starts, as tideflow and DBOS do) and with LangGraph's default
  ``durability="async"`` (written while the next step runs); and one node looped 1,000 times by a
  conditional edge on the counter, whose checkpoints stay small (a chain's grow with its nodes).

The journal mode and ``synchronous`` level each peer's connection ran with are printed beside its
figure: both peers run at ``synchronous=FULL`` (SQLite's default), so ``÷full`` compares like with
like.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tideflow import Engine, Workflow, step
from tideflow.stores import SQLiteStore

N = 1_000
REPEAT = 5

# What a trial returns: the seconds the run took, and a note on how the database was set up.
Trial = tuple[float, str]


def best_of_rounds(
    systems: list[tuple[str, Callable[[Path], Trial]]], repeat: int, base: Path | None
) -> dict[str, Trial]:
    """The fastest of ``repeat`` trials of each system, each on a fresh, empty directory.

    The repetitions are interleaved (round r runs every system once) so that a burst of load on
    the machine, or of slow disk syncs, lands on all of them rather than on one.
    """
    fastest: dict[str, Trial] = {}
    for r in range(repeat):
        for label, trial in systems:
            with tempfile.TemporaryDirectory(prefix="tideflow-peers-", dir=base) as d:
                result = trial(Path(d))
                gc.collect()  # drop the trial's engine (and its connection) with its files
            fastest[label] = min(fastest.get(label, result), result)
        print(f"  round {r + 1}/{repeat} done", file=sys.stderr, flush=True)
    return fastest


def journal_mode(db: Path) -> str:
    """The journal mode a database file is in (WAL is recorded in the file; others are not,
    and a connection that set none runs in SQLite's default, DELETE)."""
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).upper()


SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def sync_name(level: object) -> str:
    return SYNC_NAMES.get(level, str(level)) if isinstance(level, int) else str(level)


# ---------------------------------------------------------------------------------------------
# tideflow


def tideflow_chain(n: int) -> Workflow:
    @step(name="inc")
    def inc(ctx: Any, x: int) -> int:
        return x + 1

    wf = Workflow("chain")
    for _ in range(n):
        wf = wf.then(inc)
    wf.compile()
    return wf


def tideflow_trial(n: int, store: Callable[[Path], object]) -> Callable[[Path], Trial]:
    wf = tideflow_chain(n)

    def trial(d: Path) -> Trial:
        engine = Engine(store=store(d))
        engine.register(wf)
        t = time.perf_counter()
        run = engine.run(wf, 0)
        took = time.perf_counter() - t
        assert run.status.value == "completed" and run.output == n, (run.status, run.output)
        assert len(engine.steps(run.id)) == n
        durability = getattr(engine.store, "durability", None)
        del engine, run
        if durability is None:
            return took, "in memory"
        # synchronous is the level tideflow sets on its connection for this durability
        return took, f"{journal_mode(d / 'tideflow.db')} journal, synchronous={durability.upper()}"

    return trial


# ---------------------------------------------------------------------------------------------
# DBOS Transact


def dbos_trial(n: int, wal: bool = False) -> Callable[[Path], Trial]:
    """With ``wal``, the database file is put in WAL mode before DBOS opens it (DBOS leaves
    SQLite's default rollback journal); WAL is a property of the file, so DBOS keeps it."""
    from dbos import DBOS, SetWorkflowID

    def trial(d: Path) -> Trial:
        db = d / "dbos.sqlite"
        if wal:
            with sqlite3.connect(db) as conn:
                assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        dbos = DBOS(
            config={
                "name": "tideflow-peers",
                "system_database_url": f"sqlite:///{db}",
                "log_level": "WARNING",
            }
        )
        try:

            @DBOS.step()
            def inc(x: int) -> int:
                return x + 1

            @DBOS.workflow()
            def chain(x: int) -> int:
                for _ in range(n):
                    x = inc(x)
                return x

            DBOS.launch()
            with SetWorkflowID("bench"):
                t = time.perf_counter()
                out = chain(0)
                took = time.perf_counter() - t
            assert out == n, out
            assert DBOS.get_workflow_status("bench").status == "SUCCESS"
            assert len(DBOS.list_workflow_steps("bench", load_output=False)) == n
            sync = "?"
            sys_db = getattr(dbos, "_sys_db_field", None)  # private: only to report the pragma
            if sys_db is not None:
                with sys_db.engine.connect() as conn:
                    sync = sync_name(conn.exec_driver_sql("PRAGMA synchronous").scalar())
        finally:
            # destroy_registry: the next repetition registers its functions afresh
            DBOS.destroy(destroy_registry=True)
        return took, f"{journal_mode(db)} journal, synchronous={sync}"

    return trial


# ---------------------------------------------------------------------------------------------
# PostgreSQL: tideflow's PostgresStore and DBOS on the same server


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def pg_admin(url: str, sql: str) -> None:
    """Runs one statement (CREATE/DROP DATABASE) on the server of ``url`` through asyncpg."""
    import asyncio

    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def tideflow_pg_trial(n: int, url: str) -> Callable[[Path], Trial]:
    """``url`` names the run's database; every trial runs on a fresh schema in it."""
    from tideflow.stores import parse_store

    wf = tideflow_chain(n)

    @step(name="warm")
    def warm(ctx: Any, x: int) -> int:
        return x + 1

    warm_wf = Workflow("warm").then(warm)

    def trial(d: Path) -> Trial:
        schema = f"tf_{uuid.uuid4().hex[:10]}"
        sep = "&" if urlsplit(url).query else "?"
        store: Any = parse_store(f"{url}{sep}schema={schema}")
        try:
            engine = Engine(store=store)
            engine.register(wf)
            assert engine.run(warm_wf, 0).output == 1  # connect, create the schema
            t = time.perf_counter()
            run = engine.run(wf, 0)
            took = time.perf_counter() - t
            assert run.status.value == "completed" and run.output == n, (run.status, run.output)
            assert len(engine.steps(run.id)) == n
            note = f"{store.describe()}, synchronous_commit={pg_setting(url)}"
            del engine, run
        finally:
            store.drop()
            store.close()
        return took, note

    return trial


def pg_setting(url: str, name: str = "synchronous_commit") -> str:
    import asyncio

    import asyncpg

    async def go() -> str:
        conn = await asyncpg.connect(url)
        try:
            return str(await conn.fetchval(f"SHOW {name}"))
        finally:
            await conn.close()

    return asyncio.run(go())


def dbos_pg_trial(n: int, url: str) -> Callable[[Path], Trial]:
    """Each trial on a new database of its own on the server of ``url``, dropped after."""
    from dbos import DBOS, SetWorkflowID

    def trial(d: Path) -> Trial:
        database = f"dbos_bench_{uuid.uuid4().hex[:10]}"
        pg_admin(url, f'CREATE DATABASE "{database}"')
        sys_url = with_database(url, database)
        try:
            DBOS(
                config={
                    "name": "tideflow-peers",
                    "system_database_url": sys_url,
                    "log_level": "WARNING",
                }
            )
            try:

                @DBOS.step()
                def inc(x: int) -> int:
                    return x + 1

                @DBOS.workflow()
                def chain(x: int) -> int:
                    for _ in range(n):
                        x = inc(x)
                    return x

                DBOS.launch()
                with SetWorkflowID("bench"):
                    t = time.perf_counter()
                    out = chain(0)
                    took = time.perf_counter() - t
                assert out == n, out
                assert DBOS.get_workflow_status("bench").status == "SUCCESS"
                assert len(DBOS.list_workflow_steps("bench", load_output=False)) == n
            finally:
                DBOS.destroy(destroy_registry=True)
            note = f"database {database} (dropped), synchronous_commit={pg_setting(url)}"
        finally:
            pg_admin(url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        return took, note

    return trial


# ---------------------------------------------------------------------------------------------
# LangGraph


def langgraph_trial(n: int, durability: str, shape: str = "chain") -> Callable[[Path], Trial]:
    """``shape="chain"``: n nodes, each with an edge to the next; ``"loop"``: one node with a
    conditional edge back to itself until the counter reaches n. Either way every step is one
    LangGraph superstep, checkpointed."""
    from typing import TypedDict

    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        x: int

    def inc(state):
        return {"x": state["x"] + 1}

    builder = StateGraph(State)
    if shape == "chain":
        prev = START
        for i in range(n):
            builder.add_node(f"s{i}", inc)
            builder.add_edge(prev, f"s{i}")
            prev = f"s{i}"
        builder.add_edge(prev, END)
    else:
        builder.add_node("inc", inc)
        builder.add_edge(START, "inc")
        builder.add_conditional_edges("inc", lambda state: END if state["x"] >= n else "inc")

    def trial(d: Path) -> Trial:
        db = d / "langgraph.sqlite"
        # as SqliteSaver.from_conn_string opens it (its lock makes cross-thread use safe)
        conn = sqlite3.connect(db, check_same_thread=False)
        try:
            saver = SqliteSaver(conn)
            saver.setup()  # creates the tables (and switches to WAL) before the clock starts
            graph = builder.compile(checkpointer=saver)
            config: Any = {"configurable": {"thread_id": "bench"}, "recursion_limit": n + 10}
            t = time.perf_counter()
            out = graph.invoke({"x": 0}, config, durability=durability)
            took = time.perf_counter() - t
            assert out["x"] == n, out
            assert graph.get_state(config).values["x"] == n
            # a checkpoint per step, and two for the input (n + 2)
            count = conn.execute(
                "SELECT count(*) FROM checkpoints WHERE thread_id = 'bench'"
            ).fetchone()[0]
            assert count >= n, count
            sync = sync_name(conn.execute("PRAGMA synchronous").fetchone()[0])
        finally:
            conn.close()
        return took, f"{journal_mode(db)} journal, synchronous={sync}, {count} checkpoints"

    return trial


# ---------------------------------------------------------------------------------------------


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed(*modules: str) -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except ModuleNotFoundError:  # a parent package is missing
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=N, help="steps in the chain (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=REPEAT, help="repetitions (default %(default)s)")
    ap.add_argument("--dir", type=Path, default=None, help="where the database files go")
    ap.add_argument(
        "--postgres",
        default=os.environ.get("TIDEFLOW_TEST_POSTGRES_URL"),
        help="a PostgreSQL server URL for the PostgreSQL rows (default $TIDEFLOW_TEST_POSTGRES_URL)",
    )
    ap.add_argument("--skip-sqlite", action="store_true", help="only the PostgreSQL rows")
    args = ap.parse_args(argv)
    n, repeat, base = args.steps, args.repeat, args.dir

    print(
        f"{n}-step sequential chain, step body x + 1, best of {repeat}; "
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"tideflow {version('tideflow') or 'from source'}, "
        f"databases in {base or tempfile.gettempdir()}",
        flush=True,
    )
    memory, normal, full = "tideflow, in memory", "tideflow, SQLite normal", "tideflow, SQLite full"
    systems: list[tuple[str, Callable[[Path], Trial]]] = []
    missing: list[str] = []
    if not args.skip_sqlite:
        systems += [
            (memory, tideflow_trial(n, lambda d: None)),
            (normal, tideflow_trial(n, lambda d: f"sqlite:///{d.resolve() / 'tideflow.db'}")),
            (full, tideflow_trial(n, lambda d: SQLiteStore(d / "tideflow.db", durability="full"))),
        ]
        if installed("dbos"):
            v = version("dbos")
            systems.append((f"DBOS {v}, SQLite", dbos_trial(n)))
            systems.append((f"DBOS {v}, SQLite file preset to WAL", dbos_trial(n, wal=True)))
        else:
            missing.append("DBOS: not installed, skipped (pip install dbos, in a venv of its own)")
        if installed("langgraph", "langgraph.checkpoint.sqlite"):
            v = f"{version('langgraph')}/{version('langgraph-checkpoint-sqlite')}"
            for shape, durability in (("chain", "sync"), ("chain", "async"), ("loop", "sync")):
                what = f"{n} nodes" if shape == "chain" else "1 node looped"
                label = f"LangGraph {v}, {what}, durability={durability}"
                systems.append((label, langgraph_trial(n, durability, shape)))
        else:
            missing.append(
                "LangGraph: langgraph or its SQLite checkpointer not installed, skipped "
                "(pip install langgraph langgraph-checkpoint-sqlite, in a venv of its own)"
            )
    sqlite_labels = [label for label, _ in systems]

    # PostgreSQL: tideflow's PostgresStore and DBOS on the same server
    tf_pg, pg_labels, pg_database = "tideflow, PostgresStore", [], None
    pg_why = pg_unavailable(args.postgres)
    if pg_why is None:
        assert args.postgres is not None
        pg_database = f"tideflow_bench_{uuid.uuid4().hex[:10]}"
        pg_admin(args.postgres, f'CREATE DATABASE "{pg_database}"')
        systems.append((tf_pg, tideflow_pg_trial(n, with_database(args.postgres, pg_database))))
        pg_labels.append(tf_pg)
        if installed("dbos"):
            label = f"DBOS {version('dbos')}, PostgreSQL"
            systems.append((label, dbos_pg_trial(n, args.postgres)))
            pg_labels.append(label)
        else:
            missing.append("DBOS on PostgreSQL: DBOS not installed, skipped (pip install dbos)")
    else:
        missing.append(f"PostgreSQL rows skipped: {pg_why}")

    try:
        fastest = best_of_rounds(systems, repeat, base)
    finally:
        if pg_database is not None:
            assert args.postgres is not None
            pg_admin(args.postgres, f'DROP DATABASE IF EXISTS "{pg_database}" WITH (FORCE)')
    us = {label: took / n * 1e6 for label, (took, _) in fastest.items()}
    width = max((len(label) for label in us), default=0)
    if sqlite_labels:
        print()
        print(f"{'':<{width}}  µs/step  {'÷normal':>8}  {'÷full':>8}  database")
        for label in sqlite_labels:
            note = fastest[label][1]
            ratios = f"{us[label] / us[normal]:7.1f}x  {us[label] / us[full]:7.1f}x"
            print(f"{label:<{width}}  {us[label]:7.1f}  {ratios}  {note}")
        print(
            "\n÷normal, ÷full: per-step time over tideflow's on SQLite with durability normal, "
            "full. Compare like with like: synchronous=FULL syncs every commit, NORMAL (in WAL) "
            "does not."
        )
    if pg_labels:
        print()
        print(f"{'':<{width}}  µs/step  {'÷tideflow':>9}  database (PostgreSQL)")
        for label in pg_labels:
            note = fastest[label][1]
            print(f"{label:<{width}}  {us[label]:7.1f}  {us[label] / us[tf_pg]:8.1f}x  {note}")
        for label in pg_labels[1:]:
            print(
                f"\nOn the same PostgreSQL, tideflow is {us[label] / us[tf_pg]:.1f}x faster per "
                f"step than {label.partition(',')[0]} (target: at least 10x)."
            )
    for line in missing:
        print(line)
    return 0


def pg_unavailable(url: str | None) -> str | None:
    """Why the PostgreSQL rows cannot run, or None."""
    if not url:
        return "no server (pass --postgres URL or set TIDEFLOW_TEST_POSTGRES_URL)"
    if not installed("asyncpg"):
        return "asyncpg not installed (pip install asyncpg, in the peers' venv)"
    try:
        from tideflow.stores import PostgresStore  # noqa: F401
    except Exception as exc:
        return f"tideflow.stores.PostgresStore cannot be imported ({exc!r})"
    return None


if __name__ == "__main__":
    sys.exit(main())
