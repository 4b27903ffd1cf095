"""The renderer: pen strokes and foreign bitmaps meet in one image distribution."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from maskmatch.data import bitmap, render
from maskmatch.data.bitmap import normalize_bitmap
from maskmatch.data.render import RenderConfig, render_strokes, size_statistic

CFG = RenderConfig()


def _arc(cx, cy, rx, ry, a0, a1, n=24):
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _line(*xy):
    return np.array(xy, float).reshape(-1, 2)


def expression(x0: float = 0.0) -> list[np.ndarray]:
    """Handwriting-like strokes of "o + x = 2 ." in pen units (~36 a symbol, y down), spaced."""
    return [
        _arc(x0 + 18, 18, 15, 18, 0.3, 2 * np.pi + 0.5),  # o, with an overshoot
        _line(x0 + 60, 19, x0 + 92, 17),  # +
        _line(x0 + 75, 2, x0 + 77, 35),
        _line(x0 + 115, 4, x0 + 123, 15, x0 + 140, 34),  # x, two crossing strokes
        _line(x0 + 140, 3, x0 + 114, 35),
        _line(x0 + 165, 10, x0 + 197, 11),  # =
        _line(x0 + 166, 25, x0 + 198, 24),
        np.vstack([_arc(x0 + 236, 12, 13, 11, np.pi, 2.2 * np.pi, 16), _line(x0 + 222, 36, x0 + 252, 35)]),  # 2
        _line(x0 + 262, 34),  # a dot: one point
    ]


def agreement(out: np.ndarray, ref: np.ndarray) -> float:
    """Share of ink pixels (>= 128) of each image lying within 1 px of the other's ink, after
    resizing out to ref's shape: 1.0 for the same drawing, ~0 for unrelated ones."""
    if out.shape != ref.shape:
        out = np.asarray(Image.fromarray(out).resize(ref.shape[::-1], Image.Resampling.BILINEAR))
    a, b = out >= 128, ref >= 128
    near_a, near_b = ndimage.binary_dilation(a, np.ones((3, 3))), ndimage.binary_dilation(b, np.ones((3, 3)))
    return ((a & near_b).sum() + (b & near_a).sum()) / (a.sum() + b.sum())


def assert_close(out: np.ndarray, ref: np.ndarray) -> None:
    """Same scale (shape within 5%) and the same drawing (agreement > 0.85)."""
    ratio = np.array(out.shape) / np.array(ref.shape)
    assert np.all(np.abs(ratio - 1) < 0.05), f"shape {out.shape} vs {ref.shape}"
    score = agreement(out, ref)
    assert score > 0.85, f"agreement {score:.2f}"


def photocopy(ref: np.ndarray, zoom=2.0, dilate=3, canvas=4, invert=True, jpeg=70) -> np.ndarray:
    """ref as a user's picture: zoomed, pen thickened by `dilate` px, in a canvas `canvas` times
    larger, black on white, JPEG-compressed."""
    size = (round(ref.shape[1] * zoom), round(ref.shape[0] * zoom))
    a = np.asarray(Image.fromarray(ref).resize(size, Image.Resampling.BILINEAR))
    if dilate:
        disc = np.hypot(*np.mgrid[-dilate : dilate + 1, -dilate : dilate + 1]) <= dilate
        a = ndimage.grey_dilation(a, footprint=disc)
    big = np.zeros((a.shape[0] * canvas, a.shape[1] * canvas), np.uint8)
    y, x = (big.shape[0] - a.shape[0]) // 3, (big.shape[1] - a.shape[1]) // 2
    big[y : y + a.shape[0], x : x + a.shape[1]] = a
    if invert:
        big = 255 - big
    if jpeg:
        buf = io.BytesIO()
        Image.fromarray(big).save(buf, "JPEG", quality=jpeg)
        big = np.asarray(Image.open(buf))
    return big


@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    return render_strokes(expression())


# ---------------------------------------------------------------- render_strokes


def test_scale_and_offset_do_not_change_the_image(ref):
    for k, offset in [(1000.0, (5e4, -300.0)), (1e-3, (0.5, 7.0)), (7.3, (-1e4, 1e4))]:
        other = render_strokes([s * k + offset for s in expression()])
        assert other.shape == ref.shape
        assert np.abs(other.astype(int) - ref).max() <= 1


