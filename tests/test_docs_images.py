"""Every image the docs show is in docs/img (the browser tour, tests/test_browser_tour.py,
takes the screenshots: `INSITU_SCREENSHOTS=docs/img` refreshes them)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
IMG = DOCS / "img"
# ![alt](path "title") and <img src="path">
REFERENCE = re.compile(
    r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
    r"|<img[^>]*\ssrc=\"([^\"]+)\""
)


def _pages() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def image_references() -> list[tuple[Path, str]]:
    found = []
    for page in _pages():
        for match in REFERENCE.finditer(page.read_text()):
            target = match.group(1) or match.group(2)
            if not re.match(r"[a-z]+:", target):  # not http:, data: ...
                found.append((page, target))
    return found


def test_every_image_the_docs_show_is_in_docs_img() -> None:
    references = image_references()
    assert len(references) >= 10, references  # the tour's screenshots are shown
    for page, target in references:
        path = (page.parent / target.split("#")[0]).resolve()
        where = f"{page.relative_to(REPO)} shows {target}"
        assert path.is_relative_to(IMG), f"{where}: keep images in docs/img"
        assert path.is_file(), f"{where}, which does not exist"


def test_the_reference_pattern_finds_markdown_and_html_images() -> None:
    text = '![a](img/x.png) ![b](img/y.png "t") <img src="img/z.png" width="300"> [c](img/w.png)'
    targets = [m.group(1) or m.group(2) for m in REFERENCE.finditer(text)]
    assert targets == ["img/x.png", "img/y.png", "img/z.png"]
