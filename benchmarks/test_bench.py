"""pytest-benchmark cases (not part of `make test`): a 1,000-step chain in memory and on SQLite,
and a 1,000-way fan-out.

    .venv/bin/python -m pytest benchmarks/test_bench.py --benchmark-only
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tideflow import Context, Engine, Workflow, step

N = 1_000


def _inc(ctx: Context, x: int) -> int:
    return x + 1


INC = step(name="inc")(_inc)


@step
def total(ctx: Context, xs: Any) -> int:
    return sum(xs)


CHAIN = Workflow("chain")
for _ in range(N):
    CHAIN = CHAIN.then(INC)
FAN = Workflow("fan").parallel(*[INC] * N).then(total)


def test_chain_in_memory(benchmark: Any) -> None:
    CHAIN.compile()
    result = benchmark(lambda: Engine().run(CHAIN, 0).output)
    assert result == N


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_chain_on_sqlite(benchmark: Any, tmp_path: Path, durability: str) -> None:
    counter = iter(range(10**6))

    def run() -> Any:
        db = tmp_path / f"b{next(counter)}.db"
        return Engine(store=f"sqlite:///{db}?durability={durability}").run(CHAIN, 0).output

    assert benchmark.pedantic(run, rounds=5, iterations=1) == N


def test_fan_out_in_memory(benchmark: Any) -> None:
    FAN.compile()
    assert benchmark(lambda: Engine().run(FAN, 0).output) == N
