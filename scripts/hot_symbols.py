#!/usr/bin/env python3
"""Regenerate rust/bindings/hot-symbols.txt: the extension's functions that `import tideflow` and
a first minimal run execute, which the release link places first in `.text` (see
rust/bindings/build.rs and "Memory footprint" in docs/benchmarks.md).

    TIDEFLOW_LINK_MAP=/tmp/core.map maturin build --release -o /tmp/wheel
    pip install --no-deps --target /tmp/site /tmp/wheel/*.whl
    python scripts/hot_symbols.py /tmp/core.map /tmp/site

Runs benchmarks/run.py's RSS_PROBE under gdb with a one-shot breakpoint on the first instruction
of every function of `.text` (their addresses from the link map), natively, so that the
CPU-dispatched variants this machine picks (SHA-NI for sha2, AVX2 for memchr and crc32fast) are
seen, and writes the functions hit in the order they were first entered. The list depends on
the mangled names (their hashes change with the code and the profile), so regenerate it after
changes that move the import or first-run path; names that are gone only cost memory, never
correctness. Needs gdb.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "rust" / "bindings" / "hot-symbols.txt"


def probe_source() -> str:
    text = (ROOT / "benchmarks" / "run.py").read_text()
    return text.split('RSS_PROBE = """', 1)[1].split('"""', 1)[0]


def text_sections(map_path: Path) -> list[tuple[int, int, str]]:
    """Input sections of the output .text as (start, end, symbol), sorted by start.

    With -ffunction-sections (rustc's default, and cc's) each function has its own section,
    named after its symbol: .text.<symbol>, .text.unlikely.<symbol> and the like."""
    sections: list[tuple[int, int, str]] = []
    lines = map_path.read_text().splitlines()
    out_col = lines[0].index("Out")  # lld's map: output sections here, input sections 8 further
    in_text = False
    for line in lines[1:]:
        if line[out_col : out_col + 1] not in ("", " "):
            in_text = line[out_col:].strip() == ".text"
        elif in_text and line[out_col + 8 : out_col + 9] not in ("", " "):
            m = re.search(r":\(\.text\.(?:(?:unlikely|hot|startup|exit|split)\.)?(.+)\)$", line)
            if m:
                vma, _, size = line.split()[:3]
                start = int(vma, 16)
                sections.append((start, start + int(size, 16), m.group(1)))
    sections.sort()
    return sections


def trace_in_gdb() -> None:
    """Run inside gdb (see main): break on every function of _core once, record the hits."""
    import gdb  # type: ignore[import-not-found]

    sections = text_sections(Path(os.environ["HOT_MAP"]))
    for cmd in ("set pagination off", "set confirm off", "catch load _core"):
        gdb.execute(cmd)
    gdb.execute("run", to_string=True)
    pid = gdb.selected_inferior().pid
    base = next(
        int(line.split("-")[0], 16)
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
        if "_core" in line and line.split()[2] == "00000000"
    )
    gdb.execute("delete")
    names = {}
    for start, _, name in sections:
        names[base + start] = name
        gdb.execute(f"tbreak *{base + start:#x}", to_string=True)
    hits: list[str] = []
    while True:
        try:
            gdb.execute("continue", to_string=True)
        except gdb.error:
            break
        if not gdb.selected_inferior().pid:
            break
        name = names.get(int(gdb.parse_and_eval("$pc")))
        if name is not None:
            hits.append(name)
    Path(os.environ["HOT_OUT"]).write_text("".join(n + "\n" for n in hits))


def main() -> int:
    map_path, site = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    sections = {name: end - start for start, end, name in text_sections(map_path)}
    with tempfile.TemporaryDirectory() as tmp:
        probe, out = Path(tmp) / "probe.py", Path(tmp) / "hot.txt"
        probe.write_text(probe_source())
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPATH=str(site), HOT_MAP=str(map_path), HOT_OUT=str(out))
        subprocess.run(
            ["gdb", "-batch", "-x", __file__, "--args", sys.executable, str(probe), "tideflow"],
            check=True,
            env=env,
            capture_output=True,
        )
        names = list(dict.fromkeys(out.read_text().split()))
    if not names:
        sys.exit("no function of _core was entered")
    OUT.write_text("".join(n + "\n" for n in names))
    size = sum(sections[n] for n in names)
    print(f"{len(names)} hot functions, {size / 1024:.0f} KiB, written to {OUT}")
    return 0


if __name__ == "__main__":
    try:
        import gdb  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        sys.exit(main())
    trace_in_gdb()
