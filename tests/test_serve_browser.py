"""The page in a real browser: Debian's chromium (`make browser`) driven by Playwright. Mouse strokes on the
canvas must bring LaTeX, a KaTeX preview and, under the pointer on a token, an attention heat map.

No skipping: without the browser this fails and says how to install it (CI installs it through `make test`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from maskmatch.serve.app import create_app, katex_folder
from maskmatch.serve.server import BackgroundServer
from test_serve import writer_recognizer

CHROMIUM = Path(os.environ.get("MASKMATCH_CHROMIUM", "/usr/bin/chromium"))
# as root, with no network but loopback: no sandbox, no background connections, a fresh profile per launch
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
# "x" then "2" as a superscript, in board pixels
STROKES = [[(60, 120), (90, 160), (120, 200)], [(120, 120), (90, 160), (60, 200)],
           [(135, 80), (145, 70), (160, 75), (160, 90), (135, 115), (165, 115)]]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"no browser at {CHROMIUM}: `make browser` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, timeout=60_000)
        yield b
        b.close()


def open_page(browser, url: str, bypass_csp: bool = True):
    """bypass_csp: Playwright's wait_for_function evaluates strings, which the page's CSP forbids (no eval);
    test_the_page_works_under_its_csp checks the page itself under the CSP."""
    page = browser.new_page(viewport={"width": 1000, "height": 760}, bypass_csp=bypass_csp)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(url)
    page.wait_for_function("document.readyState === 'complete'")
    return page, errors


def draw(page, strokes) -> None:
    box = page.locator("#ink").bounding_box()
    for stroke in strokes:
        page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=4)
        page.mouse.up()


def heat_alpha(page) -> int:
    return page.evaluate("""() => { const c = document.getElementById('heat');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = 0; for (let i = 3; i < d.length; i += 4) s += d[i]; return s; }""")


def test_writing_brings_latex_preview_and_attention(browser):
    if katex_folder() is None:
        pytest.fail("KaTeX is missing from the package (src/maskmatch/serve/katex): `make katex` restores it")
    with BackgroundServer(create_app(writer_recognizer(), beam_size=1)) as url:
        page, errors = open_page(browser, url)
        draw(page, STROKES)
        page.wait_for_function("document.getElementById('latex').textContent === 'x x x x x x'", timeout=20_000)
        page.wait_for_selector("#preview .katex", timeout=5_000)
        assert page.locator("#preview .katex-html").inner_text().replace("\n", "") == "xxxxxx"
        assert page.locator(".token").count() == 6 and heat_alpha(page) == 0
        page.locator(".token").nth(2).hover()
        page.wait_for_function("document.querySelector('.token.active') !== null")
        assert heat_alpha(page) > 0  # the third token's map over the ink
        page.mouse.move(5, 5)
        assert heat_alpha(page) == 0
        with page.expect_response("**/api/recognize", timeout=20_000) as answer:
            page.click("#undo")  # two strokes left: recognized again
        assert len(answer.value.request.post_data_json["strokes"]) == 2 and answer.value.ok
        page.click("#clear")
        assert page.locator("#latex").inner_text() == "" and page.locator(".token").count() == 0
        assert not errors, errors


def test_without_katex_the_page_says_the_preview_is_unavailable(browser):
    with BackgroundServer(create_app(writer_recognizer(), beam_size=1, katex=False)) as url:
        page, errors = open_page(browser, url)
        draw(page, STROKES[:1])
        page.wait_for_function("document.getElementById('latex').textContent.length > 0", timeout=20_000)
        assert "Preview unavailable" in page.locator("#preview").inner_text()
        assert not errors, errors


def test_alternatives_errors_favicon_and_phone_width(browser):
    """Clicking another reading shows its LaTeX; a broken upload clears the old answer and says so in plain words;
    the favicon is served; on a 390 px phone the LaTeX wraps instead of overflowing."""
    with BackgroundServer(create_app(writer_recognizer(), beam_size=3, katex=False)) as url:
        page, errors = open_page(browser, url)
        draw(page, STROKES)
        page.wait_for_function("document.getElementById('latex').textContent === 'x x x x x x'", timeout=20_000)
        options = page.locator(".alternative")
        assert options.count() >= 2 and "chosen" in options.first.get_attribute("class")
        second = options.nth(1).inner_text()
        options.nth(1).click()
        assert page.locator("#latex").inner_text() == second != "x x x x x x"
        assert "chosen" in options.nth(1).get_attribute("class")
        page.click("#copy-mathml")
        page.wait_for_function("document.getElementById('status').textContent === 'MathML copied'")
        with page.expect_response("**/api/recognize", timeout=20_000) as answer:
            page.set_input_files("#file", files=[{"name": "broken.png", "mimeType": "image/png", "buffer": b"nope"}])
        assert answer.value.status == 400
        page.wait_for_function("document.getElementById('status').classList.contains('error')")
        assert page.locator("#latex").inner_text() == "" and page.locator(".alternative").count() == 0
        assert page.locator("#status").inner_text() == "not a readable image (not a PNG, JPEG, BMP, GIF, TIFF, WebP file)"
        sent = []
        page.on("request", lambda r: sent.append(r.url) if "/api/recognize" in r.url else None)
        page.set_input_files("#file", files=[{"name": "huge.png", "mimeType": "image/png", "buffer": b"\0" * (11 << 20)}])
        page.wait_for_function("document.getElementById('status').textContent.includes('at most 10 MB')")
        assert not sent  # refused before sending: the server would only answer 413
        assert page.request.get(url + "/static/favicon.svg").ok
        assert not errors, errors
        phone = browser.new_page(viewport={"width": 390, "height": 760}, bypass_csp=True)
        phone.goto(url)
        phone.evaluate("""() => { document.getElementById('latex').textContent =
            Array(60).fill('\\\\frac { x } { y }').join(' + '); }""")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        box = phone.locator("#latex").bounding_box()
        assert box["x"] + box["width"] <= 390


def test_the_page_works_under_its_csp(browser):
    """With the server's Content-Security-Policy in force (no inline or evaluated script): writing still brings
    LaTeX, the KaTeX preview (its fonts and inline styles) and the token chips, with no CSP violation."""
    with BackgroundServer(create_app(writer_recognizer(), beam_size=1)) as url:
        page, errors = open_page(browser, url, bypass_csp=False)
        draw(page, STROKES)
        page.wait_for_selector("#preview .katex", timeout=20_000)
        assert page.locator("#latex").inner_text() == "x x x x x x" and page.locator(".token").count() == 6
        page.locator(".token").nth(1).hover()
        page.wait_for_selector(".token.active", timeout=5_000)
        assert not errors, errors
