"""Workflows for the tests of concurrency limits and leadership."""

from __future__ import annotations

import time

from tests.workers.app import note
from tideflow import Context, Workflow, step


@step
def hold(ctx: Context, seconds: float) -> float:
    """Holds a slot for ``seconds``, noting when it started and ended."""
    t0 = time.time()
    time.sleep(seconds)
    note(ctx, start=t0, end=time.time())
    return seconds


LIMITED = Workflow("limited", concurrency=2).then(hold)
WORKFLOWS = [LIMITED]
