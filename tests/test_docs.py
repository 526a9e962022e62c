"""README.md and docs/ hold together: the README fits on a page, every relative link and image
resolves (anchors too, by GitHub's heading slugs), and every docs page is linked from an index."""

import re
from pathlib import Path

import pytest
from conftest import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_README_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
# [text](target) and ![alt](target); the target ends at whitespace (before a title) or ')'.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"<(?:img|a)\b[^>]*\b(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
INLINE_CODE = re.compile(r"`[^`]*`")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def pages() -> list[Path]:
    """README.md and every markdown page under docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def links(text: str) -> list[str]:
    """Every link and image target outside code, fenced or inline."""
    found = []
    for line in prose_lines(text):
        line = INLINE_CODE.sub("", line)
        found += LINK.findall(line) + HTML_SRC.findall(line)
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lowercased, punctuation dropped
    (except - and _), spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"[`*]", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for line in prose_lines(page.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def shown(path: Path) -> str:
    """A path as a message names it: relative to the repo where it is inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def broken_links(page: Path) -> list[str]:
    """A page's relative links whose file or heading does not exist, each with the reason."""
    problems = []
    for target in links(page.read_text()):
        if SCHEME.match(target):
            continue  # http(s), mailto: not checked offline
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{target}: no file {shown(dest)}")
        elif fragment and (dest.suffix != ".md" or fragment not in anchors(dest)):
            problems.append(f"{target}: no heading #{fragment} in {shown(dest)}")
    return problems


def test_readme_fits_on_a_page():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines, more than {MAX_README_LINES}; move the detail to a page in docs/")


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    problems = broken_links(page)
    assert not problems, f"{shown(page)}: broken links:\n" + "\n".join(problems)


def test_every_docs_page_is_linked_from_an_index():
    index = DOCS / "README.md"
    linked = set()
    for source in (README, index):
        if source.exists():
            linked |= {(source.parent / t.partition("#")[0]).resolve()
                       for t in links(source.read_text()) if not SCHEME.match(t) and t.partition("#")[0]}
    orphans = [str(p.relative_to(REPO)) for p in sorted(DOCS.rglob("*.md")) if p != index and p.resolve() not in linked]
    assert not orphans, f"docs pages linked from neither README.md nor docs/README.md: {orphans}"


def test_slugs_follow_github():
    assert slug("Prefect: runs from the UI") == "prefect-runs-from-the-ui"
    assert slug("ImageNet's hotdog") == "imagenets-hotdog"
    assert slug("A `dvc` outside the venv") == "a-dvc-outside-the-venv"
    assert slug("Ctrl-C, SIGTERM and cancel stop cleanly") == "ctrl-c-sigterm-and-cancel-stop-cleanly"
    assert slug("Several GPUs: data-parallel training") == "several-gpus-data-parallel-training"


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "there.md").write_text("# Here it is\n\n```sh\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#here-it-is) [gone](missing.md) [bad](there.md#not-a-heading)\n"
                    "`[code](nowhere.md)` [web](https://example.com/x)\n"
                    "```\n[fenced](nowhere.md)\n```\n")
    assert links(page.read_text()) == ["there.md#here-it-is", "missing.md", "there.md#not-a-heading",
                                       "https://example.com/x"]
    problems = broken_links(page)
    assert len(problems) == 2 and "missing.md" in problems[0] and "#not-a-heading" in problems[1]
