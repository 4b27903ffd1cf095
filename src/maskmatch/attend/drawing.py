"""The K attention maps drawn over the image they were computed on (for `maskmatch attention IMAGE --out maps.png`)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from maskmatch.model.config import STRIDE

GAP = 4  # pixels between panels


def heat_colors(values: np.ndarray, colormap: str = "inferno") -> np.ndarray:
    """values (...) in [0, 1] -> RGB uint8 (..., 3) through a matplotlib colormap."""
    from matplotlib import colormaps  # imported here: only drawing needs matplotlib

    return (colormaps[colormap](np.clip(values, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)


def draw_maps(image: np.ndarray, maps: np.ndarray, columns: int = 4, alpha: float = 0.6,
              colormap: str = "inferno", labels: list[str] | None = None) -> Image.Image:
    """image (H, W) uint8, ink bright on 0, as the model read it; maps (K, h, w) on its encoder cells,
    h = ceil(H / 16), w = ceil(W / 16) (padding cropped) -> an RGB sheet of K + 1 panels, `columns` a row:
    the image, then each map (scaled to its own peak, upsampled bilinearly) blended over the image, labelled
    "map k" or by `labels` (one per map, e.g. the decoded tokens)."""
    H, W = image.shape
    K, h, w = maps.shape
    if (h, w) != (-(-H // STRIDE), -(-W // STRIDE)):
        raise ValueError(f"maps of {h}x{w} cells do not belong to an image of {H}x{W} pixels")
    if labels is not None and len(labels) != K:
        raise ValueError(f"{len(labels)} labels for {K} maps")
    if not 0 <= alpha <= 1 or columns < 1:
        raise ValueError("alpha must lie in [0, 1] and columns be positive")
    gray = np.repeat(image[..., None], 3, axis=2).astype(np.float32)  # (H, W, 3)
    panels = [Image.fromarray(gray.astype(np.uint8))]
    for k in range(K):
        peak = float(maps[k].max())
        scaled = (maps[k] / peak if peak > 0 else maps[k]).astype(np.float32)  # (h, w) in [0, 1]
        up = Image.fromarray(scaled).resize((w * STRIDE, h * STRIDE), Image.Resampling.BILINEAR)
        heat = heat_colors(np.asarray(up)[:H, :W], colormap).astype(np.float32)  # (H, W, 3)
        panel = Image.fromarray(((1 - alpha) * gray + alpha * heat).round().astype(np.uint8))
        ImageDraw.Draw(panel).text((2, 1), labels[k] if labels else f"map {k}", fill=(255, 255, 255))
        panels.append(panel)
    rows = -(-len(panels) // columns)
    sheet = Image.new("RGB", (columns * W + (columns - 1) * GAP, rows * H + (rows - 1) * GAP), (48, 48, 48))
    for i, panel in enumerate(panels):
        sheet.paste(panel, ((i % columns) * (W + GAP), (i // columns) * (H + GAP)))
    return sheet
