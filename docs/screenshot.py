"""Retakes docs/serve.png: `python docs/screenshot.py [--model PATH] [--token N]` (default: the shipped weights).

Starts `maskmatch serve`'s app on a loopback port, writes x^2 + y^2 on its canvas with mouse events in Debian's
chromium (Playwright, as tests/test_serve_browser.py does), points at token N and saves the page.
"""

import argparse
import math
from pathlib import Path

from playwright.sync_api import sync_playwright

from maskmatch.recognizer import Recognizer
from maskmatch.serve.app import create_app
from maskmatch.serve.server import BackgroundServer

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def arc(cx, cy, r, a0, a1, n=14):
    return [(cx + r * math.cos(math.radians(a0 + (a1 - a0) * i / n)), cy + r * math.sin(math.radians(a0 + (a1 - a0) * i / n)))
            for i in range(n + 1)]


def line(p, q, n=6):
    return [(p[0] + (q[0] - p[0]) * i / n, p[1] + (q[1] - p[1]) * i / n) for i in range(n + 1)]


def two(x, y):
    """A superscript 2 whose top-left is near (x, y)."""
    return arc(x + 14, y, 14, 200, 360) + line((x + 28, y), (x, y + 34))[1:] + line((x, y + 34), (x + 32, y + 34))[1:]


def strokes(ox=180, oy=150):
    """x^2 + y^2 in canvas pixels."""
    return [line((ox, oy), (ox + 50, oy + 70)), line((ox + 50, oy), (ox, oy + 70)), two(ox + 66, oy - 20),
            line((ox + 130, oy + 35), (ox + 180, oy + 35)), line((ox + 155, oy + 10), (ox + 155, oy + 60)),
            line((ox + 210, oy), (ox + 235, oy + 40)), line((ox + 260, oy), (ox + 225, oy + 95)), two(ox + 276, oy - 20)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="weights (default: the shipped ones)")
    parser.add_argument("--token", type=int, default=3, help="the token to point at (default 3)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("serve.png")))
    args = parser.parse_args()
    with BackgroundServer(create_app(Recognizer.load(args.model))) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 700}, device_scale_factor=1)
        page.goto(url)
        box = page.locator("#ink").bounding_box()
        for stroke in strokes():
            page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
            page.mouse.down()
            for x, y in stroke[1:]:
                page.mouse.move(box["x"] + x, box["y"] + y, steps=2)
            page.mouse.up()
        page.wait_for_selector("#preview .katex", timeout=20000)
        page.wait_for_timeout(300)
        print(page.locator("#latex").inner_text())
        page.locator(".token").nth(args.token).hover()
        page.wait_for_timeout(200)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
