"""Stroke distortions (data/distort.py): pure functions of the seed, scale-free, bounded; the variant sheet."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import read_members
from maskmatch.cli import main
from maskmatch.data.distort import DistortConfig, distort, pen_width, typical_extent

NONE = DistortConfig(stroke_rotation=0, stroke_scale=0, stroke_shift=0, elastic=0, rotation=0, slant=0, aspect=0,
                     pen=(1.0, 1.0))


def ink(scale: float = 1.0) -> list[np.ndarray]:
    """An 'x' (two crossing strokes, 40 points each), a dot, and a '-': pen units times scale."""
    t = np.linspace(0, 1, 40)[:, None]
    strokes = [np.hstack([t, t]) * 30, np.hstack([t, 1 - t]) * 30, np.array([[45.0, 15.0]]),
               np.hstack([60 + 25 * t, np.full_like(t, 15)])]
    return [s * scale for s in strokes]


def test_the_seed_decides_the_variant():
    a, b, c = distort(ink(), seed=3), distort(ink(), seed=3), distort(ink(), seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.allclose(x, z) for x, z in zip(a, c))
    assert [len(s) for s in a] == [len(s) for s in ink()]  # same strokes, same points
    assert pen_width(3.0, seed=5) == pen_width(3.0, seed=5) != pen_width(3.0, seed=6)


def test_no_ranges_no_change_and_the_input_is_left_alone():
    original = ink()
    out = distort(original, NONE, seed=1)
    assert all(np.allclose(x, y) for x, y in zip(out, ink()))
    assert all(np.array_equal(x, y) for x, y in zip(original, ink()))  # not modified in place
    assert pen_width(3.0, NONE, seed=1) == pytest.approx(3.0)


def test_ranges_are_in_stroke_extents_so_pen_resolution_does_not_matter():
    """CROHME's subsets record ink at scales ~10,000 times apart: the same seed distorts alike at any of them."""
    small, large = distort(ink(), seed=7), distort(ink(1000.0), seed=7)
    assert all(np.allclose(s * 1000, l, rtol=1e-9, atol=1e-6) for s, l in zip(small, large))
    assert typical_extent(ink(1000.0)) == pytest.approx(1000 * typical_extent(ink()))


def test_slant_alone_shifts_x_in_proportion_to_height():
    cfg = DistortConfig(**{**NONE.__dict__, "slant": 0.3})
    for seed in range(5):
        out = distort(ink(), cfg, seed)
        shifts = [(o[:, 0] - i[:, 0]) for o, i in zip(out, ink())]
        ys = np.concatenate([i[:, 1] for i in ink()])
        slope = np.polyfit(ys, np.concatenate(shifts), 1)[0]
        assert abs(slope) <= 0.3 + 1e-9 and np.allclose(np.concatenate([o[:, 1] for o in out]), ys)


def test_default_variants_stay_close_to_the_ink():
    """Variants move points by a fraction of a stroke extent, not across the expression."""
    unit = typical_extent(ink())
    for seed in range(20):
        moved = np.concatenate([np.linalg.norm(o - i, axis=1) for o, i in zip(distort(ink(), seed=seed), ink())])
        assert 0 < moved.max() < 0.5 * unit
        assert 0.6 * 3.0 <= pen_width(3.0, seed=seed) <= 1.4 * 3.0


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError):
        DistortConfig(rotation=-1)
    with pytest.raises(ValueError):
        DistortConfig(pen=(1.5, 1.0))


