"""A contact sheet: random samples of a built split tiled on one PNG, each captioned, for a look by eye; or,
from InkML files, each sampled expression's plain render beside its distorted variants (data/distort.py).

A split folder in the offline layout holds `caption.txt` (`name<TAB>space-separated tokens` a
line) and `img/<name>.png`.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from maskmatch.errors import UserError

CELL_W, CELL_H = 512, 128  # half the largest image; a larger one is shrunk to fit, a smaller one kept as is
GAP = 8  # px between cells and around the sheet
FONT_SIZE = 14


def read_captions(split_dir: Path) -> list[tuple[str, str]]:
    """(name, tokens) pairs of split_dir/caption.txt in file order; UserError if missing or empty."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise UserError(f"{split_dir} is not a folder")
    path = split_dir / "caption.txt"
    if not path.is_file():
        raise UserError(f"{path} not found: a split folder needs caption.txt and img/")
    pairs = []
    for line in path.read_text("utf-8").splitlines():
        name, _, tokens = line.partition("\t")
        if name.strip():
            pairs.append((name.strip(), tokens.strip()))
    if not pairs:
        raise UserError(f"{path} lists no samples")
    return pairs


def draw_contact_sheet(split_dir: Path, out: Path, n: int = 24, seed: int = 0) -> None:
    """Tiles n random samples (seeded) of split_dir, with their names and captions, on the PNG out."""
    split_dir, out = Path(split_dir), Path(out)
    pairs = read_captions(split_dir)
    picked = random.Random(seed).sample(pairs, min(n, len(pairs)))
    font = _font()
    line_h = FONT_SIZE + 4
    cols = min(len(picked), 4)
    rows = math.ceil(len(picked) / cols)
    cell_h = CELL_H + 2 * line_h
    sheet = Image.new("L", (GAP + cols * (CELL_W + GAP), GAP + rows * (cell_h + GAP)), 255)
    draw = ImageDraw.Draw(sheet)
    for i, (name, tokens) in enumerate(picked):
        x = GAP + (i % cols) * (CELL_W + GAP)
        y = GAP + (i // cols) * (cell_h + GAP)
        draw.rectangle((x, y, x + CELL_W - 1, y + CELL_H - 1), fill=200)  # the cell's frame of reference
        image = _load(split_dir / "img" / f"{name}.png")
        if image is None:
            draw.text((x + 4, y + 4), "(image missing)", fill=0, font=font)
        else:
            sheet.paste(image, (x, y))
        draw.text((x, y + CELL_H + 2), _fit_text(draw, name, font), fill=90, font=font)
        draw.text((x, y + CELL_H + 2 + line_h), _fit_text(draw, tokens, font), fill=0, font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def draw_variant_sheet(folder: Path, out: Path, n: int = 6, variants: int = 4, seed: int = 0) -> None:
    """n random InkML files (seeded) of folder, searched recursively, one row each: the plain render, then
    `variants` distorted ones (variant v drawn from seed v), on the PNG out."""
    from maskmatch.data.inkml import InkmlError, read_inkml
    from maskmatch.data.render import RenderConfig, render_strokes
    from maskmatch.data.variants import VariantConfig, render_variant

    files = sorted(Path(folder).rglob("*.inkml"))
    if not files:
        raise UserError(f"{folder}: no .inkml files (--variants draws from pen strokes)")
    rng, inks = random.Random(seed), []
    for path in rng.sample(files, len(files)):
        try:
            ink = read_inkml(path)
        except (InkmlError, ValueError):
            continue
        if ink.strokes:
            inks.append((path.stem, ink))
        if len(inks) == n:
            break
    font, line_h, base = _font(), FONT_SIZE + 4, RenderConfig()
    cols = variants + 1
    sheet = Image.new("L", (GAP + cols * (CELL_W + GAP), GAP + len(inks) * (CELL_H + line_h + GAP)), 255)
    draw = ImageDraw.Draw(sheet)
    for row, (name, ink) in enumerate(inks):
        y = GAP + row * (CELL_H + line_h + GAP)
        for v in range(cols):
            x = GAP + v * (CELL_W + GAP)
            image = render_strokes(ink.strokes, base) if v == 0 else render_variant(ink, base, VariantConfig(), None, v)
            draw.rectangle((x, y, x + CELL_W - 1, y + CELL_H - 1), fill=200)
            sheet.paste(_fit_cell(Image.fromarray(image)), (x, y))
            label = name if v == 0 else f"variant {v}"
            draw.text((x, y + CELL_H + 2), _fit_text(draw, label, font), fill=90 if v else 0, font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def _fit_cell(image: Image.Image) -> Image.Image:
    """image shrunk (never enlarged) to fit a cell."""
    k = min(1.0, CELL_W / image.width, CELL_H / image.height)
    if k < 1:
        size = (max(1, int(image.width * k)), max(1, int(image.height * k)))
        image = image.resize(size, Image.Resampling.BOX)
    return image


def _load(path: Path) -> Image.Image | None:
    """The image as 'L', shrunk (never enlarged) to fit a cell; None if it cannot be read."""
    try:
        with Image.open(path) as im:
            image = im.convert("L")
    except (OSError, ValueError):
        return None
    return _fit_cell(image)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=FONT_SIZE)  # Pillow's default font, scalable with FreeType
    except (TypeError, ValueError, OSError):
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font) -> str:
    """text, cut with an ellipsis to fit CELL_W px."""
    if draw.textlength(text, font=font) <= CELL_W:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits with "..."
        mid = (lo + hi + 1) // 2
        if draw.textlength(text[:mid] + "...", font=font) <= CELL_W:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "..."
