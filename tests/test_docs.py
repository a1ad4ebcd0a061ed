"""README is a front page and the docs/ pages hang together: README stays short, every relative link in README.md
and docs/*.md resolves (file and, for a Markdown page, #anchor), and every `python -m X` README names exists.
Text only: nothing heavier than importlib.util.find_spec on the project's own (light) packages."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MAX_README_LINES = 250

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    seen: dict[str, int] = {}
    for line in prose_lines(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        seen.setdefault(f"{slug}-{n}" if n else slug, 1)
    return set(seen)


def relative_links(path: Path) -> list[str]:
    links = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        links += LINK.findall(INLINE_CODE.sub("", line))
    return [t for t in links if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]  # http:, https:, mailto: ...


def test_readme_is_a_front_page():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES}): move detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / unquote(file_part)).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and dest.is_file() and anchor not in anchors(dest):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {broken}"


def test_readme_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    missing = [p.name for p in PAGES[1:] if f"(docs/{p.name}" not in text]
    assert not missing, f"README.md does not link {missing}"


def _module_exists(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return False
    if spec.submodule_search_locations is not None:  # a package runs as `python -m` only with a __main__
        return importlib.util.find_spec(f"{name}.__main__") is not None
    return True


def test_every_python_m_module_in_readme_exists():
    modules = sorted(set(re.findall(r"\bpython3?\s+-m\s+([A-Za-z_][\w.]*)", README.read_text(encoding="utf-8"))))
    assert "pytest" in modules and "engine.run" in modules
    missing = [m for m in modules if not _module_exists(m)]
    assert not missing, f"README.md names `python -m` modules that do not exist: {missing}"


def test_export_page_carries_readme_format_table():
    """The format table is in README (tests/test_formats.py checks it against engine/core/formats.py) and on the
    export page: the two copies stay the same."""
    readme = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(readme) if line.startswith("| `--formats` |"))
    table = []
    for line in readme[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    assert "\n".join(table) in (REPO / "docs" / "export.md").read_text(encoding="utf-8")
