"""`maskmatch attention`: the K maps and the per-token decoder attention drawn over an image."""

from importlib import resources
from pathlib import Path

import pytest
import torch
from PIL import Image

from maskmatch.attention_command import TITLE_HEIGHT
from maskmatch.cli import main
from maskmatch.model import HMERModel, ModelConfig
from maskmatch.recognizer import Recognizer
from maskmatch.weights import save_module_weights, save_weights

EXAMPLE = Path(str(resources.files("maskmatch").joinpath("assets", "examples", "img", "UN_452_em_637.png")))


@pytest.fixture(scope="module")
def fused(tmp_path_factory) -> HMERModel:
    torch.manual_seed(0)
    return HMERModel(ModelConfig.tiny(max_len=5, fusion="gate", attention_maps=3))


def sheet_height(path: Path) -> int:
    return Recognizer.load(path).preprocess(EXAMPLE).shape[0] + TITLE_HEIGHT


def test_a_fused_model_draws_its_maps_and_each_tokens_attention(fused, tmp_path, capsys):
    save_weights(tmp_path / "m.safetensors", fused)
    assert main(["attention", str(EXAMPLE), "--model", str(tmp_path / "m.safetensors"), "--out",
                 str(tmp_path / "maps.png"), "--beam", "1"]) == 0
    latex = capsys.readouterr().out.splitlines()[0]
    tokens = len(latex.split())
    rows = 1 + -(-(tokens + 1) // 4)  # the maps' sheet: image + 3 maps, one row; the tokens' sheet below
    height = Image.open(tmp_path / "maps.png").height
    image_height = sheet_height(tmp_path / "m.safetensors") - TITLE_HEIGHT
    assert tokens > 0 and height == rows * image_height + (rows - 2) * 4 + 2 * TITLE_HEIGHT


def test_a_stage_2_file_draws_the_maps_alone(fused, tmp_path, capsys):
    save_module_weights(tmp_path / "attend.safetensors", fused, ("encoder", "attention"))
    assert main(["attention", str(EXAMPLE), "--model", str(tmp_path / "attend.safetensors"), "--out",
                 str(tmp_path / "maps.png")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'maps.png'}"
    assert Image.open(tmp_path / "maps.png").size[1] > TITLE_HEIGHT


@pytest.mark.parametrize("case, message", [("encoder-only", "holds only the encoder"),
                                           ("jpg", "name it *.png"), ("missing-image", "missing.png")])
def test_mistakes_are_one_line(fused, tmp_path, capsys, case, message):
    model = tmp_path / "enc.safetensors"
    save_module_weights(model, fused, ("encoder",))
    image = tmp_path / "missing.png" if case == "missing-image" else EXAMPLE
    if case != "encoder-only":
        save_weights(model, fused)
    out = tmp_path / ("maps.jpg" if case == "jpg" else "maps.png")
    assert main(["attention", str(image), "--model", str(model), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
