"""`maskmatch export --onnx` and `--runtime onnx`: the shipped model exported once, its answers compared with
torch's on the bundled examples, and the runtime's one-line errors."""

import json
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from maskmatch.cli import main  # noqa: E402
from maskmatch.recognizer import SHIPPED, Recognizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
EXAMPLES = Path(str(resources.files("maskmatch").joinpath("assets", "examples")))
WEIGHTS = Path(str(resources.files("maskmatch").joinpath("assets", SHIPPED)))  # exported: one model, or the
# shipped ensemble's first member


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "shipped"
    assert main(["export", "--onnx", "--out", str(out), "--check", str(EXAMPLES), "--check-count", "3",
                 "--beam", "3"]) == 0
    return out


def test_export_writes_graphs_and_a_checked_manifest(export):
    manifest = json.loads((export / "model.json").read_text())
    check = manifest["onnx"]["check"]
    assert (export / "encoder.onnx").is_file() and (export / "decoder.onnx").is_file()
    assert check["images"] == 3 and check["max_abs_diff_first_logprobs"] < 1e-3
    assert check["identical_outputs"] == {"greedy": 3, "beam 3": 3}


def test_onnx_runtime_answers_as_torch_on_every_example(export):
    images = sorted((EXAMPLES / "img").glob("*.png"))
    torch_rec, onnx_rec = Recognizer.load(WEIGHTS), Recognizer.load(export, runtime="onnx")
    for beam in (1, 5):  # a padded batch of different sizes, greedy and beam
        ours = onnx_rec.recognize_batch(images, beam_size=beam, n_best=2 if beam > 1 else 1)
        theirs = torch_rec.recognize_batch(images, beam_size=beam, n_best=2 if beam > 1 else 1)
        assert [r.latex for r in ours] == [r.latex for r in theirs]
        assert [[a.latex for a in r.alternatives] for r in ours] == [[a.latex for a in r.alternatives] for r in theirs]
        assert np.allclose([r.score for r in ours], [r.score for r in theirs], atol=1e-4)


def test_an_export_folder_picks_the_onnx_runtime_and_recognize_reads_it(export, capsys):
    assert type(Recognizer.load(export).model).__name__ == "OnnxModel"
    image = str(sorted((EXAMPLES / "img").glob("*.png"))[0])
    assert main(["recognize", image, "--model", str(export), "--greedy"]) == 0
    onnx_line = capsys.readouterr().out
    assert main(["recognize", image, "--model", str(WEIGHTS), "--greedy"]) == 0  # the weights it was exported from
    assert capsys.readouterr().out == onnx_line


def test_runtime_mistakes_are_one_line_errors(export, tmp_path, capsys):
    with pytest.raises(ValueError, match="export folder"):
        Recognizer.load(None, runtime="onnx")
    with pytest.raises(ValueError, match="onnx export"):
        Recognizer.load(export, runtime="torch")
    with pytest.raises(ValueError, match="not an onnx export"):
        (tmp_path / "encoder.onnx").write_bytes(b"")
        Recognizer.load(tmp_path, runtime="onnx")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in export.iterdir():
        (broken / f.name).write_bytes(f.read_bytes()[: 100] if f.name == "decoder_step.onnx" else f.read_bytes())
    with pytest.raises(ValueError, match="onnxruntime cannot load"):
        Recognizer.load(broken)
    with pytest.raises(ValueError, match="torch runtime"):
        Recognizer.load(export).recognize(sorted((EXAMPLES / "img").glob("*.png"))[0], attention=True)
    assert main(["export", "--out", str(tmp_path / "x")]) == 2
    assert "--onnx" in capsys.readouterr().err


def test_export_of_a_fused_model_matches_torch(tmp_path):
    """Token fusion adds memory rows below the map: the exported encoder carries it, sizes dynamic."""
    from maskmatch.export import export_onnx
    from maskmatch.model import HMERModel, ModelConfig
    from maskmatch.onnx_model import load_onnx

    torch.manual_seed(0)
    model = HMERModel(ModelConfig.tiny(fusion="tokens")).eval()
    export_onnx(model, {"model": asdict(model.config)}, tmp_path)
    onnx, _ = load_onnx(tmp_path)
    for H, W in ((48, 96), (80, 240)):
        images, mask = torch.rand(2, 1, H, W), torch.zeros(2, H, W, dtype=torch.bool)
        mask[1, H // 2:, W // 3:] = True
        with torch.inference_mode():
            expected = model.beam_search(images, mask, beam_size=3, max_len=12)
            got = onnx.beam_search(images, mask, beam_size=3, max_len=12)
        assert [h.ids for h in got] == [h.ids for h in expected]


def test_benchmark_times_an_export_with_onnxruntime(export, capsys):
    assert main(["benchmark", "--model", str(export), "--n", "2", "--repeats", "1", "--beam", "2",
                 "--batch", "2", "--preset", "tiny", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out.splitlines()[0] and "latency, batch of 1, beam 2" in out
    parameters = json.loads((export / "model.json").read_text())["weights"]["parameters"]  # the shipped model's
    assert "FLOPs: counted for the torch runtime only" in out and f"({parameters / 1e6:.1f} M parameters)" in out
