"""The built web book in a real headless browser (Debian's chromium driven by selenium).

The test serves ``_build/html`` on 127.0.0.1, opens the index and every page listed in ``_toc.yml``,
and checks what a reader sees: the page title, equations rendered by MathJax, at least one figure,
no traceback from a notebook output, internal links that resolve (files and anchors), a working
"Open in Colab" launch button for every notebook page, and a search box that finds things. It also
checks that the pages read well: Markdown tables that cells display render as tables (no paragraph
starting with ``|``), no code cell scrolls sideways in a 1280-pixel-wide window, and "Deep dive"
boxes start folded. It saves a screenshot of every page under ``_build/screenshots/``.

* No built book (``_build/html/index.html`` missing): the test is skipped, with the command to run.
* A built book but no chromium/chromedriver (or no selenium): the test FAILS, with the install
  command -- a browser check that silently skips proves nothing.

The browser gets no network: every host name but 127.0.0.1 resolves to nothing, so the pages must
work offline (MathJax is served with the book), and nothing can be downloaded.
"""
from __future__ import annotations

import functools
import html.parser
import http.server
import json
import re
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from test_book_health import colab_link, toc_documents  # the same reading of _toc.yml and _config.yml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_TIMEOUT = 20  # seconds to wait for a page, its MathJax and its images


# --------------------------------------------------------------------------------------------- the book
def _source(doc: str) -> Path:
    for suffix in (".md", ".ipynb"):
        if (ROOT / f"{doc}{suffix}").exists():
            return ROOT / f"{doc}{suffix}"
    raise FileNotFoundError(f"_toc.yml lists {doc!r}, but neither {doc}.md nor {doc}.ipynb exists")


def _expected_title(doc: str) -> str:
    """The text of the page's first level-1 heading, from its source."""
    path = _source(doc)
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    else:
        text = path.read_text(encoding="utf-8")
    m = re.search(r"^# (.+?)\s*$", text, flags=re.M)
    assert m, f"{path.name} has no '# Title' heading"
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))  # [text](link) shows as text
    return re.sub(r"[`*]", "", title).strip()


try:
    DOCS = toc_documents()
except FileNotFoundError:  # no _toc.yml: test_book_health reports it
    DOCS = []


