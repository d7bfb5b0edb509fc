"""The demo explains what it prints (issue 7, item 15): the examples run, say how to read a
position such as `2.t` or `3.p0` and why `FAIL reserve attempt 1` is expected, draw the branch
condition by a readable name, and show the decisions and waits between the steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_order_saga_explains_positions_and_the_expected_failure() -> None:
    out = run_example("order_saga.py")
    assert "<lambda>" not in out
    assert "is_large_order" in out.split("flowchart")[1]  # the drawing names the condition
    assert "`2.t` is the `then` side of the branch at node 2" in out
    assert "`3.p0`" in out and "parallel block at node 3" in out
    assert "`FAIL reserve attempt 1` is expected" in out
    assert "FAIL reserve        attempt 1" in out
    assert "-> branch at 2: is_large_order was True: then" in out
    assert "INTERRUPTED charge  attempt 1  position 1" in out  # the simulated crash


def test_the_approval_shows_what_an_instance_waits_for_and_how_the_wait_ended() -> None:
    out = run_example("approval.py")
    assert "waiting for signal 'decision' (escalates in 3 days)" in out
    assert "signal 'decision' (number 1 sent to the instance) was consumed" in out
    assert "nobody answered in time: the wait timed out" in out


def test_the_readme_does_not_send_users_to_an_unpublished_package() -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    assert "pip install tideflow`" not in readme.replace("`pip install tideflow` does not", "")
    assert "pip install ." in readme and "maturin build --release" in readme
    assert "pip install target/wheels/" in readme
    assert "fetches its tools from PyPI once" in readme
