"""The SQLite file itself: one deleted or moved away under a running engine, and short files."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tideflow import Context, Engine, StoreError, Workflow, step
from tideflow.stores import SQLiteStore


@step
def inc(ctx: Context, x: int) -> int:
    return x + 1


CHAIN = Workflow("file-chain").then(inc).then(inc)


def url(path: Path) -> str:
    return f"sqlite:///{path}"


MOVED = "was deleted or moved away"


def test_a_database_deleted_between_runs_fails_the_next_run(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    engine = Engine(store=url(db))
    assert engine.run(CHAIN, 1, id="first").output == 3
    db.unlink()
    with pytest.raises(StoreError, match=MOVED) as caught:
        engine.run(CHAIN, 1, id="second")
    assert str(db) in str(caught.value)
    with pytest.raises(StoreError, match=MOVED):
        engine.get("first")
    assert not db.exists()  # nothing was recreated either


def test_a_database_renamed_away_fails_until_it_is_back(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    away = tmp_path / "elsewhere.db"
    engine = Engine(store=url(db))
    assert engine.run(CHAIN, 1, id="first").output == 3
    db.rename(away)
    with pytest.raises(StoreError, match=MOVED):
        engine.run(CHAIN, 1, id="second")
    away.rename(db)
    assert engine.run(CHAIN, 5, id="second").output == 7
    assert [i.id for i in engine.list()] == ["second", "first"]


def test_a_database_replaced_under_its_name_fails_the_next_run(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    engine = Engine(store=url(db))
    assert engine.run(CHAIN, 1, id="first").output == 3
    backup = tmp_path / "backup.db"
    shutil.copyfile(db, backup)
    os.replace(backup, db)  # e.g. restoring a backup while the engine runs
    with pytest.raises(StoreError, match=MOVED):
        engine.run(CHAIN, 1, id="second")


@pytest.mark.parametrize(
    "content",
    [b"x", b"\n", b"\0", b"SQLite format 3", b"\0" * 4096],
    ids=["one-byte", "newline", "nul", "header-prefix", "zeros"],
)
def test_a_short_or_headerless_file_is_refused_and_left_as_it_was(
    tmp_path: Path, content: bytes
) -> None:
    db = tmp_path / "short.db"
    db.write_bytes(content)
    with pytest.raises(StoreError, match=re.escape(str(db))):
        Engine(store=url(db))
    with pytest.raises(StoreError, match="not a tideflow database"):
        Engine(store=SQLiteStore(db, durability="full"))
    assert db.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.db"]  # no -wal or -shm either


def test_an_empty_file_becomes_a_new_database(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    assert Engine(store=url(db)).run(CHAIN, 1, id="e").output == 3
    assert Engine(store=url(db)).get("e").output == 3
