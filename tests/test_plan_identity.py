"""The identity of a plan: the same source gives the same plan hash however its module was loaded
(a script run as ``__main__``, then a worker that imports it by name), and a ``VersionMismatch``
says where the stored plan and the registered one differ."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tideflow import (
    Context,
    Engine,
    Status,
    VersionMismatch,
    Workflow,
    step,
)

APP = textwrap.dedent(
    """
    import json
    import sys
    from dataclasses import dataclass

    from tideflow import Context, Engine, Workflow, step


    @dataclass
    class Receipt:
        total: int
        big: bool


    @step
    def price(ctx: Context, n: int) -> int:
        return n * 10


    @step
    def surcharge(ctx: Context, total: int) -> int:
        return total + 5


    @step
    def receipt(ctx: Context, total: int) -> Receipt:
        return Receipt(total, total > 100)


    CHECKOUT = (
        Workflow("checkout")
        .then(price)
        .branch(lambda total: total > 100, then=surcharge)
        .wait_signal("go")  # the signal's payload is the total from here on
        .then(receipt)
    )
    CHECKOUT_DONE = Workflow("checkout-now").then(price).branch(lambda t: t > 100, then=surcharge).then(receipt)


    def start(db: str) -> None:
        engine = Engine(store=f"sqlite:///{db}")
        waiting = engine.run(CHECKOUT, 20, id="waiting")
        done = engine.run(CHECKOUT_DONE, 20, id="done")
        print(json.dumps({"hash": CHECKOUT.plan_hash, "done_hash": CHECKOUT_DONE.plan_hash,
                          "waiting": waiting.status.value, "done": done.status.value}))


    if __name__ == "__main__":
        start(sys.argv[1])
    """
)

WORKER = textwrap.dedent(
    """
    import json
    import sys

    import app  # the same source, imported by name this time
    from tideflow import Engine

    engine = Engine(store=f"sqlite:///{sys.argv[1]}")
    engine.register(app.CHECKOUT, app.CHECKOUT_DONE)
    engine.signal("waiting", "go", 300)
    resumed = engine.run_due()
    done = engine.get("done")
    print(json.dumps({
        "hash": app.CHECKOUT.plan_hash,
        "done_hash": app.CHECKOUT_DONE.plan_hash,
        "resumed": [(r.id, r.status.value, type(r.output).__name__, r.output.total) for r in resumed],
        "done": [done.status.value, type(done.output).__name__, done.output.total],
        "done_result": type(done.result()).__name__,
    }))
    """
)


def _python(cwd: Path, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_script_started_as_main_resumes_in_a_process_that_imports_it(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "worker.py").write_text(WORKER)
    db = str(tmp_path / "app.db")
    started = _python(tmp_path, "app.py", db)  # module __main__
    assert started["waiting"] == "suspended" and started["done"] == "completed"
    worker = _python(tmp_path, "worker.py", db)  # module app
    assert worker["hash"] == started["hash"]
    assert worker["done_hash"] == started["done_hash"]
    assert worker["resumed"] == [["waiting", "completed", "Receipt", 300]]
    assert worker["done"] == ["completed", "Receipt", 205]
    assert worker["done_result"] == "Receipt"


def test_the_hash_does_not_depend_on_the_module_of_a_condition() -> None:
    def check(x: object) -> bool:
        return True

    imported = Workflow("w").then(a).branch(check, then=b).plan_hash
    check.__module__ = "__main__"  # as if this file had been run as a script
    assert Workflow("w").then(a).branch(check, then=b).plan_hash == imported


@step
def a(ctx: Context, x: int) -> int:
    return x + 1


@step
def b(ctx: Context, x: int) -> int:
    return x * 2


@step
def c(ctx: Context, x: int) -> int:
    return x - 1


def is_big(x: int) -> bool:
    return x > 100


def is_large(x: int) -> bool:
    return x > 100


def _restarted_on(tmp_path: Path, wf: Workflow, id: str) -> Engine:
    """An engine of a new process, after ``wf`` was started as ``id`` (suspended on a signal)."""
    db = f"sqlite:///{tmp_path / 'v.db'}"
    assert Engine(store=db).run(wf, 1, id=id).status is Status.SUSPENDED
    return Engine(store=db)


def test_a_version_mismatch_names_the_position_and_both_condition_names(tmp_path: Path) -> None:
    old = Workflow("checkout").then(a).then(b).branch(is_big, then=c).wait_signal("go")
    new = Workflow("checkout").then(a).then(b).branch(is_large, then=c).wait_signal("go")
    engine = _restarted_on(tmp_path, old, "x")
    with pytest.raises(VersionMismatch) as err:
        engine.run(new, 1, id="x")
    message = str(err.value)
    assert old.plan_hash in message and new.plan_hash in message
    assert '"x"' in message and '"checkout"' in message
    assert (
        'position 2: branch condition "is_big" (stored) vs branch condition "is_large"' in message
    )


def test_a_version_mismatch_names_a_renamed_step(tmp_path: Path) -> None:
    renamed = step(name="double")(b.fn)
    old = Workflow("w").then(a).parallel(a, b).wait_signal("go")
    new = Workflow("w").then(a).parallel(a, renamed).wait_signal("go")
    engine = _restarted_on(tmp_path, old, "x")
    with pytest.raises(VersionMismatch) as err:
        engine.run(new, 1, id="x")
    assert 'position 1.p1: step "b" (stored) vs step "double" (registered)' in str(err.value)


def test_a_version_mismatch_names_an_added_step(tmp_path: Path) -> None:
    old = Workflow("w").then(a).wait_signal("go")
    new = Workflow("w").then(a).wait_signal("go").then(b)
    engine = _restarted_on(tmp_path, old, "x")
    with pytest.raises(VersionMismatch) as err:
        engine.run(new, 1, id="x")
    assert 'position 2: nothing (stored) vs step "b" (registered)' in str(err.value)


def test_a_finished_instance_of_an_unregistered_plan_is_not_silently_untyped(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'f.db'}"
    engine = Engine(store=db)
    old = Workflow("w").then(a).branch(is_big, then=c)
    new = Workflow("w").then(a).branch(is_large, then=c)
    assert engine.run(old, 1, id="x").output == 2
    later = Engine(store=db)
    later.register(new)
    got = later.get("x")  # an operator can still look at it
    assert got.status is Status.COMPLETED and got.output == 2
    assert got.plan_hash == old.plan_hash and not got.typed
    assert [(r.id, r.output, r.typed) for r in later.list()] == [("x", 2, False)]
    with pytest.raises(VersionMismatch, match='branch condition "is_big"'):
        got.result()
    with pytest.raises(VersionMismatch, match='branch condition "is_big"'):
        later.run(new, 1, id="x")
    assert later.get("x").status is Status.COMPLETED


class Charge:
    """A step written as a callable object (no ``__name__``)."""

    def __call__(self, ctx: Context, x: int) -> int:
        return x


def add(ctx: Context, x: int, y: int = 1) -> int:
    return x + y


def test_default_step_names_hold_no_module_or_address() -> None:
    # a callable object or a partial has no __name__: its name was its repr, with an address
    assert step(Charge()).name == "Charge"
    assert step(functools.partial(add, y=2)).name == "add"
    hashes = {Workflow("w").then(step(Charge())).plan_hash for _ in range(3)}
    assert len(hashes) == 1


def test_conditions_that_are_objects_or_partials_are_named_without_an_address() -> None:
    wf = Workflow("w").branch(functools.partial(is_big), then=a).branch(Charge(), then=b)
    assert json.loads(wf.to_json())["fns"] == ["is_big", "Charge"]
