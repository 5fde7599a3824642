"""The documentation site as a reader gets it: ``mkdocs build --strict`` into a temporary folder,
then every built page is read back (no raw Sphinx role, no dead internal link), the contributor
pages (How it works, Architecture) name only things that exist, and headless Chromium opens the
home, callback and API pages served over HTTP (title, a highlighted code block, a resolved API
link).

Screenshots land in ``$GRADCAM_SCREENSHOT_DIR`` when it is set (as for the TensorBoard test).
"""

from __future__ import annotations

import contextlib
import functools
import html.parser
import http.server
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from pathlib import Path

import pytest
from PIL import Image
from tb_server import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.backend_agnostic

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("class", "func", "mod", "meth", "data", "attr")
# A role as mkdocstrings would print it raw: ":class:" then the backticked name, which Markdown
# turns into <code>; inline code that *teaches* a role is emptied out first (see code_emptied).
RAW_ROLE = re.compile(r":(?:" + "|".join(ROLES) + r"):(?:<code|`|&#96;|&#x60;)")
CODE = re.compile(r"(<code\b[^>]*>).*?(</code>)", re.S)


def build_site(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "GRADCAM_DOCS_REPO_URL": ""},
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    built = build_site(out)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def pages(site: Path) -> list[Path]:
    found = sorted(site.rglob("*.html"))
    assert len(found) >= 15, found  # every nav page, 404 and the API pages
    return found


def code_emptied(text: str) -> str:
    """``text`` with the inside of every ``<code>`` element removed (code that shows a role)."""
    return CODE.sub(r"\1\2", text)


def test_no_page_prints_a_raw_sphinx_role(site):
    raw = {}
    for page in pages(site):
        hits = RAW_ROLE.findall(code_emptied(page.read_text()))
        if hits:
            raw[str(page.relative_to(site))] = len(hits)
    assert not raw, f"pages printing Sphinx roles raw (page: count): {raw}"
    api = (site / "api" / "index.html").read_text()
    internals = (site / "internals" / "index.html").read_text()
    # the roles became links: e.g. the API page links TargetExplanation from explain_predictions
    assert api.count("autorefs-internal") >= 50
    # each rule of docs/_ext/sphinx_roles.py, seen in the built pages:
    # ~ shows the last component (a function gets "()"), the link goes to the full path
    assert ('href="../api/#gradcam_callbacks.image.explanation_strip"><code>'
            'explanation_strip()</code>') in internals
    # a leading dot is relative to the docstring's package (cli/__init__.py's :mod:`.interrupt`)
    assert 'href="#gradcam_callbacks.cli.interrupt"><code>interrupt</code>' in internals
    # "text <target>" shows the text; a name the module does not import is found by its suffix
    assert 'href="#gradcam_callbacks.engine.plan.Plan.run"><code>Plan.run()</code>' in internals


def test_the_role_check_sees_a_raw_role_but_not_a_taught_one():
    """mkdocstrings' raw output of ``:class:`X``` is caught; inline code showing a role is not."""
    raw = '<p>See :class:<code>TargetExplanation</code> and :func:`explain`.</p>'
    taught = '<p>Write <code>:class:`Explanation`</code> in a docstring.</p>'
    assert len(RAW_ROLE.findall(code_emptied(raw))) == 2
    assert RAW_ROLE.findall(code_emptied(taught)) == []


class Links(html.parser.HTMLParser):
    """The ``href``/``src`` values and the ``id``/``name`` anchors of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.anchors: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if value is None:
                continue
            if key in ("href", "src") and tag != "link" or (key == "href" and tag == "link"):
                self.links.append(value)
            if key in ("id", "name") and tag != "meta":
                self.anchors.add(value)


@functools.cache
def parsed(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text())
    return links


def broken_links(site: Path) -> list[str]:
    broken = []
    for page in pages(site):
        for link in parsed(page).links:
            url = urllib.parse.urlsplit(link)
            if url.scheme or url.netloc or link.startswith(("mailto:", "data:", "javascript:")):
                continue  # not a link inside the site
            if page.name == "404.html" and url.path.startswith("/"):
                continue  # the 404 page links from the server's root, wherever it is served
            target = (page.parent / urllib.parse.unquote(url.path)).resolve() if url.path else page
            if target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(site)} -> {link}"
            if not target.is_file() or site.resolve() not in target.parents:
                broken.append(f"{where} (no file {target})")
            elif url.fragment and target.suffix == ".html":
                if urllib.parse.unquote(url.fragment) not in parsed(target).anchors:
                    broken.append(f"{where} (no anchor #{url.fragment})")
    return broken


def test_no_internal_link_is_dead(site):
    assert broken_links(site) == []


def test_the_link_check_sees_a_dead_link_and_anchor(site, tmp_path):
    """The checker itself: a page with a missing file and a missing anchor is reported."""
    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    index = copy / "index.html"
    index.write_text(index.read_text().replace(
        "</body>", '<a href="nowhere/">x</a><a href="api/#no-such-anchor">y</a></body>'))
    parsed.cache_clear()
    found = broken_links(copy)
    assert any("nowhere/" in b for b in found) and any("#no-such-anchor" in b for b in found)


# -- How it works, Architecture: the names they give exist -------------------------------------
NAME = re.compile(r"\bgradcam_callbacks(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def resolve(name: str) -> object:
    """Import the longest module prefix of ``name``, then get the remaining attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


