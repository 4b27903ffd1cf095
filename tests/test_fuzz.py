"""Property-based fuzzing (Hypothesis) of every parser of outside input: random input and mutations of real
files. Each call either succeeds or raises the declared error with a one-line message, within a time bound.

CI runs FUZZ_EXAMPLES examples per parser (MASKMATCH_FUZZ_EXAMPLES=N runs more); failures found become the
regression cases at the end of this file.
"""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from starlette.testclient import TestClient

from conftest import read_members
from maskmatch.data.images import load_image
from maskmatch.data.inkml import InkmlError, read_inkml
from maskmatch.data.latex import LatexError, normalize_latex
from maskmatch.data.bitmap import normalize_bitmap
from maskmatch.data.source import offline_split
from maskmatch.serve.app import create_app

FUZZ_EXAMPLES = int(os.environ.get("MASKMATCH_FUZZ_EXAMPLES", "2000"))
SECONDS = 2.0  # the most one call may take (a 2-core CI machine, Hypothesis' own overhead included)
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
INKML_FILE = "2016/UN_101_em_0.inkml"


def bounded(call, *errors):
    """Runs call(); a declared error must have a one-line message; either way within SECONDS."""
    start = time.perf_counter()
    try:
        call()
    except errors as e:
        message = str(e)
        assert message and "\n" not in message and len(message) < 500, repr(message)
    assert time.perf_counter() - start < SECONDS


@pytest.fixture(scope="module")
def real_inkml(crohme_archive) -> bytes:
    return read_members(crohme_archive, [INKML_FILE])[INKML_FILE]


@pytest.fixture(scope="module")
def real_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    pixels = (rng.random((40, 90)) > 0.9).astype(np.uint8) * 255
    out = []
    for form in ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, form)
        out.append(buffer.getvalue())
    return out


def mutate(data: bytes, draw) -> bytes:
    """Truncation, byte flips, a repeated slice, or an inserted run of one byte."""
    kind = draw(st.sampled_from(["truncate", "flip", "repeat", "insert"]))
    at = draw(st.integers(0, max(len(data) - 1, 0)))
    if kind == "truncate":
        return data[:at]
    if kind == "flip":
        flips = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)), min_size=1, max_size=8))
        out = bytearray(data)
        for i, x in flips:
            out[i] ^= x
        return bytes(out)
    if kind == "repeat":
        end = draw(st.integers(at, min(len(data), at + 200)))
        return data[:end] + data[at:end] * draw(st.integers(2, 50)) + data[end:]
    return data[:at] + bytes([draw(st.integers(0, 255))]) * draw(st.integers(1, 5000)) + data[at:]


# ---------------------------------------------------------------- the LaTeX normalizer

LATEX_PIECES = st.sampled_from(["{", "}", "^", "_", "\\frac", "\\sqrt", "[", "]", "x", "2", " ", "\\alpha", "\\",
                                "\\left(", "\\right.", "'", "\\prime", "\\mbox", "ABOVE", "\\limits", "$", "\\{"])


@FUZZ
@given(st.one_of(st.text(max_size=300), st.lists(LATEX_PIECES, max_size=120).map("".join)))
def test_latex_normalizer(text):
    bounded(lambda: normalize_latex(text), LatexError)


@pytest.mark.parametrize("text", ["{" * 10_000 + "x" + "}" * 10_000, "x^" * 5000 + "2", "\\sqrt" * 10_000,
                                  "\\frac{" * 3000, "x" * 200_000, "\\" + "a" * 100_000])
def test_latex_normalizer_extremes(text):
    bounded(lambda: normalize_latex(text), LatexError)


# ---------------------------------------------------------------- the InkML reader

@FUZZ
@given(st.data())
def test_inkml_reader_on_mutations(real_inkml, data):
    mutated = mutate(real_inkml, data.draw)
    bounded(lambda: read_inkml(mutated), InkmlError)


@FUZZ
@given(st.one_of(st.binary(max_size=2000), st.text(max_size=500).map(lambda t: t.encode("utf-8"))))
def test_inkml_reader_on_random_bytes(raw):
    bounded(lambda: read_inkml(raw), InkmlError)