def test_output_is_bright_ink_on_dark_padded_background(ref):
    assert ref.dtype == np.uint8 and ref.ndim == 2
    assert ref.max() == 255 and np.median(ref) == 0  # ink is bright and the minority
    p = CFG.padding
    for border in (ref[:p], ref[-p:], ref[:, :p], ref[:, -p:]):
        assert not border.any()
    assert ref[p].any() or ref[p + 1].any()  # cropped to the ink: it starts right after the padding
    assert ref.shape[0] <= CFG.max_height and ref.shape[1] <= CFG.max_width
    assert abs(size_statistic(ref >= 128, CFG.stroke_width) - CFG.symbol_size) < 2


def test_long_and_tall_expressions_are_scaled_down_not_dropped():
    long = [s for i in range(20) for s in expression(x0=300.0 * i)]
    image = render_strokes(long)
    assert CFG.max_width - 4 <= image.shape[1] <= CFG.max_width
    inner = image[:, CFG.padding : -CFG.padding]
    assert all(part.max() >= 128 for part in np.array_split(inner, 20, axis=1))  # all 20 copies are there
    tall = [s + (0.0, 60.0 * i) for i in range(10) for s in expression()]
    image = render_strokes(tall)
    assert image.shape[0] <= CFG.max_height and image.max() == 255


def test_a_single_point_is_a_visible_dot(ref):
    dot = render_strokes([np.array([[3.0, 4.0]])])
    assert dot.max() == 255 and dot.shape[0] < 2 * CFG.padding + 8
    without = render_strokes(expression()[:-1])
    count = lambda im: ndimage.label(im >= 128, np.ones((3, 3)))[1]  # noqa: E731
    assert count(ref) == count(without) + 1


def test_no_points_raises():
    for strokes in ([], [np.empty((0, 2))], [np.array([[np.nan, 1.0]])]):
        with pytest.raises(ValueError, match="no ink"):
            render_strokes(strokes)


# ---------------------------------------------------------------- normalize_bitmap


def test_a_render_is_nearly_a_fixed_point(ref):
    assert_close(normalize_bitmap(ref), ref)


@pytest.mark.parametrize(
    "variant",
    [
        dict(),  # 2x, pen 3 px thicker, 4x canvas, black on white, JPEG
        dict(zoom=0.7, dilate=0, jpeg=50),  # smaller and thin
        dict(zoom=3.0, dilate=4, invert=False, jpeg=0),  # white on black, thick
    ],
)
def test_users_pictures_meet_the_renders(ref, variant):
    assert_close(normalize_bitmap(photocopy(ref, **variant)), ref)


def test_a_pen_in_the_renders_range_is_kept_as_drawn(ref, monkeypatch):
    """A picture drawn with about the render's pen at its scale (a render saved and read back) is resampled with
    its anti-aliased edges; a pen twice as thick is redrawn along its ridge at the render's pen."""
    redraws = []
    redraw = bitmap._redraw
    monkeypatch.setattr(bitmap, "_redraw", lambda *args: redraws.append(args) or redraw(*args))
    assert_close(normalize_bitmap(ref), ref)
    assert_close(normalize_bitmap(photocopy(ref, zoom=1.0, dilate=0, canvas=2)), ref)
    assert not redraws
    assert_close(normalize_bitmap(photocopy(ref, zoom=1.0, dilate=2, canvas=2)), ref)
    assert len(redraws) == 1


def test_a_pen_that_merges_whole_words_is_measured_by_their_height():
    """A marker so thick for the writing that neighbouring symbols touch makes one wide component, whose width is no
    symbol's size: the pen share (what the thick-pen warning reads) takes the component's height instead. Thin
    writing and a lone flat bar (a minus sign, as tall as the pen) stay below THICK_PEN."""
    def crosses(pen: int, step: int) -> Image.Image:
        image = Image.new("L", (80 + 6 * step, 120), 255)
        draw = ImageDraw.Draw(image)
        for x in range(40, 40 + 6 * step, step):  # six crosses 20 px wide, 40 px tall
            draw.line([(x, 40), (x + 20, 80)], fill=0, width=pen)
            draw.line([(x + 20, 40), (x, 80)], fill=0, width=pen)
        return image

    merged = crosses(pen=16, step=24)  # 0.4 of a symbol: one component 150 px wide
    assert ndimage.label(np.asarray(merged) < 128, np.ones((3, 3)))[1] == 1
    assert bitmap.read_bitmap(merged)[1] > bitmap.THICK_PEN
    assert bitmap.read_bitmap(crosses(pen=3, step=60))[1] < bitmap.THICK_PEN
    bar = Image.new("L", (300, 60), 255)
    ImageDraw.Draw(bar).rectangle((40, 27, 260, 33), fill=0)
    assert bitmap.read_bitmap(bar)[1] < bitmap.THICK_PEN