@pytest.mark.parametrize("page", ["how-it-works.md", "architecture.md"])
def test_contributor_pages_name_only_what_exists(page):
    text = (ROOT / "docs" / page).read_text()
    names = sorted(set(NAME.findall(text)))
    assert len(names) >= 25, names
    missing = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError) as error:
            missing.append(f"{name}: {error!r}")
    assert missing == []
    # the page's file paths name real files too (gradcam_callbacks/methods/gradcam.py, ...)
    paths = set(re.findall(r"`((?:gradcam_callbacks|tests|scripts|docs)/[\w/.-]+\.(?:py|md))`",
                           text))
    assert paths and [p for p in sorted(paths) if not (ROOT / p).exists()] == []


# -- in a browser ------------------------------------------------------------------------------
@contextlib.contextmanager
def serving(directory: Path):
    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


# JS: the first code token whose colour differs from its block's (Pygments + the theme's CSS)
HIGHLIGHTED = """() => {
  for (const code of document.querySelectorAll('div.highlight pre code')) {
    const base = getComputedStyle(code).color;
    for (const span of code.querySelectorAll('span[class]')) {
      if (span.textContent.trim() && getComputedStyle(span).color !== base) return span.textContent;
    }
  }
  return null;
}"""


@pytest.mark.timeout(300)
def test_home_callback_and_api_pages_render_in_chromium(site, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is required for the docs browser check "
                    "(.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    shots = {}
    with serving(site) as url, sync_playwright() as playwright, \
            contextlib.ExitStack() as stack:
        profile = stack.enter_context(tempfile.TemporaryDirectory())
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        stack.callback(context.close)
        page = context.new_page()
        page.set_default_timeout(60_000)
        for name, path, heading in [("home", "", "gradcam-callbacks"),
                                    ("callback", "callback/", "Watching training"),
                                    ("api", "api/", "API reference")]:
            response = page.goto(f"{url}/{path}", wait_until="load")
            assert response is not None and response.status == 200
            assert page.title().endswith("gradcam-callbacks"), page.title()
            h1 = page.locator("article h1").first
            assert h1.is_visible()
            assert heading.lower() in h1.inner_text().lower(), (path, h1.inner_text())
            assert page.locator("nav.md-nav--primary").count() == 1  # the theme's navigation
            if name != "api":
                token = page.evaluate(HIGHLIGHTED)
                assert token, f"{path}: no code token is coloured differently from its block"
            shot = tmp_path / f"docs-{name}.png"
            page.screenshot(path=str(shot))
            shots[name] = shot
            if name == "api":
                text = page.inner_text("article")
                assert not re.search(r":(?:" + "|".join(ROLES) + r"):`", text)
                link = page.locator("article a.autorefs-internal", has_text="TargetExplanation")
                assert link.count() >= 1
                href = link.first.get_attribute("href")
                link.first.click()
                page.wait_for_function("(h) => location.hash === h", arg=href[href.index("#"):])
                anchor = urllib.parse.unquote(href.split("#", 1)[1])
                assert page.locator(f"[id='{anchor}']").first.is_visible()
                page.screenshot(path=str(tmp_path / "docs-api-link.png"))
                shots["api-link"] = tmp_path / "docs-api-link.png"
    for shot in shots.values():
        assert Image.open(shot).size == (1400, 1000)
    kept = os.environ.get("GRADCAM_SCREENSHOT_DIR")
    if kept:
        os.makedirs(kept, exist_ok=True)
        for shot in shots.values():
            shutil.copy(shot, os.path.join(kept, shot.name))
