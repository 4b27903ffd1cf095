"""The JSON API of `maskmatch serve`: answers, per-token attention, limits and errors, static files, the CLI.
A tiny random model answers; `writer_recognizer` is one biased to always write "x x x x x x"."""

from __future__ import annotations

import http.client
import io
import json
import logging
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

from test_recognize import crosses

from maskmatch.cli import main
from maskmatch.data.inkml import read_inkml
from maskmatch.data.render import RenderConfig, place_strokes, render_strokes
from maskmatch.data.vocab import EOS, Vocabulary
from maskmatch.model import HMERModel, ModelConfig
from maskmatch.recognizer import Recognizer
from maskmatch.serve.app import KATEX, create_app, katex_folder
from maskmatch.serve.load import SAMPLE_STROKES
from maskmatch.serve.server import BackgroundServer
from maskmatch.weights import save_weights

INKML = """<ink xmlns="http://www.w3.org/2003/InkML">
<trace>0 0, 10 10</trace>
<trace>10 0, 0 10</trace>
<trace>14 -6, 18 -6, 14 -1, 18 -1</trace>
</ink>"""
INK_STROKES = [[[0, 0], [10, 10]], [[10, 0], [0, 10]], [[14, -6], [18, -6], [14, -1], [18, -1]]]  # the same traces


def tiny_model(max_len: int = 6) -> HMERModel:
    torch.manual_seed(0)
    return HMERModel(ModelConfig.tiny(max_len=max_len))


def writer_recognizer() -> Recognizer:
    """A tiny random model told to write x at every step and never stop: the grammar ends its answer at
    max_len - 1 tokens, always 'x x x x x x'."""
    model = tiny_model(max_len=7)
    vocabulary = Vocabulary.load()
    with torch.no_grad():
        model.decoder.head.bias[EOS] = -100.0
        model.decoder.head.bias[vocabulary.encode(["x"])[0]] = 100.0
    return Recognizer(model, vocabulary, RenderConfig())


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_weights(path, tiny_model(), {"command": "test"})
    return path


@pytest.fixture(scope="module")
def recognizer(model_path) -> Recognizer:
    return Recognizer.load(model_path)


@pytest.fixture(scope="module")
def client(recognizer):
    with TestClient(create_app(recognizer, beam_size=2), raise_server_exceptions=False, base_url="http://127.0.0.1") as c:
        yield c


def png(strokes=INK_STROKES) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(255 - render_strokes([np.array(s, float) for s in strokes])).save(buffer, "PNG")  # dark on white
    return buffer.getvalue()


# ---------------------------------------------------------------- answers


def test_strokes_answer_like_the_recognizer_on_the_same_inkml(client, recognizer):
    r = client.post("/api/recognize", json={"strokes": INK_STROKES})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"latex", "tokens", "mathml", "score", "confidence", "alternatives", "warnings", "ms"}
    assert body["warnings"] == []  # strokes are drawn by the renderer the model trained on
    assert body["mathml"].startswith("<math")
    assert body["confidence"] is None and body["alternatives"][0]["latex"] == body["latex"]
    assert 1 <= len(body["alternatives"]) <= 2  # the beam's (size 2) answers, best first
    assert body["latex"] == " ".join(body["tokens"]) and body["ms"] > 0
    expected = recognizer.recognize(INKML.encode(), beam_size=2)  # the InkML training renderer
    assert body["tokens"] == expected.tokens and body["score"] == round(expected.score, 4)
    assert np.array_equal(recognizer.preprocess(INK_STROKES), render_strokes(read_inkml(INKML.encode()).strokes))


def test_image_upload_answers_like_the_recognizer(client, recognizer):
    data = png()
    r = client.post("/api/recognize", files={"file": ("x2.png", data, "image/png")})
    assert r.status_code == 200
    assert r.json()["tokens"] == recognizer.recognize(data, beam_size=2).tokens
    greedy = client.post("/api/recognize?beam=1", files={"file": ("x2.png", data)}).json()
    assert greedy["tokens"] == recognizer.recognize(data, beam_size=1).tokens
    thick = io.BytesIO()
    crosses(24).save(thick, "PNG")  # a pen thick for the writing: the answer says so
    warnings = client.post("/api/recognize", files={"file": ("thick.png", thick.getvalue())}).json()["warnings"]
    assert warnings == recognizer.recognize(crosses(24), beam_size=2).warnings and "pen is thick" in warnings[0]