def test_variant_sheet_from_inkml(crohme_archive, tmp_path, capsys):
    names = ["train/MfrDB/MfrDB0104.inkml", "train/KAIST/KME1G3_0_sub_10.inkml", "train/expressmatch/101_Frank.inkml"]
    for name, data in read_members(crohme_archive, names).items():
        (tmp_path / "ink" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ink" / name).write_bytes(data)
    out = tmp_path / "variants.png"
    assert main(["data", "sheet", str(tmp_path / "ink"), "--variants", "3", "-n", "2", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.width > 4 * 512 and im.height > 2 * 128  # 2 rows of the plain render and 3 variants
    (tmp_path / "empty").mkdir()
    assert main(["data", "sheet", str(tmp_path / "empty"), "--variants", "3", "--out", str(out)]) == 2
    assert "no .inkml files" in capsys.readouterr().err


def test_symbol_jitter_moves_a_symbols_strokes_together():
    """With only the per-symbol jitter, the two strokes of the 'x' keep their relative geometry (one rigid
    similarity for both), and strokes outside every symbol stay where they were."""
    cfg = DistortConfig(**{**NONE.__dict__, "symbol_rotation": 10.0, "symbol_scale": 0.2, "symbol_shift": 0.2})
    out = distort(ink(), cfg, seed=2, symbols=[(0, 1)])
    before, after = np.vstack(ink()[:2]), np.vstack(out[:2])
    distances = lambda p: np.linalg.norm(p[:, None] - p[None], axis=2)  # noqa: E731
    ratio = distances(after)[distances(before) > 0] / distances(before)[distances(before) > 0]
    assert np.allclose(ratio, ratio[0]) and not np.allclose(after, before)
    assert all(np.allclose(o, i) for o, i in zip(out[2:], ink()[2:]))
    plain = distort(ink(), seed=9)  # without symbols the other steps draw the same numbers
    assert all(np.allclose(a, b) for a, b in zip(plain, distort(ink(), seed=9, symbols=[])))


def test_photographed_variants_come_back_in_the_render_distribution(crohme_archive):
    """photo_share 1: every variant is a picture (any size, pen, paper, blur, JPEG) read back by normalize_bitmap,
    so it meets the plain renders' scale; the seed decides it."""
    from maskmatch.data.inkml import read_inkml
    from maskmatch.data.render import RenderConfig, render_strokes
    from maskmatch.data.variants import VariantConfig, photographed, render_variant

    [data] = read_members(crohme_archive, ["2014/18_em_12.inkml"]).values()
    expression = read_inkml(data)
    render, config = RenderConfig(symbol_size=28, stroke_width=2.5), VariantConfig(count=1, photo_share=1.0)
    plain = render_strokes(expression.strokes, render)
    heights = []
    for seed in range(4):
        picture = np.asarray(photographed(expression.strokes, render, seed).convert("L"))
        assert np.median(picture) > 128  # dark ink on light paper, as a user's picture comes
        variant = render_variant(expression, render, config, None, seed)
        assert variant.dtype == np.uint8 and np.array_equal(variant, render_variant(expression, render, config, None, seed))
        heights.append(variant.shape[0] / plain.shape[0])
    assert 0.6 < np.median(heights) < 1.5, heights  # the size statistic brought every picture back to 28 px
    with pytest.raises(ValueError, match="photo share"):
        VariantConfig(photo_share=1.5)


def test_thick_pen_variants_merge_strokes_at_the_symbols_true_size(crohme_archive):
    """thick_share 1: every variant is a picture drawn with a marker (THICK_PENS of a symbol), read back by
    normalize_bitmap: its pen measures thick, yet the expression comes back at the plain render's scale (drawn
    with render_strokes' own thick pen, the merged blots would have shrunk it to a third)."""
    from maskmatch.data.bitmap import THICK_PEN, read_bitmap
    from maskmatch.data.inkml import read_inkml
    from maskmatch.data.render import RenderConfig, render_strokes
    from maskmatch.data.variants import VariantConfig, photographed, render_variant

    [data] = read_members(crohme_archive, ["2014/18_em_12.inkml"]).values()
    expression = read_inkml(data)
    render, config = RenderConfig(symbol_size=28, stroke_width=2.5), VariantConfig(count=1, thick_share=1.0)
    plain = render_strokes(expression.strokes, render)
    shares, heights = [], []
    for seed in range(4):
        image, share = read_bitmap(photographed(expression.strokes, render, seed, thick=True), render)
        shares.append(share)
        heights.append(image.shape[0] / plain.shape[0])
        assert np.array_equal(render_variant(expression, render, config, None, seed),
                              render_variant(expression, render, config, None, seed))
    assert np.median(shares) > 0.8 * THICK_PEN, shares  # thin pictures of this expression measure ~0.05
    assert 0.7 < np.median(heights) < 1.4, heights
    with pytest.raises(ValueError, match="thick share"):
        VariantConfig(photo_share=0.6, thick_share=0.6)
