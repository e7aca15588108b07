"""Every relative link in the project's Markdown leads somewhere: the file exists and, where the
link names a heading (`file.md#anchor`), the file has that heading.

A moved script or a renamed section otherwise leaves the README pointing at nothing, and no
other test would notice."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!`)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def _markdown_files() -> list[Path]:
    """The Markdown files git tracks (a fresh clone holds exactly these)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file on disk
        return sorted(p for p in ROOT.rglob("*.md") if ".git" not in p.parts)
    return [ROOT / line for line in out.splitlines() if line]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def prose_lines(path: Path) -> list[str]:
    """The lines of a Markdown file outside fenced code blocks (the fences themselves dropped)."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors of a Markdown file's headings (outside code blocks), numbered as GitHub
    numbers repeats (`name`, `name-1`, ...)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in prose_lines(path):
        if line.startswith("#"):
            base = slug(line.lstrip("#"))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def links(path: Path) -> list[str]:
    """The link targets of a Markdown file, outside fenced code blocks."""
    return [target for line in prose_lines(path) for target in LINK.findall(line)]


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """The links of ``path`` that lead nowhere inside ``root``, each with the reason. Links out
    of the checkout (the read-only `../shared/` beside it) are not checked: a clone elsewhere has
    no such sibling."""
    bad = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.is_relative_to(root.resolve()):
            continue
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    return bad


def test_slug_matches_github_for_the_headings_we_link():
    assert slug("Calibration of the lab scale") == "calibration-of-the-lab-scale"
    assert slug("The law at lab scale (results 1 and 4, rebuilt recipe)") == (
        "the-law-at-lab-scale-results-1-and-4-rebuilt-recipe"
    )
    assert slug("Set-up: two commands") == "set-up-two-commands"


def test_the_checker_finds_a_broken_link(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    doc = root / "doc.md"
    (root / "there.md").write_text("# A heading\n")
    doc.write_text(
        "[ok](there.md#a-heading) [gone](missing.py) [bad anchor](there.md#nope)\n"
        "```\n[in code](nowhere.md)\n```\n[web](https://example.org)\n"
        "[beside the checkout](../shared/SPEC.md)\n"
    )
    assert broken_links(doc, root) == [
        "missing.py: no such file",
        "there.md#nope: no heading #nope in there.md",
    ]


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_somewhere(path):
    assert broken_links(path) == []
