"""The documentation site as a reader sees it: built once, every page opened in headless Chromium.

Pages are discovered in the built site (every ``index.html``), so a new page is checked without
editing this file.  Checks, after the page's scripts ran (MathJax included):

- no raw TeX (``\\(``, ``\\[``, ``\\frac``, ``$…$``, a literal ``\\|``) and no raw Sphinx role
  (``:func:``) in the text outside code; a page with math shows rendered math, with no TeX error;
- no request to another host (the site works offline), every image loaded;
- the API reference has an entry for every public name of ``xpmat`` and ``xpmat.optim``.

Skipped, with the reason, where Chromium or the ``docs`` extra is missing (CI installs both).
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from _chromium import Chromium, find_chromium

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = find_chromium()

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (Debian: apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None
                       or importlib.util.find_spec("mathjax") is None,
                       reason="the docs extra is not installed: pip install 'xpmat[docs]'"),
]

# Runs in the page once MathJax (if any) has typeset it; returns what the tests check.
PAGE_REPORT = r"""
(async () => {
  if (window.MathJax && MathJax.startup) { await MathJax.startup.promise; }
  const text = document.body.cloneNode(true);
  text.querySelectorAll("pre, code, script, style, mjx-container").forEach(e => e.remove());
  return {
    text: text.textContent,
    math_sources: document.querySelectorAll(".arithmatex").length,
    math_rendered: document.querySelectorAll("mjx-container").length,
    math_errors: [...document.querySelectorAll("mjx-merror")].map(
        e => e.getAttribute("data-mjx-error") || e.textContent),
    broken_images: [...document.images].filter(i => !i.complete || i.naturalWidth === 0)
        .map(i => i.getAttribute("src")),
    assets: [...document.querySelectorAll("script[src], link[href][rel~=stylesheet], img[src]")]
        .map(e => e.src || e.href),
    ids: [...document.querySelectorAll("[id]")].map(e => e.id),
  };
})()
"""

RAW_TEX = re.compile(r"\\[()\[\]|]|\\[A-Za-z]{2,}|\$[^$\n]+\$")
SPHINX_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|data|attr|obj|exc|const):")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stderr[-4000:]}"
    return out


@pytest.fixture(scope="module")
def base_url(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def reports(site, base_url, tmp_path_factory) -> dict[str, dict]:
    """page (its path in the site) -> what PAGE_REPORT found, plus the URLs it requested."""
    pages = sorted(p.relative_to(site).parent.as_posix() + "/" for p in site.rglob("index.html"))
    browser = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    try:
        found = {}
        for page in pages:
            page = "" if page == "./" else page
            browser.open(base_url + page)
            found[page or "/"] = browser.evaluate(PAGE_REPORT)
            found[page or "/"]["requests"] = browser.requested_urls()
        return found
    finally:
        browser.close()


def _offenders(reports, check) -> dict[str, object]:
    found = {page: check(report) for page, report in reports.items()}
    return {page: what for page, what in found.items() if what}


def test_site_has_the_pages(reports):
    for page in ("/", "api/", "references/"):
        assert page in reports, sorted(reports)


def test_no_raw_tex_or_sphinx_roles(reports):
    def raw(report):
        text = report["text"]
        return sorted({m.group(0)[:40] for m in (*RAW_TEX.finditer(text), *SPHINX_ROLE.finditer(text))})

    assert not _offenders(reports, raw), "raw TeX or Sphinx roles left in the rendered text"


def test_math_is_rendered(reports):
    def unrendered(report):
        if report["math_errors"]:
            return f"TeX errors: {report['math_errors'][:5]}"
        if report["math_rendered"] < report["math_sources"]:
            return f"{report['math_rendered']} of {report['math_sources']} formulas rendered"
        return None

    assert any(r["math_sources"] for r in reports.values()), "no page has math: arithmatex is off?"
    assert not _offenders(reports, unrendered)


def test_nothing_from_another_host(reports, base_url):
    own = urlsplit(base_url).netloc

    def foreign(report):
        urls = [*report["requests"], *report["assets"]]
        return sorted({u for u in urls if urlsplit(u).scheme in ("http", "https")
                       and urlsplit(u).netloc != own})

    assert not _offenders(reports, foreign)


def test_every_image_is_present(reports):
    assert not _offenders(reports, lambda r: r["broken_images"])


def _public_names() -> list[str]:
    import xpmat
    import xpmat.optim

    names = [f"xpmat.{n}" for n in xpmat.__all__] + [f"xpmat.optim.{n}" for n in xpmat.optim.__all__]
    if importlib.util.find_spec("torch") is not None:
        from xpmat.optim import torch_optim

        names += [f"xpmat.optim.{n}" for n in torch_optim.__all__]
    return names


def test_api_reference_lists_every_public_name(reports):
    ids = set(reports["api/"]["ids"])

    def documented(name: str) -> bool:
        package, _, short = name.rpartition(".")  # in the package or one of its modules
        in_module = re.compile(re.escape(package) + r"\.\w+\." + re.escape(short))
        return name in ids or any(in_module.fullmatch(i) for i in ids)

    missing = [name for name in _public_names() if not documented(name)]
    assert not missing, f"no API entry for {missing}"
