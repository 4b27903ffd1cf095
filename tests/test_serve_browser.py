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


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1000, "height": 760})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
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
        pytest.fail("KaTeX is not installed: `make web` (npm ci --prefix web)")
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
