"""The first worker guarantee, on every backend: started instances complete as ``engine.run``
would have run them (same output, same history), each step recorded once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers import BACKENDS
from tests.workers.app import CHAIN, FAN, WORKFLOWS
from tests.workers.harness import Workers, records, store_url
from tideflow import Engine, Status


def _shape(engine: Engine, id: str) -> list[tuple[str, str, int, str, object]]:
    """An instance's history without times or ids: (kind, step, attempt, position, output)."""
    out = []
    for e in engine.history(id):
        out.append(
            (
                type(e).__name__,
                getattr(e, "step", ""),
                getattr(e, "attempt", 0),
                getattr(e, "position", ""),
                getattr(e, "status", None),
            )
        )
    return out


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_started_instances_complete_as_run_would(server: str | None, tmp_path: Path) -> None:
    url = store_url(server, tmp_path)
    log = tmp_path / "steps.jsonl"
    with Engine(store=url) as engine, Workers(url, log) as workers:
        engine.register(*WORKFLOWS)
        chains = [engine.start(CHAIN, i, id=f"chain-{i}") for i in range(10)]
        fans = [engine.start(FAN, {"n": 6, "nap": 0.0}, id=f"fan-{i}") for i in range(3)]
        assert all(r.status is Status.PENDING for r in chains + fans)
        workers.start()
        workers.start()
        done = [r.wait(timeout=60) for r in chains + fans]
        ref = Engine()
        for r in done:
            assert r.status is Status.COMPLETED, r
            wf = CHAIN if r.workflow == "chain" else FAN
            inp = engine.get(r.id).input
            expected = ref.run(wf, inp, id=r.id)
            assert r.output == expected.output
            # the same events; a fan-out's branches may end in another order than in one process
            assert sorted(_shape(engine, r.id), key=repr) == sorted(_shape(ref, r.id), key=repr)
    notes = records(log)
    keys = [(n["id"], n["key"]) for n in notes]
    assert len(keys) == len(set(keys)), "a step ran twice"
    assert len(notes) == 10 * 5 + 3 * (1 + 6 + 1)
