"""Several processes on one SQLite file at once, from the very first open."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tideflow import Engine, Status

# Each worker opens a brand-new database file in every round, at the same moment as the others:
# a file barrier (one marker file per worker and round) lines the processes up before each open.
FIRST_OPENS = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tideflow import Context, Engine, Workflow, step
    from tideflow.stores import SQLiteStore

    @step
    def inc(ctx: Context, x: int) -> int:
        return x + 1

    wf = Workflow("first-open").then(inc)
    root, me, workers, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    failures = 0
    for r in range(rounds):
        (root / f"ready-{r}-{me}").touch()
        while len(list(root.glob(f"ready-{r}-*"))) < workers:
            time.sleep(0.0005)
        try:
            engine = Engine(store=SQLiteStore(root / f"round-{r}.db"))
            assert engine.run(wf, r, id=f"{me}-{r}").output == r + 1
        except Exception as e:
            failures += 1
            print(f"round {r}: {type(e).__name__}: {e}", file=sys.stderr)
    print(failures)
    """
)


def test_processes_opening_one_new_file_at_once_never_see_a_lock_error(tmp_path: Path) -> None:
    workers, rounds = 6, 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_OPENS, str(tmp_path), str(w), str(workers), str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]
    results = [p.communicate(timeout=100) for p in procs]
    errors = "".join(err for _, err in results)
    assert all(p.returncode == 0 for p in procs), errors
    assert [out.strip() for out, _ in results] == ["0"] * workers, errors
    for r in range(rounds):
        engine = Engine(store=f"sqlite:///{tmp_path / f'round-{r}.db'}")
        assert len(engine.list(status=Status.COMPLETED)) == workers