def test_health(client):
    r = client.get("/api/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["beam"] == 2


@pytest.mark.parametrize("beam", [1, 2])
def test_attention_maps_each_token_and_leaves_the_answer_unchanged(client, recognizer, beam):
    plain = client.post("/api/recognize", json={"strokes": SAMPLE_STROKES, "beam": beam}).json()
    body = client.post("/api/recognize", json={"strokes": SAMPLE_STROKES, "beam": beam, "attention": True}).json()
    assert (body["tokens"], body["score"]) == (plain["tokens"], plain["score"])
    att = body["attention"]
    image = recognizer.preprocess(SAMPLE_STROKES)
    assert (att["rows"], att["cols"]) == (-(-image.shape[0] // 16), -(-image.shape[1] // 16))
    assert len(att["maps"]) == len(body["tokens"])
    for m in att["maps"]:
        assert len(m) == att["rows"] * att["cols"] and abs(sum(m) - 1) < 1e-3
    # the grid covers the ink: every pen point falls inside it, 16 px cells of the normalized image
    g, points = att["grid"], np.concatenate([np.array(s, float) for s in SAMPLE_STROKES])
    assert (points >= [g["x"], g["y"]]).all()
    assert (points <= [g["x"] + att["cols"] * g["cell"], g["y"] + att["rows"] * g["cell"]]).all()
    upload = client.post("/api/recognize", files={"file": ("x.png", png())}, data={"attention": "true"}).json()
    assert upload["attention"]["image"].startswith("data:image/png;base64,")
    assert upload["attention"]["grid"] == {"x": 0.0, "y": 0.0, "cell": 16.0}


@pytest.mark.parametrize("strokes", [INK_STROKES, SAMPLE_STROKES, [[[0, 0], [300, 2]]], [[[0, 0], [1, 40], [2, 80]]],
                                     [[[i * 20, 0], [i * 20 + 10, 10]] for i in range(60)]])
def test_the_render_says_where_it_drew_the_points(strokes):
    """Pen points mapped through `place_strokes`' placement land on the rendered ink's extent: the ink reaches
    half a pen width past them (and a pixel of anti-aliasing); the same image as `render_strokes`."""
    arrays = [np.array(s, float) for s in strokes]
    image, p = place_strokes(arrays)
    assert np.array_equal(image, render_strokes(arrays))
    points = np.concatenate(arrays) * p.scale + [p.x, p.y]  # (n, 2) image pixels, x then y
    rows, cols = np.nonzero(image.any(1))[0], np.nonzero(image.any(0))[0]
    half = RenderConfig().stroke_width / 2
    np.testing.assert_allclose(points.min(0) - half, [cols[0], rows[0]], atol=1.0)
    np.testing.assert_allclose(points.max(0) + half, [cols[-1] + 1, rows[-1] + 1], atol=1.0)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, status, message", [
    (dict(content=b'{"strokes": [[[0, 0]', headers={"content-type": "application/json"}), 400, "bad JSON"),
    (dict(files={"file": ("a.png", b"\x89PNG garbage" * 20)}), 400, "not a readable image"),
    (dict(files={"file": ("a.png", b"")}), 400, "empty"),
    (dict(json={"strokes": []}), 422, "no ink"),
    (dict(json={"strokes": [[], []]}), 422, "no ink"),
    (dict(json={"strokes": [[[0, 0, 1]]]}), 422, "stroke 0"),
    (dict(json={"strokes": [[["a", 1]]]}), 422, "stroke 0"),
    (dict(json={"strokes": "x"}), 422, "expected"),
    (dict(json=[1, 2]), 422, "expected"),
    (dict(json={"strokes": INK_STROKES, "beam": 0}), 422, "beam"),
    (dict(json={"strokes": INK_STROKES, "beam": "many"}), 422, "beam"),
    (dict(json={"strokes": INK_STROKES, "attention": "maybe"}), 422, "attention"),
    (dict(json={"strokes": INK_STROKES, "beam": {"k" * 900: [1] * 900}}), 422, "beam"),  # quoted short
    (dict(data={"beam": "1"}, files={"other": ("a.png", b"x")}), 422, "field 'file'"),
    (dict(content=b"x", headers={"content-type": "text/plain"}), 415, "send JSON"),
])
def test_bad_requests_get_a_json_error(client, kwargs, status, message):
    r = client.post("/api/recognize", **kwargs)
    error = r.json()["error"]
    assert r.status_code == status and message in error and "\n" not in error and len(error) < 200


def test_bodies_over_10_mb_get_413(client):
    big = b"[" + b" " * (10 * 1024 * 1024) + b"]"
    r = client.post("/api/recognize", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over" in r.json()["error"]
    chunked = (b" " * (1024 * 1024) for _ in range(12))  # no Content-Length: counted as it arrives
    r = client.post("/api/recognize", content=chunked, headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/api/recognize", files={"file": ("big.png", b"\0" * (10 * 1024 * 1024 + 10))})
    assert r.status_code == 413


def test_a_bug_is_a_json_500_not_a_traceback(recognizer, monkeypatch, caplog):
    app = create_app(recognizer, katex=False)
    monkeypatch.setattr(recognizer, "decode", lambda *a, **k: 1 / 0)
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as c:
        r = c.post("/api/recognize", json={"strokes": INK_STROKES})
    assert r.status_code == 500 and r.json() == {"error": "internal error: ZeroDivisionError"}


def test_a_full_queue_answers_429(recognizer, monkeypatch):
    """One worker, no queue: while a request is being decoded, the next one is refused at once."""
    started, release = threading.Event(), threading.Event()
    decode = recognizer.decode

    def slow(*args, **kwargs):
        started.set()
        release.wait(30)
        return decode(*args, **kwargs)

    monkeypatch.setattr(recognizer, "decode", slow)
    body = json.dumps({"strokes": INK_STROKES}).encode()
    with BackgroundServer(create_app(recognizer, workers=1, queue=0, katex=False)) as url:
        port = int(url.rsplit(":", 1)[1])

        def post() -> tuple[int, dict]:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("POST", "/api/recognize", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, json.loads(r.read())

        first = []
        thread = threading.Thread(target=lambda: first.append(post()))
        thread.start()
        assert started.wait(30)
        status, answer = post()
        assert status == 429 and "busy" in answer["error"]
        release.set()
        thread.join(30)
        assert first[0][0] == 200 and post()[0] == 200


def test_static_files_cannot_escape_their_folder(recognizer):
    """Raw request lines (no client-side path clean-up) against a live server."""
    with BackgroundServer(create_app(recognizer)) as url:
        port = int(url.rsplit(":", 1)[1])
        for path in ["/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/%2e%2e%2f%2e%2e%2fcli.py",
                     "/static/....//app.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/katex/../../package.json",
                     "/static/..\\app.py"]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            assert answer.split(b" ")[1] in (b"400", b"404"), (path, answer[:100])
            assert b"create_app" not in answer and b"root:" not in answer
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /static/app.js HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert s.recv(64).split(b" ")[1] == b"200"


def test_page_and_missing_katex(recognizer, caplog):
    with caplog.at_level(logging.WARNING, logger="maskmatch.serve"):
        app = create_app(recognizer, katex=False)
    assert "KaTeX not found" in caplog.text and "MASKMATCH_KATEX" in caplog.text
    with TestClient(app, base_url="http://127.0.0.1") as c:
        page = c.get("/")
        assert page.status_code == 200 and "/static/app.js" in page.text
        assert c.get("/katex/katex.min.js").status_code == 404 and c.get("/static/style.css").status_code == 200
        assert c.get("/api/health").json()["katex"] is False


def test_katex_is_vendored_in_the_package(recognizer, monkeypatch):
    """The page's preview needs no npm: the package carries KaTeX's script, style and the fonts the style names."""
    monkeypatch.delenv("MASKMATCH_KATEX", raising=False)
    assert katex_folder() == KATEX
    with TestClient(create_app(recognizer), base_url="http://127.0.0.1") as c:
        assert c.get("/katex/katex.min.js").status_code == 200 and c.get("/api/health").json()["katex"] is True
        css = c.get("/katex/katex.min.css").text
        fonts = re.findall(r"url\((fonts/[^)]+\.woff2)\)", css)
        assert len(fonts) > 10 and all(c.get(f"/katex/{f}").status_code == 200 for f in fonts)
        assert c.get("/nowhere").json() == {"error": "Not Found"}


# ---------------------------------------------------------------- the commands


def test_serve_without_weights_is_one_line(no_shipped_model, capsys):
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no shipped weights" in err and "--model" in err


def test_serve_reports_a_busy_port_and_a_missing_model(model_path, tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--model", str(model_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err
    assert main(["serve", "--port", "0", "--model", str(tmp_path / "missing.safetensors")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_load_test_refuses_other_hosts(model_path, capsys):
    assert main(["serve-load", "--url", "http://192.0.2.1:8000", "--model", str(model_path)]) == 2
    assert "only targets loopback" in capsys.readouterr().err


def test_oversized_upload_reads_as_413_to_clients_that_send_everything_first(recognizer):
    """urllib sends a whole 30 MB body before it reads the answer: the server drains it (bounded) and answers
    413, instead of closing while the client is still sending (which read as a reset connection)."""
    import urllib.error
    import urllib.request

    body = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n\r\n" + b"\0" * (30 << 20)
    body += b"\r\n--b--\r\n"
    with BackgroundServer(create_app(recognizer, katex=False)) as url:
        request = urllib.request.Request(f"{url}/api/recognize", data=body,
                                         headers={"Content-Type": "multipart/form-data; boundary=b"})
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=30)
        assert error.value.code == 413 and "over" in json.loads(error.value.read())["error"]


def test_oversized_upload_reads_as_413_with_requests(recognizer):
    """requests, like urllib, sends the whole body first: it too reads the 413."""
    import requests

    with BackgroundServer(create_app(recognizer, katex=False)) as url:
        r = requests.post(f"{url}/api/recognize", files={"file": ("big.png", b"\0" * (30 << 20))}, timeout=60)
    assert r.status_code == 413 and "over" in r.json()["error"]


def raw_request(port: int, head: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(head)
    return s


def test_slow_bodies_and_leavers_hold_nothing(recognizer, caplog):
    """A body trickling in gets 408 when its time is up and never holds the one inference worker; a client that
    leaves mid-body is dropped without an error in the log; meanwhile normal requests are answered at once."""
    body = json.dumps({"strokes": INK_STROKES}).encode()
    head = (b"POST /api/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    import requests

    with caplog.at_level(logging.ERROR), BackgroundServer(create_app(recognizer, workers=1, queue=0, katex=False,
                                                                      body_seconds=1.5)) as url:
        port = int(url.rsplit(":", 1)[1])
        slow = [raw_request(port, head + body[:10]) for _ in range(5)]  # 5 uploads that stall
        leaver = raw_request(port, head + body[:10])
        leaver.close()
        start = time.perf_counter()
        r = requests.post(f"{url}/api/recognize", json={"strokes": INK_STROKES}, timeout=30)
        assert r.status_code == 200 and time.perf_counter() - start < 2.0 + 1.0  # 2 s plus its own work
        for s in slow:
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408") and b"not received within 1.5 s" in answer
            s.close()
        assert requests.get(f"{url}/api/health", timeout=5).json()["max_body"] == 10 * 1024 * 1024
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_flood_of_connections_beyond_the_limit_gets_503(recognizer):
    """More connections at once than the server takes: the surplus is answered 503 at once, the rest served."""
    import requests

    with BackgroundServer(create_app(recognizer, katex=False), max_connections=4) as url:
        port = int(url.rsplit(":", 1)[1])
        held = [raw_request(port, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n") for _ in range(4)]  # headers unfinished
        time.sleep(0.3)
        assert requests.get(f"{url}/api/health", timeout=5).status_code == 503
        for s in held:
            s.close()
        time.sleep(0.3)
        assert requests.get(f"{url}/api/health", timeout=5).status_code == 200


def test_the_server_stays_local(recognizer):
    """A foreign Host header (DNS rebinding) gets 400; every answer carries a CSP without inline script; no CORS
    header unless an origin is allowed; an address other machines reach gets a warning."""
    from maskmatch.serve.local import CSP, allowed_hosts, exposure_warning, host_name

    app = create_app(recognizer, katex=False)
    with TestClient(app, base_url="http://evil.example:8000") as c:
        r = c.get("/api/health")
        assert r.status_code == 400 and "'evil.example' is not allowed" in r.json()["error"]
    for base in ("http://localhost:8000", "http://127.0.0.1", "http://[::1]:8000"):
        with TestClient(app, base_url=base) as c:
            page = c.get("/", headers={"Origin": "http://evil.example"})
            assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
            assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP.split("script-src")[1].split(";")[0]
            assert "access-control-allow-origin" not in page.headers
    with TestClient(create_app(recognizer, katex=False, allow_origins=("http://localhost:3000",)),
                    base_url="http://localhost") as c:
        r = c.get("/api/health", headers={"Origin": "http://localhost:3000"})
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert allowed_hosts("127.0.0.1") == ("localhost", "127.0.0.1", "::1")
    assert allowed_hosts("192.168.1.5", ["pc.lan"]) == ("localhost", "127.0.0.1", "::1", "192.168.1.5", "pc.lan")
    assert allowed_hosts("0.0.0.0") is None and host_name("[::1]:80") == "::1" and host_name("A.B:1") == "a.b"
    assert exposure_warning("127.0.0.1") is None and "other machines" in exposure_warning("0.0.0.0")
