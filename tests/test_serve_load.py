"""A bounded load test on loopback (200 requests, 8 at a time) against the tiny random model: it reports
requests per second and p95 latency as a benchmark (printed, never asserted) and checks every answer."""

from __future__ import annotations

import json
import time

from maskmatch.cli import main
from maskmatch.serve.app import create_app
from maskmatch.serve.load import format_result, load_test, loopback, strokes_body
from maskmatch.serve.server import BackgroundServer
from maskmatch.weights import save_weights
from test_serve import tiny_model, writer_recognizer


def test_load_on_loopback(capsys):
    with BackgroundServer(create_app(writer_recognizer(), beam_size=1, workers=1, queue=8, katex=False)) as url:
        result = load_test(url, strokes_body(), "application/json", requests=200, concurrency=8)
    assert result["statuses"] == {"200": 200}  # 8 in flight fit 1 worker + a queue of 8: none refused
    assert result["rps"] > 0 and 0 < result["p50_ms"] <= result["p95_ms"] <= result["max_ms"]
    with capsys.disabled():
        print("\n" + format_result(result, "benchmark: tiny random model, greedy, 1 worker"))


def test_a_flood_beyond_the_queue_is_refused_with_429():
    """More requests in flight than workers + queue: the surplus is refused at once with 429, not queued."""
    recognizer = writer_recognizer()
    decode = recognizer.decode
    recognizer.decode = lambda *a, **k: (time.sleep(0.05), decode(*a, **k))[1]  # a slower model
    with BackgroundServer(create_app(recognizer, beam_size=1, workers=1, queue=0, katex=False)) as url:
        result = load_test(url, strokes_body(), "application/json", requests=40, concurrency=8)
    assert sum(result["statuses"].values()) == 40 and set(result["statuses"]) == {"200", "429"}
    assert loopback("http://localhost:1/")[:2] == ("localhost", 1)


def test_load_command_writes_json(tmp_path, capsys):
    model = tmp_path / "tiny.safetensors"
    save_weights(model, tiny_model(), {"command": "test"})
    out = tmp_path / "load.json"
    assert main(["serve-load", "--model", str(model), "-n", "16", "-c", "4", "--beam", "1", "--json", str(out)]) == 0
    assert "16 requests, 4 at a time" in capsys.readouterr().out
    assert json.loads(out.read_text())["statuses"] == {"200": 16}


def test_a_short_soak_gets_every_expected_answer(tmp_path, capsys):
    """The soak's mix on the tiny model for a few seconds: each kind gets its status (200, 400, 413), no 5xx, no
    reset connection, and the table has a row per window with the server's memory."""
    from importlib import resources
    from pathlib import Path

    from maskmatch.serve.soak import format_soak, request_mix, soak

    image = sorted(Path(str(resources.files("maskmatch").joinpath("assets", "examples", "img"))).glob("*.png"))[0]
    with BackgroundServer(create_app(writer_recognizer(), beam_size=1, workers=1, queue=8, katex=False)) as url:
        result = soak(url, 0.08, image.read_bytes(), concurrency=2, windows=3)
    assert result["server_errors"] == 0 and result["unexpected"] == 0, result["statuses"]
    kinds = {k.name for k in request_mix(b"")}
    assert {key.split(" -> ")[0] for key in result["statuses"]} == kinds
    assert "over the limit -> 413" in result["statuses"] and "malformed JSON -> 400" in result["statuses"]
    assert len(result["windows"]) == 3 and all(w["rss_mib"] for w in result["windows"])
    assert "| window | until (s) |" in format_soak(result, "test")


def test_soak_command_writes_its_table(tmp_path, capsys):
    model = tmp_path / "tiny.safetensors"
    save_weights(model, tiny_model(), {"command": "test"})
    table = tmp_path / "soak.md"
    assert main(["serve-load", "--model", str(model), "--beam", "1", "--soak", "0.05", "-c", "2",
                 "--markdown", str(table)]) == 0
    text = table.read_text()
    assert text.startswith("# Soak") and "5xx: 0; answers other than expected: 0" in text
