"""The SQLite store: durability modes, bad files, corrupted records, several processes on one file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from tideflow import (
    CodecError,
    Context,
    CorruptCheckpoint,
    Engine,
    Status,
    StoreError,
    Workflow,
    step,
)
from tideflow.stores import SQLiteStore


class Interrupt(BaseException):
    """Stands for a process dying mid-step."""


stop_at: set[str] = set()


@step
def inc(ctx: Context, x: int) -> int:
    if ctx.idempotency_key in stop_at:
        stop_at.discard(ctx.idempotency_key)
        raise Interrupt
    return x + 1


CHAIN = Workflow("chain").then(inc).then(inc).then(inc)


def url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_both_durability_modes_persist(tmp_path: Path, durability: str) -> None:
    db = tmp_path / "d.db"
    Engine(store=SQLiteStore(db, durability=durability)).run(CHAIN, 1, id="x")
    assert Engine(store=f"{url(db)}?durability={durability}").get("x").output == 4


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("sqlite://relative.db", "looks like"),
        ("sqlite:///x.db?durability=sometimes", "durability"),
        ("sqlite:///x.db?cache=shared", "unknown SQLite URL option"),
        ("mysql://nope", "unknown store"),  # postgres://, redis:// and mongodb:// are stores
    ],
)
def test_bad_store_urls_are_rejected(given: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        Engine(store=given)


def test_relative_urls_are_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Engine(store="sqlite:///sub.db").run(CHAIN, 1, id="r")
    assert (tmp_path / "sub.db").exists()


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(StoreError, match=r"notes\.txt"):
        Engine(store=url(bad))
    assert bad.read_text().startswith("these are my notes")  # nothing was overwritten


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        c.execute("INSERT INTO users (name) VALUES ('ada')")
    with pytest.raises(StoreError, match="another application"):
        Engine(store=url(db))
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT name FROM users").fetchall() == [("ada",)]


def test_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="gone"):
        Engine(store=url(tmp_path / "gone" / "x.db"))


def test_a_corrupted_record_names_its_instance_and_spares_the_others(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    engine = Engine(store=url(db))
    for iid in ("good", "bad"):
        stop_at.add(f"{iid}/2")
        with pytest.raises(Interrupt):
            engine.run(CHAIN, 1, id=iid)
    with sqlite3.connect(db) as c:
        n = c.execute(
            "UPDATE records SET data = substr(data, 1, length(data) - 3) WHERE instance_id = 'bad' "
            "AND version = (SELECT max(version) FROM records WHERE instance_id = 'bad')"
        ).rowcount
        assert n == 1
    fresh = Engine(store=url(db))
    fresh.register(CHAIN)
    with pytest.raises(CorruptCheckpoint, match='"bad"'):
        fresh.run(CHAIN, 1, id="bad")
    with pytest.raises(CorruptCheckpoint, match='"bad"'):
        fresh.history("bad")
    assert fresh.run(CHAIN, 1, id="good").output == 4
    with pytest.raises(CorruptCheckpoint):
        fresh.recover()  # the corrupted one is reported; it is not silently dropped


def test_a_corrupted_header_is_reported_on_get(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    Engine(store=url(db)).run(CHAIN, 1, id="h")
    with sqlite3.connect(db) as c:
        c.execute("UPDATE instances SET header = x'5446' WHERE id = 'h'")
    with pytest.raises(CorruptCheckpoint, match='"h"'):
        Engine(store=url(db)).get("h")


def test_a_payload_that_no_longer_decodes_names_the_step_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "t.db"

    @step(name="stamp")
    def as_int(ctx: Context, x: int) -> int:
        return x

    @step(name="stamp")
    def as_datetime(ctx: Context, x: int) -> datetime:
        return datetime.now()

    @step
    def finish(ctx: Context, x: object) -> str:
        if ctx.idempotency_key in stop_at:
            stop_at.discard(ctx.idempotency_key)
            raise Interrupt
        return "done"

    old = Workflow("typed").then(as_int).then(finish)
    new = Workflow("typed").then(as_datetime).then(finish)
    assert old.plan_hash == new.plan_hash  # same structure: only the type changed
    stop_at.add("t/1")
    with pytest.raises(Interrupt):
        Engine(store=url(db)).run(old, 5, id="t")
    with pytest.raises(CodecError, match="stamp"):
        Engine(store=url(db)).run(new, 5, id="t")
    again = Engine(store=url(db))
    assert again.get("t").status is Status.RUNNING
    assert again.run(old, 5, id="t").output == "done"  # with the old code it still resumes


WORKER = textwrap.dedent(
    """
    import sys
    from tideflow import Context, Engine, Workflow, step

    @step
    def inc(ctx: Context, x: int) -> int:
        return x + 1

    wf = Workflow("shared").then(inc).then(inc).parallel(inc, inc)
    engine = Engine(store="sqlite:///" + sys.argv[1])
    for i in range(int(sys.argv[3])):
        run = engine.run(wf, i, id=f"{sys.argv[2]}-{i}")
        assert run.output == (i + 3, i + 3), run
    print("ok")
    """
)


def test_two_processes_share_one_file(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    Engine(store=url(db))  # create the schema first
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(db), name, "150"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for p in procs:
        out, err = p.communicate(timeout=100)
        assert p.returncode == 0, err
        assert out.strip() == "ok"
        assert "locked" not in err
    engine = Engine(store=url(db))
    assert len(engine.list(status=Status.COMPLETED)) == 300