@pytest.mark.parametrize("raw", [
    b"<ink>" + b"<traceGroup>" * 10_000 + b"</traceGroup>" * 10_000 + b"</ink>",
    b"<ink>" + b"<trace>1 2, 3 4</trace>" * 20_000 + b"</ink>",
    b"<ink><trace>1e308 1e308, -1e308 1e-308, 1e999 2</trace></ink>",
    b"<ink><trace>" + b"9" * 100_000 + b" 1</trace></ink>",
    "<ink><trace>1 2, 3 4</trace></ink>".encode("utf-16"),
    b"\xef\xbb\xbf<ink><trace>1 2, 3 4</trace></ink>",
    b'<?xml version="1.0" encoding="latin-1"?><ink><annotation type="truth">\xe9</annotation></ink>',
])
def test_inkml_reader_extremes(raw):
    bounded(lambda: read_inkml(raw), InkmlError)


# ---------------------------------------------------------------- the image loader and bitmap normalizer

@settings(FUZZ, max_examples=max(FUZZ_EXAMPLES // 4, 50))  # each decodes and normalizes an image: slower
@given(st.data())
def test_image_loader_on_mutations(real_images, data):
    mutated = mutate(data.draw(st.sampled_from(real_images)), data.draw)

    def load_and_normalize():
        normalize_bitmap(load_image(mutated))

    bounded(load_and_normalize, ValueError)


@FUZZ
@given(st.binary(max_size=3000))
def test_image_loader_on_random_bytes(raw):
    bounded(lambda: load_image(raw), ValueError)


@settings(max_examples=max(FUZZ_EXAMPLES // 10, 50), deadline=None, derandomize=True, database=None)
@given(st.integers(1, 300), st.integers(1, 300), st.sampled_from(["zeros", "ones", "noise", "one pixel"]))
def test_bitmap_normalizer_on_odd_arrays(height, width, kind):
    rng = np.random.default_rng(height * 1000 + width)
    image = {"zeros": np.zeros((height, width)), "ones": np.full((height, width), 255.0),
             "noise": rng.random((height, width)) * 255, "one pixel": np.pad([[255.0]], ((0, height - 1), (0, width - 1)))
             }[kind].astype(np.uint8)
    bounded(lambda: normalize_bitmap(image), ValueError)


# ---------------------------------------------------------------- the API's strokes JSON

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner,
                                                                                         max_size=4), max_leaves=40)
POINTS = st.lists(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30)),
                           min_size=0, max_size=3), max_size=30)


@pytest.fixture(scope="module")
def client():
    from test_serve import writer_recognizer

    with TestClient(create_app(writer_recognizer(), beam_size=1, katex=False), raise_server_exceptions=False, base_url="http://127.0.0.1") as c:
        yield c


def answered(client, body: bytes):
    start = time.perf_counter()
    r = client.post("/api/recognize", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code in (200, 400, 413, 415, 422), (r.status_code, r.text[:200])
    if r.status_code != 200:
        message = r.json()["error"]
        assert message and "\n" not in message and len(message) < 500
    assert time.perf_counter() - start < 5 * SECONDS  # a recognition included


@settings(max_examples=max(FUZZ_EXAMPLES // 4, 50), deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.one_of(JSON_VALUES.map(lambda v: {"strokes": v}), JSON_VALUES,
                 st.lists(POINTS, max_size=6).map(lambda s: {"strokes": s}),
                 st.fixed_dictionaries({"strokes": st.lists(POINTS, max_size=3), "beam": JSON_VALUES,
                                        "attention": JSON_VALUES})))
def test_api_strokes_json(client, body):
    answered(client, json.dumps(body, allow_nan=True).encode())


@settings(max_examples=max(FUZZ_EXAMPLES // 4, 50), deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=500))
def test_api_raw_bytes_as_json(client, raw):
    answered(client, raw)


def test_api_deep_json(client):
    answered(client, b'{"strokes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


# ---------------------------------------------------------------- the offline layout's caption.txt

@FUZZ
@given(st.lists(st.one_of(st.text(max_size=60), st.sampled_from(["a\tx ^ 2", "a\tdup", "b c d", "\t", " "])),
                max_size=30))
def test_caption_reader(tmp_path_factory, lines):
    folder = tmp_path_factory.mktemp("split", numbered=True)
    (folder / "img").mkdir()
    Image.new("L", (8, 8)).save(folder / "img" / "a.png")
    (folder / "caption.txt").write_text("\n".join(lines), "utf-8", errors="surrogatepass")
    split = bounded_split(folder)
    assert all(item.path.is_file() for item in split.items)
    assert len({item.name for item in split.items}) == len(split.items)


def bounded_split(folder):
    start = time.perf_counter()
    split = offline_split(folder)
    assert time.perf_counter() - start < SECONDS
    return split
