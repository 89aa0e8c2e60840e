"""The served page's files: vendored libraries match their pinned npm packages, and the markup needs no
inline script or style (so the strict Content-Security-Policy holds). No browser needed."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from tests.browser.conftest import REPO, assert_copy_of_pinned

STATIC = REPO / "gateway" / "static"
# Vendored file -> (npm package, file inside the package, licence files copied beside it).
VENDORED = {
    "vendor/marked/marked.esm.js": ("marked", "lib/marked.esm.js", ["LICENSE"]),
    "vendor/dompurify/purify.es.js": ("dompurify", "dist/purify.es.mjs", ["LICENSE", "LICENSE-MPL"]),
    "vendor/chartjs/chart.umd.min.js": ("chart.js", "dist/chart.umd.min.js", ["LICENSE.md"]),
}


@pytest.mark.parametrize("vendored", sorted(VENDORED))
def test_vendored_file_is_the_pinned_package_file(vendored: str) -> None:
    package, inner, licences = VENDORED[vendored]
    pinned = json.loads((REPO / "package.json").read_text())["devDependencies"][package]
    target = STATIC / vendored
    assert target.is_file()
    for licence in licences:
        assert (target.parent / licence).is_file(), f"{licence} missing beside {vendored}"
    assert pinned in target.read_text(encoding="utf-8")[:400], f"{vendored} does not announce version {pinned}"
    assert_copy_of_pinned(target, package, inner)


# The accessibility checker the browser tests inject (test_a11y.py); it is never served to users.
TEST_VENDORED = {
    "tests/browser/vendor/axe-core/axe.min.js": ("axe-core", "axe.min.js", ["LICENSE", "LICENSE-3RD-PARTY.txt"]),
}


@pytest.mark.parametrize("vendored", sorted(TEST_VENDORED))
def test_vendored_test_tool_is_the_pinned_package_file(vendored: str) -> None:
    package, inner, licences = TEST_VENDORED[vendored]
    pinned = json.loads((REPO / "package.json").read_text())["devDependencies"][package]
    target = REPO / vendored
    assert target.is_file()
    for licence in licences:
        assert (target.parent / licence).is_file(), f"{licence} missing beside {vendored}"
    assert f"axe v{pinned}" in target.read_text(encoding="utf-8")[:200], f"{vendored} does not announce {pinned}"
    assert_copy_of_pinned(target, package, inner)


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        for name in names:
            if name.startswith("on") or name == "style":
                self.problems.append(f"<{tag} {name}=...>")
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script" and "src" not in names:
            self.problems.append("inline <script>")
        for name, value in attrs:
            if name in ("href", "src", "action") and value and re.match(r"\s*javascript:", value, re.I):
                self.problems.append(f"<{tag} {name}=javascript:...>")
            if name == "src" and value and re.match(r"\s*(https?:)?//", value, re.I):
                self.problems.append(f"<{tag} src> from another origin: {value}")


def test_page_markup_needs_no_inline_script_or_style() -> None:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    parser = _Markup()
    parser.feed(html)
    assert parser.problems == []
    csp = re.search(r'http-equiv="Content-Security-Policy"\s+content="([^"]+)"', html)
    assert csp is not None
    policy = csp.group(1)
    for directive in ("script-src 'self'", "object-src 'none'", "default-src 'none'", "base-uri 'none'"):
        assert directive in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_scripts_never_assign_inner_html() -> None:
    """Model text reaches the DOM only through DOMPurify fragments or text nodes (see render.js)."""
    for path in STATIC.glob("*.js"):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write", source), path.name