# ------------------------------------------------------------------------------------------- fixtures
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    """The base URL of _build/html served on 127.0.0.1 (a free port, a thread)."""
    if not (HTML / "index.html").exists():
        pytest.skip("the book is not built (no _build/html/index.html): run `make book` first")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(site, tmp_path_factory):
    """Headless chromium through chromedriver; fails (never skips) when they are missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"the book is built but {', '.join(missing)} is missing: install the browser with "
                    "`make browser` (apt-get install chromium chromium-driver)", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:  # pragma: no cover - selenium is a test dependency
        pytest.fail(f"selenium is missing ({e}): pip install -e '.[test]'", pytrace=False)

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,2400",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
                # offline: only the local server resolves (external images and scripts fail fast)
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, read per page
    # an explicit driver path: Selenium Manager is never asked to download anything
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    driver.set_script_timeout(PAGE_TIMEOUT)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


# --------------------------------------------------------------------------------------------- helpers
class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)


@functools.lru_cache(maxsize=None)
def _anchors(path: Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


def _local_file(site: str, url: str) -> Path:
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    target = HTML / path.lstrip("/")
    if path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target


def _broken_links(site: str, hrefs: list[str]) -> list[str]:
    broken = []
    for href in sorted(set(hrefs)):
        if not href.startswith(site):
            continue
        target = _local_file(site, href)
        frag = urllib.parse.unquote(urllib.parse.urlsplit(href).fragment)
        if not target.is_file():
            broken.append(f"{href} (no file {target.relative_to(HTML)})")
        elif frag and target.suffix == ".html" and frag not in _anchors(target):
            broken.append(f"{href} (no anchor #{frag} in {target.relative_to(HTML)})")
    return broken


_PAGE_STATE = """
const done = arguments[arguments.length - 1];
const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
const finish = () => {
  const visible = el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const figures = [...article.querySelectorAll('img')].filter(
      img => img.src.startsWith(location.origin) && !img.src.includes('/_static/')
             && img.complete && img.naturalWidth > 0 && visible(img)).length
    + [...article.querySelectorAll('svg')].filter(
      s => !s.closest('mjx-container') && s.getBoundingClientRect().width >= 100).length;
  done({
    title: document.title,
    h1: [...article.querySelectorAll('h1')].map(h => h.textContent.replace(/#\\s*$/, '').trim()),
    math: article.querySelectorAll('mjx-container').length,
    math_errors: [...article.querySelectorAll('mjx-merror')].map(e => e.textContent).slice(0, 3),
    raw_math: [...article.querySelectorAll('.math')].filter(e => !e.querySelector('mjx-container')).length,
    figures: figures,
    broken_images: [...document.querySelectorAll('img')].filter(
      img => img.src.startsWith(location.origin) && img.complete && img.naturalWidth === 0).map(img => img.src),
    empty_cells: [...article.querySelectorAll('.cell_input pre')].filter(p => !p.textContent.trim()).length,
    tracebacks: article.querySelectorAll('[class*="traceback"]').length
      + (article.innerText.includes('Traceback (most recent call last)') ? 1 : 0),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    pipe_paragraphs: [...article.querySelectorAll('p')].map(p => p.textContent.trim())
      .filter(t => t.startsWith('|')).map(t => t.slice(0, 50)),
    sideways_code: [...article.querySelectorAll('.cell_input pre')]
      .filter(p => p.scrollWidth > p.clientWidth + 1)
      .map(p => p.textContent.split('\\n').find(l => l.length > 80) || p.textContent.slice(0, 50)),
    open_deep_dives: [...article.querySelectorAll('.admonition.dropdown')]
      .filter(d => !d.classList.contains('toggle-hidden'))
      .map(d => (d.querySelector('.admonition-title') || d).textContent.trim().slice(0, 50)),
    colab: [...document.querySelectorAll('a[href^="https://colab.research.google.com/github/"]')].map(
      a => ({href: a.href, launch: !!a.closest('.dropdown-launch-buttons')})),
  });
};
const images = [...document.images].filter(img => !img.complete).map(
  img => new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); }));
const typeset = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
Promise.all([typeset, ...images]).then(finish, finish);
"""


# Console errors that are not the book's: sphinx-thebe declares THEBE_JS_URL twice when launch buttons
# are configured (jupyter-book 1.x), and the test browser has no network for external images.
_HARMLESS = re.compile(r"Identifier 'THEBE_JS_URL' has already been declared|favicon\.ico|ERR_NAME_NOT_RESOLVED")


def _js_errors(driver, site: str) -> list[str]:
    """Uncaught errors in the page's own scripts, and its own files that did not load."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and e.get("source") in ("javascript", "network")
            and e["message"].startswith(site) and not _HARMLESS.search(e["message"])]


