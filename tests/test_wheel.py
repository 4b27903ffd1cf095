"""The wheel a user would pip install carries everything: weights, presets, the page and KaTeX.

Built from this checkout with `pip wheel` (setuptools, no download), installed into a fresh venv whose only
other packages are this environment's dependencies (a .pth line: no torch download), then used there.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "src" / "maskmatch" / "assets" / "examples" / "img" / "UN_101_em_2.png"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; returns its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp.glob("maskmatch-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("maskmatch/assets/model.safetensors", "maskmatch/serve/static/index.html",
                   "maskmatch/serve/katex/katex.min.js", "maskmatch/serve/katex/LICENSE",
                   "maskmatch/presets/finetune-cpu.yaml"):
        assert needed in names, f"{needed} is not in the wheel"
    assert any(n.startswith("maskmatch/serve/katex/fonts/") for n in names)
    env = tmp / "venv"
    venv.create(env, with_pip=False)
    site = next(env.glob("lib/python*/site-packages"))
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", "utf-8")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, capture_output=True)
    return env / "bin"


def test_the_installed_wheel_recognizes_an_example(installed):
    where = subprocess.run([installed / "python", "-c", "import maskmatch; print(maskmatch.__file__)"],
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(installed.parent))  # the wheel's copy, not this checkout
    out = subprocess.run([installed / "maskmatch", "recognize", "--greedy", str(EXAMPLE)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{EXAMPLE}\t") and len(out.stdout.split("\t")[1].strip()) > 0


def test_the_installed_wheel_serves_the_page_with_katex(installed):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([installed / "maskmatch", "serve", "--port", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            try:
                health = urllib.request.urlopen(f"{base}/api/health", timeout=5).read().decode()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the server did not start: {server.stdout.read() if server.poll() is not None else ''}")
                time.sleep(0.5)
        assert '"katex":true' in health.replace(" ", "")
        assert urllib.request.urlopen(f"{base}/katex/katex.min.js", timeout=5).status == 200
        assert "app.js" in urllib.request.urlopen(f"{base}/", timeout=5).read().decode()
    finally:
        server.terminate()
        server.wait(timeout=30)
