"""Several processes on one durable store (a SQLite file, or a namespace on each server): one
drives instances with ``engine.run``, another with ``run_async``, a third sends their signals.
Every instance completes as in one process: each step recorded once, each signal taken once, no
signal lost; and two processes driving the same instances at once never record a step twice
(the loser of a commit race is rejected and goes on from what the winner stored)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.servers import BACKENDS
from tideflow import Engine, Status

ROOT = Path(__file__).resolve().parents[1]
K = 12  # instances per driving process

PROGRAM = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from tideflow import Context, Engine, Workflow, step

    @step
    def inc(ctx: Context, x: int) -> int:
        return x + 1

    @step
    def tag(ctx: Context, x: int) -> list:
        return [ctx.instance_id, x]

    wf = Workflow("mp").then(inc).wait_signal("go").then(tag)
    url, role, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Engine(store=url) as engine:
        engine.register(wf)
        if role == "sync":
            for i in range(k):
                engine.run(wf, i, id=f"sync-{i}")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                engine.run_due()
                if all(engine.get(f"sync-{i}").status.finished for i in range(k)):
                    break
                time.sleep(0.05)
        elif role == "async":
            async def main():
                return await asyncio.gather(
                    *(engine.run_async(wf, i, id=f"async-{i}") for i in range(k))
                )
            asyncio.run(main())
        elif role == "signal":
            ids = [f"{p}-{i}" for p in ("sync", "async") for i in range(k)]
            sent = set()
            deadline = time.monotonic() + 60
            while len(sent) < len(ids) and time.monotonic() < deadline:
                for iid in ids:
                    if iid in sent:
                        continue
                    try:
                        waits = engine.get(iid).waiting_for()
                    except Exception:
                        continue
                    if any(w.signal == "go" for w in waits):
                        engine.signal(iid, "go", int(iid.rsplit("-", 1)[1]) * 10)
                        sent.add(iid)
                time.sleep(0.02)
            print(json.dumps(sorted(sent)))
        elif role == "race":
            for i in range(k):
                engine.run(wf, i, id=f"race-{i}")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                engine.run_due()
                if all(engine.get(f"race-{i}").status.finished for i in range(k)):
                    break
                time.sleep(0.01)
    """
)


def _spawn(url: str, role: str, k: int = K) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PROGRAM, url, role, str(k)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _url(server: str | None, tmp_path: Path) -> str:
    return server or f"sqlite:///{tmp_path / 'shared.db'}"


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_a_sync_and_an_async_process_with_signals_from_a_third(
    tmp_path: Path, server: str | None
) -> None:
    url = _url(server, tmp_path)
    procs = [_spawn(url, "sync"), _spawn(url, "async"), _spawn(url, "signal")]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out)
    ids = [f"{p}-{i}" for p in ("sync", "async") for i in range(K)]
    assert json.loads(outs[2]) == sorted(ids)  # each signalled once
    with Engine(store=url) as engine:
        for iid in ids:
            run = engine.get(iid)
            n = int(iid.rsplit("-", 1)[1])
            assert run.status is Status.COMPLETED, (iid, run.status, run.error)
            assert run.output == [iid, n * 10], iid  # the one signal's payload, taken once
            steps = [(e.position, e.attempt, e.status) for e in run.steps()]
            assert steps == [("0", 1, "completed"), ("2", 1, "completed")], (iid, steps)
            face = engine.store.blocking() if hasattr(engine.store, "blocking") else engine.store
            assert len(face.signals(iid, 0)) == 1, iid  # no signal lost or doubled


@pytest.mark.parametrize("server", BACKENDS, indirect=True)
def test_two_processes_driving_the_same_instances_record_each_step_once(
    tmp_path: Path, server: str | None
) -> None:
    url = _url(server, tmp_path)
    racers = [_spawn(url, "race"), _spawn(url, "race")]
    signaller = subprocess.Popen(
        [
            sys.executable,
            "-c",
            PROGRAM.replace('("sync", "async")', '("race",)'),
            url,
            "signal",
            str(K),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for p in [*racers, signaller]:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with Engine(store=url) as engine:
        for i in range(K):
            run = engine.get(f"race-{i}")
            assert run.status is Status.COMPLETED, (i, run.status, run.error)
            assert run.output == [f"race-{i}", i * 10]
            done = [e.position for e in run.steps() if e.status == "completed"]
            assert done == ["0", "2"], (i, run.steps())