def _open(driver, url: str, lands_on: str | None = None) -> dict:
    """Load ``url`` (which may redirect to ``lands_on``), wait for MathJax and images, read the page."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    lands_on = lands_on or url
    deadline = time.time() + PAGE_TIMEOUT
    while time.time() < deadline and not (
            driver.current_url.split("#")[0] == lands_on
            and driver.execute_script("return document.readyState") == "complete"):
        time.sleep(0.05)
    return driver.execute_async_script(_PAGE_STATE)


def _screenshot(driver, name: str) -> None:
    """The top of the page as the browser shows it (1280 px wide, about 2300 px tall)."""
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


# ------------------------------------------------------------------------------------------------ tests
def test_index_opens_the_root_page(site, browser):
    root = DOCS[0]
    state = _open(browser, site, lands_on=f"{site}{root}.html")
    assert browser.current_url == f"{site}{root}.html", "index.html should lead to the book's root page"
    assert _expected_title(root) in state["h1"]
    _screenshot(browser, "index")


@pytest.mark.parametrize("doc", DOCS)
def test_page(site, browser, doc):
    state = _open(browser, f"{site}{doc}.html")
    _screenshot(browser, doc.replace("/", "__"))
    problems = []

    title = _expected_title(doc)
    if title not in state["h1"]:
        problems.append(f"no heading {title!r} (headings: {state['h1']})")
    if not state["title"].startswith(title):
        problems.append(f"browser title {state['title']!r} does not start with {title!r}")

    if state["math"] == 0:
        problems.append("no equation rendered by MathJax (no mjx-container)")
    if state["math_errors"] or state["raw_math"]:
        problems.append(f"MathJax errors {state['math_errors']}, {state['raw_math']} unrendered equations")

    if state["figures"] == 0:
        problems.append("no figure (a loaded image or an SVG drawing in the page)")
    if state["broken_images"]:
        problems.append(f"images that did not load: {state['broken_images']}")

    errors = _js_errors(browser, site)
    if errors:
        problems.append(f"{len(errors)} JavaScript errors, e.g. " + "; ".join(errors[:3]))

    if state["empty_cells"]:
        problems.append(f"{state['empty_cells']} empty code cells shown (e.g. a cell holding only #| directives)")

    if state["tracebacks"]:
        problems.append(f"{state['tracebacks']} error traceback(s) from notebook outputs")

    if state["pipe_paragraphs"]:
        problems.append(f"{len(state['pipe_paragraphs'])} paragraphs start with '|' (a Markdown table "
                        f"rendered as text), e.g. {state['pipe_paragraphs'][0]!r}")

    if state["sideways_code"]:
        problems.append(f"{len(state['sideways_code'])} code cells scroll sideways (lines wider than "
                        f"88 columns: tools/nbstyle.py format), e.g. {state['sideways_code'][0].strip()[:60]!r}")

    if state["open_deep_dives"]:
        problems.append(f"folded boxes shown open: {state['open_deep_dives']}")

    broken = _broken_links(site, state["links"])
    if broken:
        problems.append("broken internal links: " + "; ".join(broken[:5]))

    if _source(doc).suffix == ".ipynb":
        want = colab_link(doc)
        if not any(c["launch"] and c["href"] == want for c in state["colab"]):
            problems.append(f"no Colab launch button pointing at {want}")
        wrong = sorted({c["href"] for c in state["colab"]} - {want})
        if wrong:
            problems.append(f"Colab links to the wrong notebook: {wrong} (expected {want})")

    assert not problems, f"{doc}.html:\n  " + "\n  ".join(problems)


def test_navigation_lists_every_page(site, browser):
    _open(browser, f"{site}{DOCS[0]}.html")
    hrefs = browser.execute_script(
        "return [...document.querySelectorAll('nav.bd-links a[href], .bd-sidebar-primary a[href]')]"
        ".map(a => a.href.split('#')[0])")
    missing = [doc for doc in DOCS[1:] if f"{site}{doc}.html" not in hrefs]
    assert not missing, f"the sidebar does not link to {missing}"


def test_search_finds_a_page_by_a_word_of_its_title(site, browser):
    doc = DOCS[-1]
    word = max(re.findall(r"[A-Za-z]+", _expected_title(doc)), key=len).lower()
    browser.get(f"{site}search.html?q={word}")
    deadline = time.time() + PAGE_TIMEOUT
    results = []
    while time.time() < deadline and not results:
        results = browser.execute_script(
            "return [...document.querySelectorAll('#search-results ul.search li a')].map(a => a.href)")
        time.sleep(0.1)
    _screenshot(browser, "search")
    assert f"{site}{doc}.html" in [r.split("?")[0].split("#")[0] for r in results], \
        f"searching the book for {word!r} does not find {doc}.html: {results}"
    assert not _broken_links(site, results)


def test_book_has_a_bibliography_and_a_glossary(site):
    pages = {doc: (HTML / f"{doc}.html").read_text(encoding="utf-8") for doc in DOCS
             if (HTML / f"{doc}.html").exists()}
    entries = {doc: len(re.findall(r'role="doc-biblioentry"', text)) for doc, text in pages.items()}
    assert sum(entries.values()) >= 5, f"no bibliography (references.bib + {{bibliography}}) in the book: {entries}"
    terms = {doc: len(re.findall(r'<dt id="term-', text)) for doc, text in pages.items()}
    most = max(terms.values(), default=0)
    assert most >= 10, \
        f"no glossary page in _toc.yml (glossary.md has the {{glossary}} of the book's terms): {terms}"

