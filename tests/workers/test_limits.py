"""Limits the store enforces across workers: a workflow's concurrency cap, and leadership (a
named lease at most one process holds), on every backend."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.servers import BACKENDS
from tests.workers.app import WORKFLOWS
from tests.workers.app_limits import LIMITED
from tests.workers.harness import Workers, records, store_url
from tideflow import Engine, Status
from tideflow.errors import DefinitionError
from tideflow.leases import Leadership


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_a_workflow_concurrency_limit_holds_under_three_workers(
    server: str | None, tmp_path: Path
) -> None:
    url = store_url(server, tmp_path)
    log = tmp_path / "steps.jsonl"
    with Engine(store=url) as engine, Workers(url, log) as workers:
        engine.register(*WORKFLOWS, LIMITED)
        runs = [engine.start(LIMITED, 0.3, id=f"lim-{i}") for i in range(8)]
        for _ in range(3):
            workers.start(concurrency=4, extra=["tests.workers.app_limits:WORKFLOWS"])
        assert all(r.wait(timeout=90).status is Status.COMPLETED for r in runs)
    notes = records(log)
    assert len(notes) == 8
    # at no moment did more than 2 run: count overlaps at every start
    for n in notes:
        running = [m for m in notes if m["start"] <= n["start"] < m["end"]]
        assert len(running) <= 2, running
    # and the limit was used (not everything ran one at a time): some pair overlapped
    assert any(m is not n and m["start"] <= n["start"] < m["end"] for n in notes for m in notes), (
        "the two slots never ran at once"
    )


def test_a_concurrency_limit_is_a_positive_int() -> None:
    from tideflow import Workflow

    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(DefinitionError, match="concurrency"):
            Workflow("x", concurrency=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_leadership_is_held_by_one_at_a_time(server: str | None, tmp_path: Path) -> None:
    url = store_url(server, tmp_path)
    with Engine(store=url) as a, Engine(store=url) as b:
        la = Leadership(a, "purge", owner="a", lease=1.0)
        lb = Leadership(b, "purge", owner="b", lease=1.0)
        assert la.acquire() is True
        assert lb.acquire() is False
        assert la.renew() is True
        la.release()
        assert la.held is False
        assert lb.acquire() is True
        assert la.acquire() is False
        # b stops renewing: once its lease expires, a takes over and b's renew says so
        threading.Event().wait(1.3)
        assert la.acquire() is True
        assert lb.renew() is False
        # leases are the engine's own: never listed, counted or resumed
        assert a.list() == []
        assert a.counts() == {}
        assert a.run_due() == []


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_leadership_race_has_one_winner(server: str | None, tmp_path: Path) -> None:
    url = store_url(server, tmp_path)
    engines = [Engine(store=url) for _ in range(6)]
    try:
        leaders = [Leadership(e, "cron", owner=f"p{i}", lease=30) for i, e in enumerate(engines)]
        leaders[0].acquire()
        leaders[0].release()  # the row exists; now all race
        barrier = threading.Barrier(len(leaders))
        won: list[str] = []

        def race(lead: Leadership) -> None:
            barrier.wait()
            if lead.acquire():
                won.append(lead.owner)

        threads = [threading.Thread(target=race, args=(lead,)) for lead in leaders]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(won) == 1, won
    finally:
        for e in engines:
            e.close()
