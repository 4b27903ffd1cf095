"""`maskmatch foreign`: real 2014 InkML drawn by plain PIL lines in each style, read as users' files by the shipped
model, the table beside our own renders."""

import io

import numpy as np
import pytest
from conftest import read_members
from PIL import Image

from maskmatch.cli import main
from maskmatch.data.build import build
from maskmatch.data.foreign import STYLES, pen_share, render_foreign
from maskmatch.data.inkml import read_inkml
from maskmatch.data.render import RenderConfig
from maskmatch.recognizer import Recognizer

pytestmark = pytest.mark.usefixtures("one_thread")
FILES = ["2014/18_em_0.inkml", "2014/18_em_1.inkml", "2014/18_em_10.inkml"]


@pytest.fixture(scope="module")
def source(crohme_archive, tmp_path_factory):
    root = tmp_path_factory.mktemp("source") / "crohme"
    for name, data in read_members(crohme_archive, FILES).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_styles_are_pure_functions_of_the_strokes_and_seed(source):
    strokes = read_inkml(source / FILES[0]).strokes
    for style in STYLES:
        data, suffix = render_foreign(strokes, style, seed=3)
        assert render_foreign(strokes, style, seed=3) == (data, suffix), style
        gray = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
        assert gray.min() < 128 < np.median(gray), style  # dark ink on light paper
    assert render_foreign(strokes, "thin")[1] == ".png" and render_foreign(strokes, "scan")[1] == ".jpg"
    with pytest.raises(ValueError, match="unknown style"):
        render_foreign(strokes, "crayon")


def test_pen_share_is_the_pen_over_the_symbol_size_in_the_canvas():
    """Two 100-unit boxes side by side, 50 units apart: symbols of 100 units (the box's side), an extent of 250 x 100
    units, so marker's canvas holds 464 / 250 px a unit and its 12 px pen is 12 / (464 / 250 * 100) of a symbol."""
    box = lambda x: np.array([[x, 0], [x + 100, 0], [x + 100, 100], [x, 100], [x, 0]], float)  # noqa: E731
    strokes = [box(0), box(150)]
    assert pen_share(strokes, "marker") == pytest.approx(12 / (464 / 250 * 100), rel=0.05)
    assert pen_share([s * 7 for s in strokes], "marker") == pytest.approx(pen_share(strokes, "marker"), rel=0.02)
    assert pen_share(strokes, "thin") < pen_share(strokes, "marker")


def test_the_table_sets_each_style_beside_our_own_renders(source, tmp_path, capsys):
    data = tmp_path / "data"
    build(source, data, workers=1, progress=False, render=Recognizer.load(device="cpu").render)
    keep, results = tmp_path / "renders", tmp_path / "results"
    argv = ["foreign", str(source), "--data", str(data), "--beam", "1", "--device", "cpu", "--keep", str(keep),
            "--out", str(results)]
    assert main(argv) == 0
    rows = [line for line in (results / "foreign.md").read_text("utf-8").splitlines() if line.startswith("| ")]
    styles = rows[1:6]
    assert [r.split(" | ")[0] for r in styles] == ["| ours", "| ours-as-files", "| thin", "| marker", "| scan"]
    assert all(r.split(" | ")[2] == "3" for r in styles)
    pens = [r for r in rows[6:] if not r.startswith("| images")]
    assert {r.split(" | ")[0][2:] for r in pens} == {"thin", "marker", "scan"}
    assert all(sum(int(r.split(" | ")[2]) for r in pens if r.startswith(f"| {s} ")) == 3 for s in ("thin", "scan"))
    assert len(list((keep / "scan" / "img").glob("*.jpg"))) == 3
    assert (keep / "thin" / "caption.txt").read_text("utf-8") == (data / "2014" / "caption.txt").read_text("utf-8")


def test_mistakes_are_one_line(source, tmp_path, capsys):
    assert main(["foreign", str(source), "--data", str(tmp_path)]) == 2
    assert "no built split" in capsys.readouterr().err
    (tmp_path / "2014").mkdir()
    (tmp_path / "2014" / "caption.txt").write_text("a\tx\n")
    assert main(["foreign", str(source), "--data", str(tmp_path), "--styles", "crayon"]) == 2
    assert "unknown style 'crayon'" in capsys.readouterr().err


def test_our_renders_must_be_at_the_models_scale(source, tmp_path, capsys):
    """Renders at another scale would be read as pictures, resized: not the model's own images to compare with."""
    build(source, tmp_path, workers=1, progress=False, render=RenderConfig())  # the default 40 px renders
    assert main(["foreign", str(source), "--data", str(tmp_path), "--device", "cpu"]) == 2
    assert "not built at the model's scale" in capsys.readouterr().err
