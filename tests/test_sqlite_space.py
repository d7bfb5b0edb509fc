"""The size of a SQLite store on disk: purge and compact give space back; the -wal stays bounded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tideflow import Context, Engine, Workflow, step
from tideflow.stores import SQLiteStore

BLOB = "x" * 900


@step
def pad(ctx: Context, n: int) -> str:
    return BLOB


def chain(name: str, steps: int) -> Workflow:
    wf = Workflow(name)
    for _ in range(steps):
        wf = wf.then(pad)
    return wf


def on_disk(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def test_purging_a_big_instance_shrinks_the_file(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    engine = Engine(store=SQLiteStore(db))
    engine.run(chain("big", 5_000), 0, id="big")
    full = on_disk(db)
    assert full > 5_000_000
    assert engine.purge(older_than=0) == 1
    assert db.stat().st_size < full / 10


def test_compact_shrinks_a_file_an_older_tideflow_made(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    engine = Engine(store=SQLiteStore(db))
    del engine
    with sqlite3.connect(db) as c:  # the files made before incremental vacuum: auto_vacuum=NONE
        c.execute("PRAGMA auto_vacuum = NONE")
        c.execute("VACUUM")
    engine = Engine(store=SQLiteStore(db))
    engine.run(chain("big", 5_000), 0, id="big")
    assert engine.purge(older_than=0) == 1
    engine.run(chain("small", 3), 0, id="small")
    purged = on_disk(db)
    assert purged > 5_000_000  # the purge alone gives nothing back in such a file
    engine.compact()
    assert on_disk(db) < purged / 10
    assert engine.get("small").output == BLOB
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental from now on


def test_compact_on_the_memory_store_does_nothing(tmp_path: Path) -> None:
    engine = Engine()
    engine.run(chain("m", 2), 0, id="m")
    engine.compact()
    assert engine.get("m").output == BLOB


WAL_BOUND = 1_050 * (4096 + 24)  # 1,000 pages between checkpoints, and one commit's frames


def test_the_wal_stays_bounded_over_many_commits(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    wal = tmp_path / "w.db-wal"
    sizes: list[int] = []

    @step(name="watch")
    def watch(ctx: Context, n: int) -> int:
        sizes.append(wal.stat().st_size if wal.exists() else 0)
        return n + 1

    wf = Workflow("wal")
    for _ in range(8_000):
        wf = wf.then(watch)
    assert Engine(store=SQLiteStore(db)).run(wf, 0).output == 8_000
    assert db.stat().st_size > 8_000 * 50  # the commits did reach the database file
    assert max(sizes) <= WAL_BOUND
