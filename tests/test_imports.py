"""What importing tideflow loads: the heavy modules stay out until a feature needs them.

Each check runs in a fresh interpreter (``-S``: no site hooks that might import them first) on
the same tideflow package as these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import tideflow

PACKAGE_ROOT = str(Path(tideflow.__file__).resolve().parent.parent)

#: never imported by `import tideflow` (nor by a minimal in-memory run, except as noted below)
HEAVY = ["asyncio", "dataclasses", "inspect", "json", "threading", "typing", "re", "contextlib"]
#: nor these, which the codec, the stores or the observers load on first use (or never need)
STDLIB = [
    "ast",
    "base64",
    "datetime",
    "decimal",
    "hashlib",
    "importlib.util",
    "logging",
    "pathlib",
    "pickle",
    "socket",
    "sqlite3",
    "struct",
    "textwrap",
    "tokenize",
    "traceback",
    "uuid",
    "warnings",
]


def loaded_by(code: str) -> set[str]:
    """The modules that ``code`` adds to ``sys.modules`` in a fresh interpreter."""
    script = (
        "import sys\n"
        "before = set(sys.modules)\n"
        f"{code}\n"
        "print(*sorted(set(sys.modules) - before), sep='\\n')\n"
    )
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    out = subprocess.run(
        [sys.executable, "-S", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return set(out.stdout.split())


def test_import_loads_no_heavy_module() -> None:
    new = loaded_by("import tideflow")
    assert "tideflow._core" in new  # the check ran on the real package
    assert sorted(new & {*HEAVY, *STDLIB}) == []
    # the definition compiler, the typed codec and the stores load on first use
    lazy = {"tideflow._compile", "tideflow.codec", "tideflow._codec_compile", "tideflow.stores"}
    assert sorted(new & lazy) == []


def test_a_minimal_run_loads_no_heavy_module_nor_the_hint_compiler() -> None:
    new = loaded_by(
        "import tideflow\n"
        "@tideflow.step\n"
        "def one(ctx, x):\n"
        "    return x + 1\n"
        "@tideflow.step\n"
        "def two(ctx, x: int) -> int:\n"  # JSON scalars need no hint compiler either
        "    return x + 1\n"
        "run = tideflow.Engine().run(tideflow.Workflow('w').then(one).then(two), 1)\n"
        "assert run.output == 3, run\n"
    )
    assert "tideflow._compile" in new
    assert sorted(new & {*HEAVY, *STDLIB, "tideflow._codec_compile", "math"}) == []


def test_typed_steps_load_the_hint_compiler() -> None:
    new = loaded_by(
        "import tideflow\n"
        "@tideflow.step\n"
        "def one(ctx, x: list[int]) -> list[int]:\n"
        "    return x\n"
        "assert tideflow.Engine().run(tideflow.Workflow('w').then(one), [1]).output == [1]\n"
    )
    assert {"tideflow._codec_compile", "typing"} <= new


def test_the_codec_module_alone_loads_no_heavy_module(tmp_path: Path) -> None:
    # codec.py alone (with errors.py) in a bare package: what the module itself imports
    import tideflow.codec
    import tideflow.errors

    pkg = tmp_path / "tideflow"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    shutil.copy(tideflow.codec.__file__, pkg / "codec.py")
    shutil.copy(tideflow.errors.__file__, pkg / "errors.py")
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import tideflow.codec\n"
        "heavy = {'decimal', 'uuid', 'datetime', 'base64', 'binascii', 'json', 'pydantic'}\n"
        "print(sorted((set(sys.modules) - before) & heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,
    )
    assert out.stdout.strip() == "[]"
