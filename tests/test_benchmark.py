"""`maskmatch benchmark` end to end on a tiny model, and its FLOP counting. Nothing here is timed."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from maskmatch.benchmark import inputs, measure
from maskmatch.cli import main
from maskmatch.model import HMERModel, ModelConfig

ROWS = [
    "latency, batch of 1, greedy",
    "latency, batch of 1, beam 3",
    "  encoder",
    "  decoder, per step (search included)",
    "  right-to-left rescoring",
    "throughput, batch of 2, greedy",
    "throughput, batch of 2, beam 3",
    "  all images, bucketed by size",
    "peak memory (process RSS, getrusage)",
    "encoder",
    "decoder, greedy (5 tok)",
    "decoder, beam 3 (5 tok)",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny run, shared by the tests: its printed report and its JSON."""
    out = tmp_path_factory.mktemp("benchmark") / "bench.json"
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = main(["benchmark", "--preset", "tiny", "--n", "2", "--beam", "3", "--batch", "2", "--repeats", "1",
                     "--tokens", "5", "--threads", "1", "--json", str(out)])
    assert torch.get_num_threads() == threads  # --threads is put back afterwards
    return code, printed.getvalue(), json.loads(out.read_text())


def test_prints_the_table(run):
    code, text, _ = run
    assert code == 0
    lines = text.splitlines()
    for row in ROWS:
        assert any(line.startswith(row) for line in lines), f"missing row {row!r}:\n{text}"
    assert "random initialization" in text and "forced to exactly 5 tokens" in text
    assert "2 synthetic expressions" in text and "1 threads" in text


def test_json_has_the_fields(run):
    _, _, r = run
    assert r["tokens"] == 5 and r["beam"] == 3 and r["batch"] == 2 and r["threads"] == 1
    assert r["images"]["count"] == 2 and r["images"]["median_height"] > 0
    for name in ("greedy", "beam"):
        lat = r["latency"][name]
        assert lat["ms"]["median"] > 0 and lat["ms"]["p90"] >= lat["ms"]["median"]
        assert lat["encoder_ms"]["median"] > 0 and lat["decoder_step_ms"]["median"] > 0
        assert lat["steps"] == 6 and lat["tokens"] == 5  # 5 tokens, then EOS
        assert r["throughput"][f"{name}_copies"] > 0 and r["throughput"][f"{name}_bucketed"] > 0
    assert r["latency"]["greedy"]["rescore_ms"] is None and r["latency"]["beam"]["rescore_ms"]["median"] > 0
    assert r["peak_rss_mib"] >= r["peak_rss_mib_batch1"] > 0
    assert r["matmul"]["gflops"] > 0
    for part in ("encoder", "greedy", "beam"):
        f = r["flops"][part]
        assert f["gflop"] > 0 and f["gflops"] > 0 and f["fraction_of_matmul"] > 0
    assert r["flops"]["beam"]["gflop"] > r["flops"]["greedy"]["gflop"]  # 3 beams and the rescoring
    assert r["flops"]["greedy_tokens"] == r["flops"]["beam_tokens"] == 5


def test_flops_scale_with_image_size():
    torch.manual_seed(0)
    model = HMERModel(ModelConfig.tiny()).eval()
    counts = []
    for h, w in ((32, 64), (64, 128)):
        image, mask = measure.one_batch([np.full((h, w), 255, np.uint8)])
        counts.append(measure.count_flops(model, image, mask, beam=2, tokens=4))
    small, large = counts
    for part in ("encoder", "greedy", "beam"):
        assert 0 < small[part] < large[part]
    assert 3.5 < large["encoder"] / small["encoder"] < 4.5  # 4x the pixels, ~4x the convolutions
    assert small["greedy_tokens"] == small["beam_tokens"] == 4


def test_forced_length_leaves_the_decoder_as_it_was():
    torch.manual_seed(0)
    model = HMERModel(ModelConfig.tiny()).eval()
    image, mask = measure.one_batch([np.full((32, 64), 255, np.uint8)])
    before = [h.ids for h in model.greedy(image, mask)]
    assert measure.decode(model, image, mask, beam=2, tokens=7)["tokens"] == [7]
    assert "step" not in vars(model.decoder)
    assert [h.ids for h in model.greedy(image, mask)] == before


def test_synthetic_expressions_are_rendered_images():
    images = inputs.synthetic_expressions(3, seed=1)
    assert len(images) == 3
    for image in images:
        assert image.dtype == np.uint8 and image.ndim == 2 and image.max() == 255 and image.shape[1] >= 16


def test_images_folder(tmp_path, capsys):
    from PIL import Image

    from maskmatch.data.render import RenderConfig

    ink = np.zeros((60, 120), np.uint8)
    ink[20:40, 10:110:12] = 255  # bars: dark ink on white once inverted by the file's polarity
    Image.fromarray(255 - ink).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images, ms = inputs.folder_images(tmp_path, 5, RenderConfig())
    assert len(images) == 1 and images[0].dtype == np.uint8 and ms >= 0
    assert main(["benchmark", "--preset", "tiny", "--images", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