def test_a_blot_of_a_thick_pen_keeps_its_body():
    """A marker thick for the writing merges strokes: two bars of an "=" become one blot. It is thinned by the
    pen's excess, not reduced to its medial ridge (a line, or a dot), so the model sees that it was two bars."""
    image = Image.new("L", (300, 120), 255)
    pen = ImageDraw.Draw(image)
    for x in (30, 60, 90, 220, 250):  # strokes 24 px tall of a 5 px pen: a fifth of the writing's size
        pen.line([(x, 48), (x + 8, 72)], fill=0, width=5)
    pen.rectangle((140, 54, 180, 66), fill=0)  # the blot, 40 x 12 px
    out, share = bitmap.read_bitmap(image)
    assert share > bitmap.THICK_PEN
    ink = out >= 128
    labels, _ = ndimage.label(ink, np.ones((3, 3)))
    boxes = ndimage.find_objects(labels)
    blot = max(boxes, key=lambda box: box[1].stop - box[1].start)  # the widest piece of ink
    height, width = blot[0].stop - blot[0].start, blot[1].stop - blot[1].start
    assert height / width > 0.15 and ink[blot].mean() > 0.8, (height, width)  # the ridge alone: 3 x 54 px


def test_the_check_fails_when_the_statistic_is_broken(ref, monkeypatch):
    picture = photocopy(ref, zoom=1.6, canvas=3)
    assert_close(normalize_bitmap(picture), ref)
    true_statistic = render.size_statistic
    for broken in (
        lambda mask, width: CFG.symbol_size,  # no rescaling at all
        lambda mask, width: true_statistic(mask, 0.0),  # no correction for the pen's thickness
    ):
        monkeypatch.setattr(bitmap, "size_statistic", broken)  # the name normalize_bitmap calls
        with pytest.raises(AssertionError):
            assert_close(normalize_bitmap(picture), ref)


def test_uneven_lighting_and_colour(ref):
    """A photo of paper: light falling off to one side, a shadow's edge, a warm tint, noise, JPEG."""
    size = (ref.shape[1] * 2, ref.shape[0] * 2)
    ink = np.asarray(Image.fromarray(ref).resize(size, Image.Resampling.BILINEAR))
    h, w = ink.shape[0] * 3, ink.shape[1] * 2
    page = np.zeros((h, w), np.float32)
    page[h // 3 : h // 3 + ink.shape[0], w // 4 : w // 4 + ink.shape[1]] = ink / 255
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    light = (0.35 + 0.6 * xx) * np.where(xx + 0.5 * yy > 0.8, 0.6, 1.0)  # falloff and a shadow
    rng = np.random.default_rng(0)
    gray = light * (0.9 - 0.75 * page) + 0.01 * rng.standard_normal((h, w))
    rgb = np.clip(np.stack([gray, 0.95 * gray, 0.8 * gray], axis=-1) * 255, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=75)
    assert_close(normalize_bitmap(Image.open(buf)), ref)


def test_image_modes_and_dtypes(ref):
    black_on_white = 255 - ref
    rgba = np.zeros((*ref.shape, 4), np.uint8)  # black ink, transparent paper
    rgba[..., 3] = ref
    inputs = [
        Image.fromarray(black_on_white),
        Image.fromarray(black_on_white).convert("1"),
        Image.fromarray(black_on_white).convert("RGB"),
        Image.fromarray(black_on_white).convert("P"),
        Image.fromarray(rgba, "RGBA"),
        Image.fromarray(ref.astype(np.uint16) * 257).convert("I;16"),
        ref.astype(np.float32) / 255,
        ref >= 128,
        np.repeat(black_on_white[..., None], 3, axis=2),
    ]
    for image in inputs:
        out = normalize_bitmap(image)
        assert out.dtype == np.uint8
        assert_close(out, ref)


def test_blank_and_tiny_images():
    rng = np.random.default_rng(0)
    paper = np.clip(200 + 3 * rng.standard_normal((300, 400)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(paper).save(buf, "JPEG", quality=60)
    for blank in (np.zeros((50, 80), np.uint8), np.full((50, 80), 255, np.uint8), Image.open(buf),
                  np.zeros((1, 1), np.uint8), np.zeros((0, 0), np.uint8)):
        with pytest.raises(ValueError, match="no ink found"):
            normalize_bitmap(blank)
    speck = np.zeros((2, 2), np.uint8)
    speck[1, 1] = 255
    out = normalize_bitmap(speck)  # one lit pixel of four: a dot
    assert out.dtype == np.uint8 and out.max() > 0
