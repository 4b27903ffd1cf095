"""The contact sheet of a built split."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from maskmatch.data.sheet import draw_contact_sheet
from maskmatch.errors import UserError


def make_split(folder, n=5):
    (folder / "img").mkdir(parents=True)
    lines = []
    for i in range(n):
        image = np.zeros((40 + 10 * i, 60 + 200 * i), np.uint8)  # one wider than a cell
        image[10:-10, 10 : 20 + i] = 255
        Image.fromarray(image).save(folder / "img" / f"s{i}.png")
        lines.append(f"s{i}\t\\frac {{ a }} {{ b }} " + "+ x " * 40 * i)  # long captions get cut
    (folder / "caption.txt").write_text("\n".join(lines) + "\n", "utf-8")


def test_draws_a_png(tmp_path):
    make_split(tmp_path / "split")
    out = tmp_path / "sheets" / "sheet.png"
    draw_contact_sheet(tmp_path / "split", out, n=4, seed=1)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 400 and im.height > 128
        pixels = np.asarray(im.convert("L"))
    assert (pixels == 255).any() and (pixels < 50).any()  # paper, and ink / captions


def test_more_samples_asked_than_there_are(tmp_path):
    make_split(tmp_path / "split", n=2)
    draw_contact_sheet(tmp_path / "split", tmp_path / "sheet.png", n=24)
    assert (tmp_path / "sheet.png").is_file()


def test_same_seed_same_sheet(tmp_path):
    make_split(tmp_path / "split", n=5)
    for name in ("a.png", "b.png"):
        draw_contact_sheet(tmp_path / "split", tmp_path / name, n=3, seed=7)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_missing_or_empty_split_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        draw_contact_sheet(tmp_path / "nowhere", tmp_path / "sheet.png")
    (tmp_path / "split").mkdir()
    with pytest.raises(UserError, match="caption.txt"):
        draw_contact_sheet(tmp_path / "split", tmp_path / "sheet.png")
    (tmp_path / "split" / "caption.txt").write_text("\n\n", "utf-8")
    with pytest.raises(UserError, match="no samples"):
        draw_contact_sheet(tmp_path / "split", tmp_path / "sheet.png")
    assert not (tmp_path / "sheet.png").exists()
