"""Every ```python block of the API pages (docs/api*.md) and README.md runs as it stands (a
block that needs a server at an address of its own is fenced ```py instead, and says so)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def blocks(doc: str) -> list[tuple[str, str]]:
    text = (ROOT / doc).read_text()
    return [(f"{doc}#{i}", code) for i, code in enumerate(BLOCK.findall(text))]


#: the API index and its pages, then the README
DOCS = [
    "docs/api.md",
    *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("api-*.md")),
    "README.md",
]
SNIPPETS = [s for doc in DOCS for s in blocks(doc)]


@pytest.mark.parametrize(("where", "code"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_snippet_runs(where: str, code: str, capsys: pytest.CaptureFixture[str]) -> None:
    # a real module, so that dataclasses and string annotations resolve as in a user's file
    name = "doc_snippet_" + re.sub(r"\W", "_", where)
    module = types.ModuleType(name)
    sys.modules[name] = module
    try:
        exec(compile(code, where, "exec"), module.__dict__)
    finally:
        del sys.modules[name]


def test_there_are_snippets() -> None:
    assert len(SNIPPETS) >= 8


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    heads = re.findall(r"^#+ (.+)$", BLOCK.sub("", path.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc: str) -> None:
    here = (ROOT / doc).parent
    for target in LINK.findall((ROOT / doc).read_text()):
        if "://" in target:
            continue
        file, _, anchor = target.partition("#")
        path = (here / file).resolve() if file else ROOT / doc
        assert path.exists(), f"{doc} links to {target}: no such file"
        if anchor:
            assert anchor in anchors(path), f"{doc} links to {target}: no such heading"


def test_the_api_index_links_every_page() -> None:
    index = (ROOT / "docs/api.md").read_text()
    pages = [d.removeprefix("docs/") for d in DOCS if d.startswith("docs/api-")]
    assert len(pages) >= 5
    assert [p for p in pages if f"]({p})" not in index] == []
